#include "transport/tcp/tcp_transport.h"

namespace weft::transport::tcp {

Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config) {
  return UnimplementedError("tcp transport is being written");
}

}  // namespace weft::transport::tcp
