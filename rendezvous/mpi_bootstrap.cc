#include "rendezvous/mpi_bootstrap.h"

#include <mpi.h>

#include <cstdlib>
#include <mutex>

#include "base/logging.h"

namespace weft::rendezvous::mpi {
namespace {

std::mutex g_mu;
bool g_weft_initialised = false;
int g_provided = MPI_THREAD_SINGLE;

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}

// Runs at exit when weft started MPI. Communicators (and their mpi transports) are gone by then
// in a well-behaved program; MPI_Finalize waits for the other ranks of the job, which are
// finishing too.
void FinalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

Result<int> EnsureInitialized() {
  std::lock_guard<std::mutex> lock(g_mu);
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  if (finalized) return FailedPreconditionError("MPI has already been finalised in this process");
  if (initialised) {
    MPI_Query_thread(&g_provided);
    return g_provided;
  }
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return InternalError("MPI_Init_thread failed: " + MpiErrorText(rc));
  g_weft_initialised = true;
  g_provided = provided;
  // Errors come back as codes on MPI_COMM_WORLD instead of aborting the job, so they become
  // Status values here.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit(FinalizeAtExit);
  WEFT_LOG(DEBUG) << "MPI initialised by weft (thread level " << provided << ")";
  return provided;
}

bool IsInitialized() {
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  return initialised && !finalized;
}

int WorldRank() {
  int r = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int WorldSize() {
  int n = -1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

Status Broadcast(std::string* data, int root) {
  unsigned long long len = data->size();
  int rc = MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, root, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return InternalError("MPI_Bcast of the length: " + MpiErrorText(rc));
  if (len > (1u << 20))
    return InternalError("MPI_Bcast: implausible length " + std::to_string(len));
  data->resize(len);
  if (len == 0) return Status::Ok();
  rc = MPI_Bcast(data->data(), static_cast<int>(len), MPI_CHAR, root, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return InternalError("MPI_Bcast: " + MpiErrorText(rc));
  return Status::Ok();
}

}  // namespace weft::rendezvous::mpi
