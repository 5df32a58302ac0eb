// Bootstrap from the environment: which rank this process is, how many there are, and where the
// rendezvous store is, from whichever launcher started it: `weft run` (WEFT_*), torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), Open MPI (OMPI_COMM_WORLD_*), Slurm
// (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "rendezvous/store.h"
#include "rendezvous/tcp_store.h"

namespace weft::rendezvous {

struct BootstrapInfo {
  int rank = -1;
  int world_size = -1;
  int local_rank = -1;  // as the launcher said; -1 if it did not
  std::string store_url;  // tcp://host:port or file:///dir
  // True when this rank must serve the TCP store itself (rank 0 under MASTER_ADDR/MASTER_PORT,
  // as PyTorch does).
  bool serve_store = false;
  // True under Open MPI's mpirun with no store in the environment (and weft built with
  // WEFT_WITH_MPI): OpenBootstrapStore initialises MPI, rank 0 serves the TCP store and
  // broadcasts its address and a fresh secret with MPI_Bcast; store_url is empty until then.
  bool mpi_exchange = false;
  std::string secret;  // WEFT_JOB_SECRET, may be empty
  std::string job_id;  // WEFT_JOB_ID, may be empty
  std::string source;  // which launcher's variables were used, for messages
};

// Reads the variables through `getenv` (a parameter so tests can feed their own). Errors name
// the missing or malformed variable.
Result<BootstrapInfo> BootstrapFromEnv(const std::function<const char*(const char*)>& getenv);
Result<BootstrapInfo> BootstrapFromEnv();

// The store a bootstrapped rank uses, with the server it runs when it serves one. Destroying it
// stops the server; keep it alive as long as ranks may still talk to the store. With
// info.mpi_exchange this is collective over MPI_COMM_WORLD: rank 0 serves the store on every
// interface and broadcasts all its candidate addresses (IPv4 of up interfaces, narrowed by
// WEFT_SOCKET_IFNAME, in the order of its prefixes, loopback last), and each rank keeps the first
// candidate that connects.
struct BootstrapStore {
  std::unique_ptr<TcpStoreServer> server;
  std::unique_ptr<Store> store;
};
Result<std::unique_ptr<BootstrapStore>> OpenBootstrapStore(const BootstrapInfo& info,
                                                           Deadline deadline);

}  // namespace weft::rendezvous
