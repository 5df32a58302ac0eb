// The registry: the one place that knows every built transport. Adding a transport adds a line
// here (behind its WEFT_WITH_<X> option) and nothing in collectives/ or runtime/.
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/transport.h"

namespace weft::transport {

std::vector<std::string> AvailableTransports() { return {"shm", "tcp"}; }

Result<std::unique_ptr<Transport>> CreateTransport(std::string_view name,
                                                   const TransportConfig& config) {
  if (name == "shm") return shm::CreateShmTransport(config);
  if (name == "tcp") return tcp::CreateTcpTransport(config);
  std::string known;
  for (const auto& t : AvailableTransports()) known += (known.empty() ? "" : ", ") + t;
  return NotFoundError("unknown transport '" + std::string(name) + "' (built: " + known + ")");
}

}  // namespace weft::transport
