// The communicator: a group of ranks with one endpoint per peer, created from a rendezvous store
// (or an NCCL-style unique id), and every collective weft offers. Collectives are asynchronous:
// each returns a Work handle; all ranks must issue the same collectives in the same order.
// This is the public API (re-exported by <weft/weft.h>); it sits above transport/ and rendezvous/.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/deadline.h"
#include "base/dtype.h"
#include "base/status.h"
#include "collectives/link_model.h"
#include "rendezvous/store.h"

namespace weft::collectives {

namespace internal {
class WorkState;
class CommImpl;
}  // namespace internal
namespace metrics {
enum class Algo : uint8_t;
}  // namespace metrics
struct TunerInput;

// A handle to one asynchronous operation. Cheap to copy (shared state). Thread-safe.
// The buffers passed to the operation must stay valid and untouched until Wait() returns OK or
// Test() returns true.
class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<internal::WorkState> state) : state_(std::move(state)) {}
  // True once the operation finished (successfully or not). Never blocks; may run the operation
  // on the calling thread if it is next in line.
  bool Test() const;
  // Waits until done or the deadline; DeadlineExceeded leaves the operation running. The
  // operation's own timeout (the communicator's) still applies: a stuck peer fails it with an
  // error naming the peer.
  Status Wait(Deadline deadline) const;
  // Waits with no deadline of its own; the communicator's operation timeout bounds it.
  Status Wait() const;
  // The final status (OK until done).
  Status status() const;

 private:
  std::shared_ptr<internal::WorkState> state_;
};

struct CommOptions {
  // Transports in preference order; empty takes WEFT_TRANSPORT (comma list) or the built-in order.
  std::vector<std::string> transports;
  // Per-operation timeout; 0 takes WEFT_TIMEOUT_MS.
  int64_t timeout_ms = 0;
  // Deadline for creating the communicator (store and connections); 0 takes WEFT_INIT_TIMEOUT_MS.
  int64_t init_timeout_ms = 0;
  // Pipeline chunk for ring/tree algorithms; 0 takes WEFT_CHUNK_BYTES.
  size_t chunk_bytes = 0;
  // Force an all-reduce algorithm ("ring", "recursive_doubling", "rabenseifner", ...); empty takes
  // WEFT_ALGO.
  std::string algorithm;
  // Job secret and id; empty takes WEFT_JOB_SECRET / WEFT_JOB_ID, else rank 0 makes them and
  // shares them through the store.
  std::string secret;
  std::string job_id;
  // Host identity override (tests); empty uses HostIdentity().
  std::string host_id;
  // Transport tuning overrides, 0 = transport default (tests make them small).
  size_t shm_ring_bytes = 0;
  size_t shm_eager_bytes = 0;
  int tcp_sockets_per_peer = 0;
  size_t tcp_chunk_bytes = 0;
  std::string listen_host;
  // Slot size of the intra-host shared-memory arena; 0 takes WEFT_SHM_COLL_CHUNK_BYTES (auto:
  // by the number of ranks on the host).
  size_t shm_coll_chunk_bytes = 0;
  // Whether ranks sharing a host use the arena: 1 yes, 0 no, -1 takes WEFT_SHM_COLL.
  int shm_coll = -1;
  // Arena all-gathers with blocks at least this large go single-copy; 0 takes
  // WEFT_SHM_COLL_SINGLE_COPY_MIN_BYTES.
  size_t shm_single_copy_min_bytes = 0;
  // Arena all-reduces and all-gathers whose output is at least this large write it with
  // streaming stores; 0 takes WEFT_SHM_COLL_STREAMING_MIN_BYTES.
  size_t shm_streaming_min_bytes = 0;
  // Segment of the pipelined hierarchical all-reduce; 0 takes WEFT_HIER_SEGMENT_BYTES, negative
  // turns the pipeline off.
  int64_t hier_segment_bytes = 0;
  // Whether ring algorithms reduce incoming pieces as they land where the transport can (tcp):
  // 1 yes, 0 no (receive each piece whole, then reduce it), -1 takes WEFT_RECV_REDUCE.
  int recv_reduce = -1;
};

// NCCL-style unique id: made by one rank (GetUniqueId starts a store server in that process) and
// handed to the others out of band.
struct UniqueId {
  char bytes[256] = {0};
};

// Thread-safe: collectives may be issued from any thread, but all ranks must issue them in the
// same order, so a program usually issues from one thread. Owns its worker thread; split children
// share the parent's connections (the parent may be destroyed first).
//
// Errors: InvalidArgument for bad arguments (named, with the rank); a failed operation makes the
// communicator fail: that operation and every later one return the error, which names the
// operation, its sequence number and the peer at fault (DeadlineExceeded, Unavailable, Aborted).
class Communicator {
 public:
  // Creates the communicator from a store shared by all `world_size` ranks (collective call).
  static Result<std::unique_ptr<Communicator>> Create(rendezvous::Store& store, int rank,
                                                      int world_size, CommOptions options = {});
  // From the environment of `weft run`, torchrun, Open MPI, Slurm or a Kubernetes Indexed Job
  // (see runtime/bootstrap.h for the variables).
  static Result<std::unique_ptr<Communicator>> FromEnvironment(CommOptions options = {});
  static Result<UniqueId> GetUniqueId();
  static Result<std::unique_ptr<Communicator>> FromUniqueId(const UniqueId& id, int rank,
                                                            int world_size, CommOptions options = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int world_size() const;
  // Ranks of this communicator on this rank's host, and this rank's index among them.
  int local_rank() const;
  int local_size() const;
  // The rank of the root (world) communicator behind `rank` of this one.
  int world_rank_of(int rank) const;
  // Transport used to reach `peer` ("shm", "tcp"; "self" for this rank).
  std::string transport_of(int peer) const;
  // Host identity of `rank` as it published it (base/host_identity.h: equal strings mean one
  // host, i.e. shared memory reaches; WEFT_HOST_ID overrides). "" for a rank outside the group.
  std::string host_of(int rank) const;
  // The all-reduce algorithm the tuner picks for this size ("ring", "rabenseifner", ...).
  std::string AllReduceAlgorithmFor(int64_t count, DType dtype) const;
  // The all-gather algorithm for blocks of `sendcount` elements ("hierarchical" across hosts,
  // "shm" through a local arena, "recursive_doubling" on a power-of-two number of ranks above 2
  // up to WEFT_ALLGATHER_RD_MAX_BYTES gathered, else "ring"). WEFT_ALGO set to a flat all-reduce
  // algorithm keeps it flat; WEFT_ALGO=ring keeps it the ring.
  std::string AllGatherAlgorithmFor(int64_t sendcount, DType dtype) const;
  // The same choice with its reason, for `weft bench --explain`.
  std::string ExplainAllReduce(int64_t count, DType dtype) const;
  // Measured α/β per link class (collectives/link_probe.h). Created communicators probe when
  // WEFT_PROBE_LINKS=1; with models set, the tuner compares the algorithms' predicted costs
  // instead of using fixed size thresholds. Set them before issuing operations.
  void SetLinkModels(LinkModels models);
  const LinkModels& link_models() const;

  // Splits into sub-communicators: ranks with equal color form one, ordered by (key, rank).
  // color < 0 opts out (returns a null pointer). Collective over this communicator.
  Result<std::unique_ptr<Communicator>> Split(int color, int key);

  // Collectives. In place when sendbuf == recvbuf (all-gather: sendbuf == recvbuf + rank*count;
  // reduce-scatter: sendbuf + rank*recvcount == recvbuf). Counts are elements, never negative.
  Result<Work> AllReduce(const void* sendbuf, void* recvbuf, int64_t count, DType dtype,
                         ReduceOp op);
  // Result at root only; recvbuf may be null elsewhere.
  Result<Work> Reduce(const void* sendbuf, void* recvbuf, int64_t count, DType dtype, ReduceOp op,
                      int root);
  // sendbuf is read at root only (may be null elsewhere); every rank receives into recvbuf.
  Result<Work> Broadcast(const void* sendbuf, void* recvbuf, int64_t count, DType dtype, int root);
  // recvbuf holds world_size * sendcount elements, rank r's block at r * sendcount.
  Result<Work> AllGather(const void* sendbuf, void* recvbuf, int64_t sendcount, DType dtype);
  // sendbuf holds world_size * recvcount elements; rank r gets the reduced block r.
  Result<Work> ReduceScatter(const void* sendbuf, void* recvbuf, int64_t recvcount, DType dtype,
                             ReduceOp op);
  // Block p of sendbuf (count elements) goes to rank p, landing at block rank of its recvbuf.
  Result<Work> AllToAll(const void* sendbuf, void* recvbuf, int64_t count, DType dtype);
  // root's recvbuf gets every rank's sendcount elements (rank order); null elsewhere is fine.
  Result<Work> Gather(const void* sendbuf, void* recvbuf, int64_t sendcount, DType dtype,
                      int root);
  // Rank r receives block r of root's sendbuf.
  Result<Work> Scatter(const void* sendbuf, void* recvbuf, int64_t recvcount, DType dtype,
                       int root);
  Result<Work> Barrier();
  // Tagged point-to-point (the pipeline's sends): tag in [0, 2^31). Messages between a pair with
  // the same tag arrive in order. A Send and the matching Recv may be issued in either order;
  // put a rank's sends and receives that must overlap in one group.
  Result<Work> Send(const void* buf, int64_t count, DType dtype, int peer, int tag = 0);
  Result<Work> Recv(void* buf, int64_t count, DType dtype, int peer, int tag = 0);

  // Grouped calls, as in NCCL: operations issued between GroupStart and GroupEnd are started
  // together (their sends and receives all posted before any is waited on); each returns its own
  // Work, and GroupEnd returns one Work for the whole group.
  void GroupStart();
  Result<Work> GroupEnd();

  // The error that failed this communicator, OK while healthy (ncclCommGetAsyncError).
  Status GetAsyncError() const;
  // Fails every pending and future operation of this communicator and of every communicator
  // sharing its connections (parent and split children), wakes every waiter, and tells the peers.
  void Abort();

 private:
  explicit Communicator(std::shared_ptr<internal::CommImpl> impl);
  TunerInput TunerFor(int64_t count, DType dtype) const;
  bool UseHierarchicalAllGather() const;
  // The all-gather for blocks of `sendcount` elements, as its metrics label (the names of
  // AllGatherAlgorithmFor): hierarchical, shm, recursive_doubling or ring.
  metrics::Algo ChooseAllGather(int64_t sendcount, DType dtype) const;
  std::shared_ptr<internal::CommImpl> impl_;
};

}  // namespace weft::collectives
