// Shared-memory transport for peers on the same host: each rank owns a POSIX shm segment with one
// inbound lock-free ring per peer; small messages are copied through the rings, large ones are
// pulled single-copy from the sender's memory with process_vm_readv (CMA) when the kernel allows.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "transport/transport.h"

namespace weft::transport::shm {

// Settings beyond TransportConfig, mainly for tests.
struct ShmOptions {
  // Whether large messages may go single-copy with process_vm_readv; unset reads WEFT_SHM_CMA.
  // Either side can veto: a pair uses CMA only if the receiver can read the sender (probed in
  // Connect) and both allow it; otherwise large messages stream through the ring in fragments.
  std::optional<bool> cma;
};

// Creates the shm transport. Contract of the returned Transport (beyond transport.h):
// - Listen() creates the segment "/weft-<job_id>-<rank>" and returns that name as the address.
//   Connect() must be called exactly once, after every listed peer's Listen() or concurrently
//   with it; it maps each peer's segment (retrying until the deadline) and waits until every
//   listed peer has mapped this one, then unlinks the name (the destructor unlinks it anyway).
// - Progress is caller-driven: Request::Test()/Wait() and the Post calls move traffic for all
//   endpoints of the transport, so a thread waiting on its receive also drains its own sends.
//   Thread-safe; requests may outlive the transport (they then hold their final status).
// - In-ring sends complete once the last byte is in the receiver's ring. Single-copy sends
//   complete when the receiver has copied them; if the receive's size does not match, the
//   receive fails and so does the send (InvalidArgument, both naming the ranks and sizes).
// - A peer process that exits fails that endpoint's pending and later requests with
//   Unavailable("shm: rank R (pid P) exited"); messages it completed before exiting are still
//   delivered. Abort() fails everything with the given status and refuses new requests.
// InvalidArgument for a bad config (rank, world_size, job_id not usable in a segment name).
Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config);
Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config,
                                                      const ShmOptions& options);

// Counters for tests and benchmarks (which path carried how much).
struct ShmStats {
  uint64_t ring_payload_bytes = 0;  // payload bytes this rank wrote into peers' rings
  uint64_t cma_bytes = 0;           // bytes this rank pulled from peers with process_vm_readv
  int cma_peers = 0;                // connected peers this rank sends to single-copy
};
// The counters of a transport made by CreateShmTransport; InvalidArgument for any other.
Result<ShmStats> GetShmStats(const Transport& transport);

}  // namespace weft::transport::shm
