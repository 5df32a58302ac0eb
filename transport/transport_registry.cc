// The registry: the one place that knows every built transport. Adding a transport adds a line
// here (behind its WEFT_WITH_<X> option) and nothing in collectives/ or runtime/.
#include <dirent.h>

#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/transport.h"
#ifdef WEFT_WITH_UCX
#include "transport/ucx/ucx_transport.h"
#endif
#ifdef WEFT_WITH_MPI
#include "transport/mpi/mpi_transport.h"
#endif

namespace weft::transport {

#ifdef WEFT_WITH_UCX
namespace {

// An RDMA device (InfiniBand, RoCE, iWARP) the kernel knows of: only then does UCX have a faster
// way across hosts than our own TCP transport.
bool HaveRdmaDevice() {
  static const bool have = [] {
    DIR* d = opendir("/sys/class/infiniband");
    if (d == nullptr) return false;
    bool any = false;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') any = true;
    }
    closedir(d);
    return any;
  }();
  return have;
}

}  // namespace
#endif  // WEFT_WITH_UCX

// Preference order: shared memory reaches same-host peers only and is the fastest there. For
// peers on other hosts UCX comes before TCP when an RDMA device is present (InfiniBand/RoCE through
// UCX); without one, UCX would only run TCP itself, so our TCP transport comes first and UCX is
// there for jobs that ask for it (WEFT_TRANSPORT=ucx).
std::vector<std::string> AvailableTransports() {
  std::vector<std::string> built = {"shm", "tcp"};
#ifdef WEFT_WITH_UCX
  built.insert(HaveRdmaDevice() ? built.begin() + 1 : built.end(), "ucx");
#endif
#ifdef WEFT_WITH_MPI
  // Listed only where it can run (MPI initialised: under mpirun with weft's MPI bootstrap, or by
  // the program), and last: TCP reaches every peer, so the default order never picks MPI; a job
  // whose fabric only MPI reaches selects it by name (WEFT_TRANSPORT=mpi or shm,mpi).
  if (mpi::MpiTransportUsable()) built.push_back("mpi");
#endif
  return built;
}

Result<std::unique_ptr<Transport>> CreateTransport(std::string_view name,
                                                   const TransportConfig& config) {
  if (name == "shm") return shm::CreateShmTransport(config);
  if (name == "tcp") return tcp::CreateTcpTransport(config);
#ifdef WEFT_WITH_UCX
  if (name == "ucx") return ucx::CreateUcxTransport(config);
#endif
#ifdef WEFT_WITH_MPI
  if (name == "mpi") return mpi::CreateMpiTransport(config);
#endif
  std::string known;
  for (const auto& t : AvailableTransports()) known += (known.empty() ? "" : ", ") + t;
  return NotFoundError("unknown transport '" + std::string(name) + "' (built: " + known + ")");
}

}  // namespace weft::transport
