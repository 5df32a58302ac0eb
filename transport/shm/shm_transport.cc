#include "transport/shm/shm_transport.h"

namespace weft::transport::shm {

Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config) {
  return UnimplementedError("shm transport is being written");
}

}  // namespace weft::transport::shm
