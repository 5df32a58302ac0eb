// MPI transport: weft's Transport/Endpoint interface over MPI point-to-point, for clusters where
// MPI is the only way onto the fabric. Usable only in a process where MPI is initialised (weft's
// MPI bootstrap under mpirun does it, or the program did). Wire format and progress are
// described in mpi_transport.cc. Built with WEFT_WITH_MPI.
#pragma once

#include <memory>

#include "transport/transport.h"

namespace weft::transport::mpi {

// True when MPI is initialised and not finalised in this process with at least
// MPI_THREAD_SERIALIZED: the registry lists "mpi" only then. Thread-safe.
bool MpiTransportUsable();

// Contract (beyond transport.h):
//   - Creation fails with FailedPrecondition unless MpiTransportUsable().
//   - Listen() is collective over MPI_COMM_WORLD (it duplicates it: the transport's messages never
//     mix with the program's or another transport's) when config.world_size equals the size of
//     MPI_COMM_WORLD, which is what CommShared does on every rank for every listed transport. It
//     publishes "<MPI world rank>@<MPI job>", so weft ranks map to MPI ranks whatever their order
//     (under weft's MPI bootstrap they are equal). With another world size, Listen() returns ""
//     without any MPI call and CanConnect() is false (the ranks are not this MPI job's world).
//   - CanConnect(): the peer published an address of the same MPI job.
//   - Connect() exchanges a hello with each peer (bounded by the deadline; the error names the
//     ranks that did not answer) and starts the progress thread.
//   - Messages: a 64-bit tag and exact sizes as transport.h says; MPI tags are only ints (the
//     MPI_TAG_UB may be as small as 32767), so each message starts with a header message on one
//     control MPI tag carrying the weft tag and size (small payloads inline), and larger payloads
//     follow on a data MPI tag the header names, received straight into the user's buffer.
//   - Threads: with MPI_THREAD_MULTIPLE, a thread that tests or waits may drive progress itself;
//     otherwise the data path is funnelled through the transport's one progress thread and the
//     remaining calls (Listen, Connect, Abort, destruction) are serialised with it by a
//     process-wide lock (MPI_THREAD_SERIALIZED is enough; FUNNELED or SINGLE make it unusable).
//     Posting, testing and waiting are thread-safe; requests complete on the progress thread.
//   - Abort() fails pending requests with its status and cancels receives MPI still holds; a send
//     MPI has already matched cannot be withdrawn (MPI has no such call), so its buffer may still
//     be read until the peer takes it. Errors name the peer rank and "mpi".
//   - Endpoints must be destroyed before the transport; the transport must be destroyed before
//     MPI_Finalize (weft's bootstrap finalises at exit).
Result<std::unique_ptr<Transport>> CreateMpiTransport(const TransportConfig& config);

}  // namespace weft::transport::mpi
