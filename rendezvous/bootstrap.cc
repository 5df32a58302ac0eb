#include "rendezvous/bootstrap.h"

#include <cstdlib>

#include "base/env.h"

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
    return InvalidArgumentError(std::string(name) + "='" + v + "' is not a valid non-negative integer");
  }
  *out = static_cast<int>(x);
  return Status::Ok();
}

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
  } else {
    return InvalidArgumentError("no rendezvous store in the environment: set WEFT_STORE "
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
