// MPI as a bootstrap channel: for jobs started by Open MPI's mpirun with no separate store
// (neither WEFT_STORE nor MASTER_ADDR/MASTER_PORT), weft initialises MPI, rank 0 serves the TCP
// store and broadcasts its address and a fresh secret with MPI_Bcast (rendezvous/bootstrap.cc).
// This file holds only the MPI part (lifetime and the broadcast); it is built with WEFT_WITH_MPI.
#pragma once

#include <string>

#include "base/deadline.h"
#include "base/status.h"

namespace weft::rendezvous::mpi {

// Initialises MPI (MPI_Init_thread asking for MPI_THREAD_MULTIPLE) unless the program already
// did. When weft initialised it, MPI_Finalize runs at exit (atexit, on the thread that calls
// exit(), normally main): every communicator using the mpi transport must be destroyed before
// then. Idempotent and thread-safe. Returns the thread level MPI provided. Errors: Internal when
// MPI fails to start, FailedPrecondition after MPI_Finalize.
Result<int> EnsureInitialized();

// Whether this process has MPI initialised (by weft or by the program) and not yet finalised.
bool IsInitialized();

// MPI_COMM_WORLD rank and size (after EnsureInitialized).
int WorldRank();
int WorldSize();

// Broadcasts `*data` from MPI_COMM_WORLD rank `root` to every rank (collective over
// MPI_COMM_WORLD; the size travels first). MPI offers no deadline for a collective; a rank that
// never arrives is an MPI job failure that mpirun ends. Errors: Internal naming the MPI error.
Status Broadcast(std::string* data, int root);

}  // namespace weft::rendezvous::mpi
