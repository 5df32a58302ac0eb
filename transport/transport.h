// The pluggable transport interface (CONVENTIONS.md, "A pluggable transport"): a Transport is a
// per-process factory for one kind of link (shm, tcp, later ucx, mpi, cuda); it listens, publishes
// an address through the rendezvous store, and connects one Endpoint per peer. Endpoints post
// tagged sends and receives that never block and return Requests with Test() and Wait(deadline).
// Collectives sit above this and know nothing of any concrete transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/deadline.h"
#include "base/dtype.h"
#include "base/status.h"

namespace weft::transport {

// What a peer published about itself (filled by the communicator from the store).
struct PeerInfo {
  int rank = -1;
  // Host identity: equal strings mean the same host (shared memory can reach).
  std::string host_id;
  int pid = 0;
  // This transport's address for the peer, as returned by the peer's Listen().
  std::string address;
};

enum class ProgressModel {
  kCallerDriven,      // Test()/Wait() make progress; nothing happens between calls
  kBackgroundThread,  // a transport thread moves data; Test()/Wait() only observe
};

struct Capabilities {
  bool host_memory = true;
  bool device_memory = false;
  bool rdma = false;
  ProgressModel progress = ProgressModel::kCallerDriven;
};

// Settings a transport is created with. Tuning fields are 0 for "the transport's default / its
// env knob"; tests set them small to exercise fragmentation and striping paths.
struct TransportConfig {
  int rank = 0;
  int world_size = 1;
  std::string host_id;
  // Per-job secret: connections that do not prove knowledge of it are refused.
  std::string secret;
  // Unique per job and communicator bootstrap, safe in file names (shm segment names use it).
  std::string job_id;
  size_t shm_ring_bytes = 0;
  size_t shm_eager_bytes = 0;
  int tcp_sockets_per_peer = 0;
  size_t tcp_chunk_bytes = 0;
  // Address to listen on for network transports; empty picks the default interface.
  std::string listen_host;
};

// One posted send or receive. Owned jointly by the caller and the transport (shared_ptr) until it
// completes. Thread-safe: Test/Wait may be called from any thread.
class Request {
 public:
  virtual ~Request() = default;
  // True once complete (successfully or not); makes progress under kCallerDriven.
  virtual bool Test() = 0;
  // True once complete, as Test(), but only looks: drives no progress, so it costs next to
  // nothing (for a caller about to Wait() anyway, which would poll itself).
  virtual bool Done() const = 0;
  // Waits until complete or the deadline. Returns the request's status when complete,
  // DeadlineExceeded while it is still pending (it stays posted and may be waited on again).
  // Completion errors name the peer and transport: "rank 3 (shm) exited", "message of 12 bytes
  // from rank 1 does not fit the 8-byte receive (tag 0x...)".
  virtual Status Wait(Deadline deadline) = 0;
  // The final status; meaningful only once Test() returned true.
  virtual Status status() const = 0;
};
using RequestPtr = std::shared_ptr<Request>;

// A connection to one peer. Owned by the communicator; its Transport must outlive it.
// Matching: a receive matches the earliest-arriving unmatched message from this peer with the same
// tag (FIFO per tag); message and receive sizes must be equal, otherwise the receive fails with
// InvalidArgument and the message is dropped. Sends and receives of any size, zero included.
// Buffers must stay valid and untouched until the request completes. Thread-safe.
class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual int peer() const = 0;
  virtual Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag) = 0;
  virtual Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag) = 0;
  // A receive reduced as it lands: once it completes, acc[i] = in[i] op message[i] for the
  // size / DTypeSize(dtype) elements, as ReduceInto(dtype, op, acc, in, message, ...) computes
  // them (same bits); the message itself is kept nowhere. acc may alias in exactly; both stay
  // valid and untouched by the caller until completion; acc is undefined after a failure.
  // Matching and errors as PostRecv; size must be a multiple of the element size. Only where
  // CanRecvReduce(): the transport reduces from a small buffer the socket fills (in cache)
  // instead of the caller receiving a whole piece into memory and reading it back to reduce it.
  virtual bool CanRecvReduce() const { return false; }
  virtual Result<RequestPtr> PostRecvReduce(void* acc, const void* in, size_t size, uint64_t tag,
                                            DType dtype, ReduceOp op);
  // A send and a receive of `size` bytes each, both under `tag`, with this peer: the step of
  // recursive doubling. Returns the requests still pending, null where one is already done. The
  // default posts the receive, then the send. A transport with a cheaper path for a small
  // message overrides it (ucx: no request objects, and the receive is awaited inside the call
  // for a short spin before a request stands in for it).
  struct Exchanged {
    RequestPtr send;
    RequestPtr recv;
  };
  virtual Result<Exchanged> Exchange(const void* send, void* recv, size_t size, uint64_t tag);
  // Fails every pending request of this endpoint with `why` and refuses new ones. Idempotent.
  virtual void Abort(const Status& why) = 0;
};

// A registered memory region (RDMA transports pin and key memory; others keep nothing). RAII:
// deregisters on destruction; the Transport must outlive it.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual void* data() const = 0;
  virtual size_t size() const = 0;
};

// One kind of link for this process. Created per communicator bootstrap; outlives its endpoints.
// Thread-safe.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  virtual Capabilities capabilities() const = 0;
  // Starts listening; returns the address to publish for peers ("" if none is needed).
  virtual Result<std::string> Listen() = 0;
  // Whether this transport can link `self` to `peer` (e.g. shm: same host_id).
  virtual bool CanConnect(const PeerInfo& self, const PeerInfo& peer) const = 0;
  // Connects to every listed peer (both sides of a pair call this with each other listed; the
  // transport decides who dials). Returns endpoints in the order of `peers`. Bounded by deadline;
  // the error names the peers that did not connect.
  virtual Result<std::vector<std::unique_ptr<Endpoint>>> Connect(const std::vector<PeerInfo>& peers,
                                                                 Deadline deadline) = 0;
  // Registers memory for zero-copy transfers; the default keeps nothing.
  virtual Result<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t size);
  // Fails all pending requests on all endpoints and wakes every waiter. Idempotent. A
  // CANCELLED `why` is the owner tearing down in order (not a failure); transports that can tell
  // their peers so (ucx) do, so the connection closing is not reported there as a failure.
  virtual void Abort(const Status& why) = 0;
};

// The transports built into this binary, in preference order ("shm", "tcp", ...).
std::vector<std::string> AvailableTransports();
// Creates a transport by name; NotFound listing the available ones for an unknown name.
Result<std::unique_ptr<Transport>> CreateTransport(std::string_view name,
                                                   const TransportConfig& config);

// Whether `local_ranks` ranks on this host (this one included) each have a core: the machine's
// cores, not this thread's affinity (a launcher binding each rank to a core of its own is the case
// where spinning is right). Waiters may then spin without yielding; otherwise they must yield.
bool RanksFitCores(int local_ranks);
// Where they do not, how long a waiter keeps polling (yielding between polls) before it sleeps:
// the rank it waits for is often queued behind it on the same core, and waking a sleeper costs
// two thread wake-ups of tens of microseconds each.
inline constexpr int64_t kOversubscribedSpinUs = 2000;

// The error of a Connect() some peers did not complete: "<who>: Connect() failed; ranks 2, 3 did
// not connect (rank 2: ...; rank 3: ...)", with the first code other than DeadlineExceeded among
// `failures` (rank -> why), else DeadlineExceeded. `failures` must not be empty.
Status ConnectFailure(const std::string& who, const std::map<int, Status>& failures);

}  // namespace weft::transport
