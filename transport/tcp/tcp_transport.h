// TCP transport: reaches any peer over non-blocking sockets.
#pragma once

#include <memory>

#include "transport/transport.h"

namespace weft::transport::tcp {

Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config);

}  // namespace weft::transport::tcp
