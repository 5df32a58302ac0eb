// Shared-memory transport for peers on the same host.
#pragma once

#include <memory>

#include "transport/transport.h"

namespace weft::transport::shm {

Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config);

}  // namespace weft::transport::shm
