#include "rendezvous/bootstrap.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include "base/env.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "base/socket_util.h"
#ifdef WEFT_WITH_MPI
#include "rendezvous/mpi_bootstrap.h"
#endif

namespace weft::rendezvous {
namespace {

WEFT_ENV_KNOB(kRankKnob, "WEFT_RANK", "", "this process's rank (set by weft run)");
WEFT_ENV_KNOB(kWorldKnob, "WEFT_WORLD_SIZE", "", "number of ranks (set by weft run)");
WEFT_ENV_KNOB(kLocalRankKnob, "WEFT_LOCAL_RANK", "", "rank among this host's ranks");
WEFT_ENV_KNOB(kStoreKnob, "WEFT_STORE", "",
              "rendezvous store URL: tcp://host:port or file:///dir (set by weft run)");

Status ReadInt(const std::function<const char*(const char*)>& getenv, const char* name, int* out,
               bool* found) {
  const char* v = getenv(name);
  *found = v != nullptr && *v != '\0';
  if (!*found) return Status::Ok();
  int64_t x;
  if (!ParseInt(v, &x) || x < 0 || x > (1 << 24)) {
    return InvalidArgumentError(std::string(name) + "='" + v +
                                "' is not a valid non-negative integer");
  }
  *out = static_cast<int>(x);
  return Status::Ok();
}

#ifdef WEFT_WITH_MPI
// The MPI exchange: rank 0 serves the store on every interface and broadcasts
// "weft-mpi/1\n<secret>\n<port>\n<addr>,<addr>..."; every rank then dials the candidates in order
// (a short deadline each, rounds until `deadline`) and keeps the first that authenticates.
Result<std::unique_ptr<BootstrapStore>> OpenMpiBootstrapStore(const BootstrapInfo& info,
                                                              Deadline deadline) {
  auto level = mpi::EnsureInitialized();
  if (!level.ok()) return level.status().WithContext("MPI bootstrap");
  if (mpi::WorldRank() != info.rank || mpi::WorldSize() != info.world_size) {
    return FailedPreconditionError(
        "MPI bootstrap: MPI_COMM_WORLD says rank " + std::to_string(mpi::WorldRank()) + " of " +
        std::to_string(mpi::WorldSize()) + " but the environment says rank " +
        std::to_string(info.rank) + " of " + std::to_string(info.world_size));
  }
  auto out = std::make_unique<BootstrapStore>();
  std::string message;
  Status prepared = Status::Ok();
  if (info.rank == 0) {
    // Rank 0 broadcasts even when it failed (its error), so that nobody waits for it.
    auto secret = NewSecretHex();
    // WEFT_SOCKET_IFNAME (base/socket_util.h) orders and narrows them, as for the TCP transport.
    auto candidates = CandidateAddresses(SocketIfnameSpec());
    if (!secret.ok()) {
      prepared = secret.status();
    } else if (!candidates.ok()) {
      prepared = candidates.status();
    } else {
      auto server = TcpStoreServer::Start("", 0, *secret);
      if (!server.ok()) {
        prepared = server.status().WithContext("rank 0 serving the store");
      } else {
        message = "weft-mpi/1\n" + *secret + "\n" + std::to_string((*server)->port()) + "\n";
        for (size_t i = 0; i < candidates->size(); ++i) {
          message += (i ? "," : "") + (*candidates)[i].address;
        }
        out->server = std::move(*server);
      }
    }
  }
  if (!prepared.ok()) message = "weft-mpi-error/1\n" + prepared.ToString();
  WEFT_RETURN_IF_ERROR(mpi::Broadcast(&message, 0).WithContext("MPI bootstrap"));
  if (!prepared.ok()) return prepared.WithContext("MPI bootstrap");
  if (message.rfind("weft-mpi-error/1\n", 0) == 0) {
    return FailedPreconditionError("MPI bootstrap: rank 0 could not serve the store: " +
                                   message.substr(message.find('\n') + 1));
  }
  std::vector<std::string> lines;
  {
    std::stringstream in(message);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  int64_t port = 0;
  if (lines.size() != 4 || lines[0] != "weft-mpi/1" || !ParseInt(lines[2], &port)) {
    return InternalError("MPI bootstrap: malformed message from rank 0");
  }
  const std::string& secret = lines[1];
  std::vector<std::string> candidates;
  {
    std::stringstream in(lines[3]);
    std::string a;
    while (std::getline(in, a, ',')) candidates.push_back(a);
  }
  Status last = UnavailableError("no candidate address");
  while (true) {
    for (const auto& addr : candidates) {
      Deadline attempt = Deadline::AfterMs(2000).Min(deadline);
      auto client =
          TcpStoreClient::Connect(HostPort{addr, static_cast<int>(port)}, secret, attempt);
      if (client.ok()) {
        WEFT_LOG(INFO) << "MPI bootstrap: store at " << addr << ":" << port << " (rank 0)";
        out->store = std::move(*client);
        return out;
      }
      last = client.status();
      WEFT_LOG(INFO) << "MPI bootstrap: store candidate " << addr << ":" << port
                     << " failed: " << last.ToString();
      if (deadline.Expired()) break;
    }
    if (deadline.Expired()) break;
  }
  return Status(last.code(), "MPI bootstrap: rank " + std::to_string(info.rank) +
                                 " reached none of rank 0's store addresses (" + lines[3] + ":" +
                                 lines[2] +
                                 "; WEFT_SOCKET_IFNAME narrows them): " + last.message());
}
#endif

}  // namespace

Result<BootstrapInfo> BootstrapFromEnv(const std::function<const char*(const char*)>& getenv) {
  (void)kRankKnob;
  (void)kWorldKnob;
  (void)kLocalRankKnob;
  (void)kStoreKnob;
  BootstrapInfo info;
  // Rank and size: the first launcher whose pair of variables is present wins.
  static constexpr const char* kPairs[][4] = {
      {"WEFT_RANK", "WEFT_WORLD_SIZE", "WEFT_LOCAL_RANK", "weft run"},
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI"},
      {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIx"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm"},
      {"RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun"},
      {"JOB_COMPLETION_INDEX", "WORLD_SIZE", "LOCAL_RANK", "Kubernetes Indexed Job"},
  };
  for (const auto& p : kPairs) {
    bool has_rank = false, has_size = false, has_local = false;
    int rank = -1, size = -1, local = -1;
    WEFT_RETURN_IF_ERROR(ReadInt(getenv, p[0], &rank, &has_rank));
    if (!has_rank) continue;
    WEFT_RETURN_IF_ERROR(ReadInt(getenv, p[1], &size, &has_size));
    if (!has_size) {
      return InvalidArgumentError(std::string(p[0]) + " is set (" + p[3] + ") but " + p[1] +
                                  " is not: cannot tell the world size");
    }
    WEFT_RETURN_IF_ERROR(ReadInt(getenv, p[2], &local, &has_local));
    info.rank = rank;
    info.world_size = size;
    info.local_rank = has_local ? local : -1;
    info.source = p[3];
    break;
  }
  if (info.rank < 0) {
    return InvalidArgumentError(
        "no rank in the environment: run under `weft run`, torchrun, mpirun, srun or a Kubernetes "
        "Indexed Job, or set WEFT_RANK and WEFT_WORLD_SIZE");
  }
  if (info.world_size < 1 || info.rank >= info.world_size) {
    return InvalidArgumentError("rank " + std::to_string(info.rank) + " is outside world size " +
                                std::to_string(info.world_size) + " (from " + info.source + ")");
  }
  const char* store = getenv("WEFT_STORE");
  const char* addr = getenv("MASTER_ADDR");
  const char* port = getenv("MASTER_PORT");
  if (store != nullptr && *store != '\0') {
    info.store_url = store;
  } else if (addr != nullptr && *addr != '\0' && port != nullptr && *port != '\0') {
    int64_t p;
    if (!ParseInt(port, &p) || p <= 0 || p > 65535) {
      return InvalidArgumentError(std::string("MASTER_PORT='") + port + "' is not a port number");
    }
    info.store_url = "tcp://" + std::string(addr) + ":" + port;
    info.serve_store = info.rank == 0;
  } else if (info.source == "Open MPI" || info.source == "PMIx") {
#ifdef WEFT_WITH_MPI
    info.mpi_exchange = true;
#else
    return InvalidArgumentError(
        "no rendezvous store in the environment, and this weft was built "
        "without MPI (WEFT_WITH_MPI) to exchange one under mpirun: set "
        "WEFT_STORE (tcp://host:port or file:///dir) or MASTER_ADDR and "
        "MASTER_PORT");
#endif
  } else {
    return InvalidArgumentError(
        "no rendezvous store in the environment: set WEFT_STORE "
        "(tcp://host:port or file:///dir) or MASTER_ADDR and MASTER_PORT");
  }
  if (const char* s = getenv("WEFT_JOB_SECRET")) info.secret = s;
  if (const char* j = getenv("WEFT_JOB_ID")) info.job_id = j;
  return info;
}

Result<BootstrapInfo> BootstrapFromEnv() {
  return BootstrapFromEnv([](const char* n) -> const char* { return std::getenv(n); });
}

Result<std::unique_ptr<BootstrapStore>> OpenBootstrapStore(const BootstrapInfo& info,
                                                           Deadline deadline) {
#ifdef WEFT_WITH_MPI
  if (info.mpi_exchange) return OpenMpiBootstrapStore(info, deadline);
#endif
  auto out = std::make_unique<BootstrapStore>();
  if (info.serve_store) {
    WEFT_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(info.store_url.substr(6)));
    // Listen on every interface: MASTER_ADDR names this host as the others see it.
    auto server = TcpStoreServer::Start("", hp.port, info.secret);
    if (!server.ok()) {
      return server.status().WithContext("rank 0 serving the store on port " +
                                         std::to_string(hp.port) + " (MASTER_PORT)");
    }
    out->server = std::move(*server);
  }
  WEFT_ASSIGN_OR_RETURN(out->store, OpenStore(info.store_url, info.secret, deadline));
  return out;
}

}  // namespace weft::rendezvous
