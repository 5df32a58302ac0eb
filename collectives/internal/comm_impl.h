// Private machinery behind Communicator: the connections shared by a root communicator and its
// split children (CommShared), one communicator's ordered operation queue and worker thread
// (CommImpl), the state behind a Work handle, and the OpContext every algorithm runs with.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "base/cpu_relax.h"
#include "base/deadline.h"
#include "base/status.h"
#include "collectives/communicator.h"
#include "collectives/internal/hierarchy.h"
#include "collectives/internal/local_arena.h"
#include "collectives/link_model.h"
#include "collectives/metrics.h"
#include "collectives/tuner.h"
#include "rendezvous/store.h"
#include "transport/transport.h"

namespace weft::collectives::internal {

inline constexpr size_t kNoticeBytes = 512;
inline constexpr uint64_t kNoticeTag = 0x7fffffffffffffffull;
inline constexpr uint32_t kMaxCommId = 0xfffffe;  // 0xffffff is reserved for notices

// Settings resolved once from CommOptions and the environment.
struct ResolvedOptions {
  std::vector<std::string> transports;
  int64_t timeout_ms = 0;
  int64_t init_timeout_ms = 0;
  size_t chunk_bytes = 0;
  std::string algorithm;
  int64_t rd_max_bytes = 0;
  int64_t rab_min_bytes = 0;
  int64_t rab_max_bytes = 0;  // -1: auto (DefaultRabMaxBytes of the communicator's size)
  // Flat all-gathers up to this (gathered) size: recursive doubling.
  size_t allgather_rd_max_bytes = 0;
  int ring_max_chunks = 0;  // 0: a ring block is cut into chunk_bytes pieces however many
  bool shm_coll = true;
  size_t shm_coll_chunk_bytes = 0;
  int64_t shm_direct_max_bytes = -1;  // -1: auto (DefaultShmDirectMaxBytes of the arena)
  int shm_coll_spin_us = 50;
  size_t shm_single_copy_min_bytes = 0;  // 0: never
  size_t shm_single_copy_max_bytes = 0;
  size_t hier_segment_bytes = 0;               // 0: no pipelined hierarchical all-reduce
  size_t streaming_copy_min_bytes = SIZE_MAX;  // arena outputs from this size: streaming stores
  bool recv_reduce = true;  // rings reduce pieces as they land where the transport can
};

// Connections of a root communicator, shared (shared_ptr) with its split children. Owns the
// transports and one endpoint per peer (world ranks). Thread-safe.
class CommShared {
 public:
  static Result<std::shared_ptr<CommShared>> Create(rendezvous::Store& store, int rank,
                                                    int world_size, const CommOptions& options);
  ~CommShared();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const ResolvedOptions& options() const { return options_; }
  const std::string& job_id() const { return job_id_; }
  // Endpoint to a world rank (null for self).
  transport::Endpoint* endpoint(int world_rank) const { return endpoints_[world_rank].get(); }
  const std::string& transport_name(int world_rank) const { return transport_names_[world_rank]; }
  const std::string& host_of(int world_rank) const { return hosts_[world_rank]; }
  // Metrics indices of a world rank, fixed at bootstrap: its transport's label and the bytes
  // counter of (transport, peer class).
  uint8_t transport_label(int world_rank) const { return transport_labels_[world_rank]; }
  uint8_t sent_counter(int world_rank) const { return sent_counters_[world_rank]; }

  // The error that failed these connections, OK while healthy. Also notices peers' reports.
  Status CheckFailed();
  // The same without polling for peers' reports: one atomic load while healthy.
  Status KnownFailure();
  // Records a failure (first one wins), tells every peer (except `culprit`, if >= 0) so that
  // ranks not talking to the culprit fail promptly too, then aborts the transports so no late
  // message lands in a buffer the caller has taken back.
  void Fail(const Status& status, int culprit);
  // True when every peer is reached over shared memory (one host), so a local arena may serve
  // the communicator's collectives.
  bool AllPeersOverShm(const std::vector<int>& world_ranks) const;
  // Whether a communicator of these world ranks gets a local arena: several ranks, the arena
  // enabled, and every pair joined by shared memory.
  bool WantsArena(const std::vector<int>& world_ranks) const {
    return world_ranks.size() > 1 && options_.shm_coll && AllPeersOverShm(world_ranks);
  }
  // Attaches to the arena `name` for `world_ranks` (this rank being `rank` among them; rank 0
  // creates it) with the configured slot size and spin. Unlink it once all have attached.
  Result<std::unique_ptr<LocalArena>> AttachArena(const std::string& name, int rank,
                                                  const std::vector<int>& world_ranks,
                                                  Deadline deadline) const;
  // The root communicator's arena, made during bootstrap (null if none); taken once.
  std::unique_ptr<LocalArena> TakeRootArena() { return std::move(root_arena_); }
  // Keeps an object (the bootstrap store and its server) alive as long as the connections.
  void KeepAlive(std::shared_ptr<void> p) { keep_alive_.push_back(std::move(p)); }

 private:
  CommShared() = default;
  Status Bootstrap(rendezvous::Store& store, const CommOptions& options);

  std::vector<std::shared_ptr<void>> keep_alive_;  // destroyed last
  int rank_ = 0;
  int world_size_ = 1;
  ResolvedOptions options_;
  std::string job_id_;
  std::vector<std::unique_ptr<transport::Transport>> transports_;
  std::vector<std::unique_ptr<transport::Endpoint>> endpoints_;
  std::vector<std::string> transport_names_;
  std::vector<std::string> hosts_;
  std::vector<uint8_t> transport_labels_;
  std::vector<uint8_t> sent_counters_;
  std::unique_ptr<LocalArena> root_arena_;

  std::mutex mu_;
  Status failed_;
  std::atomic<bool> has_failed_{false};
  std::vector<std::vector<char>> notice_in_;
  std::vector<transport::RequestPtr> notice_recvs_;
  std::vector<std::vector<char>> notice_out_;
  std::vector<transport::RequestPtr> notice_sends_;
};

class CommImpl;

// One posted transfer of an operation, with the peer (rank in the communicator) for messages.
struct Pending {
  transport::RequestPtr req;
  int peer = -1;
};

// What an algorithm sees: its communicator's ranks, tagged sends and receives scoped to this
// operation, waits bounded by the operation's deadline with errors that name the peer, and
// scratch memory. Used by one thread at a time.
class OpContext {
 public:
  OpContext(CommImpl& comm, const char* op_name, uint32_t seq, Deadline deadline);
  // The deadline is `timeout_ms` from the first wait (read off the clock then, not on the latency
  // path of an operation that never has to wait).
  OpContext(CommImpl& comm, const char* op_name, uint32_t seq, int64_t timeout_ms);
  int rank() const;
  int size() const;
  size_t chunk_bytes() const;
  // Sends/receives tagged with this operation and `step` (messages of one step match in order).
  Result<Pending> Send(int peer, const void* data, size_t bytes, int step);
  Result<Pending> Recv(int peer, void* data, size_t bytes, int step);
  // Point-to-point with a raw transport tag (user send/recv).
  Result<Pending> SendTagged(int peer, const void* data, size_t bytes, uint64_t tag);
  Result<Pending> RecvTagged(int peer, void* data, size_t bytes, uint64_t tag);
  // Whether receives from `peer` can be reduced as they land (the transport can, and
  // WEFT_RECV_REDUCE allows it).
  bool CanRecvReduce(int peer) const;
  // A receive of `bytes` from `peer` for `step` that leaves acc = in op message once complete
  // (transport::Endpoint::PostRecvReduce); only where CanRecvReduce(peer).
  Result<Pending> RecvReduce(int peer, void* acc, const void* in, size_t bytes, DType dtype,
                             ReduceOp op, int step);
  // Sends `send` to `peer` and receives as many bytes from it into `recv`, both for `step`, and
  // waits for both (transport::Endpoint::Exchange: the small-message path of recursive doubling).
  Status Exchange(int peer, const void* send, void* recv, size_t bytes, int step);
  Status Wait(Pending& p);
  // Waits for all, in order; on timeout names every peer still outstanding. Clears the vector.
  Status WaitAll(std::vector<Pending>& ps);
  // The same over ps[0..n) (a fixed array: no allocation on a small operation's path); drops
  // the requests.
  Status WaitAll(Pending* ps, size_t n);
  // Waits for ps[i], one of several an algorithm waits for in order, acting on each as it lands:
  // a timeout names every peer still outstanding from ps[i] on (as WaitAll does), not only the
  // first; the vector is then cleared.
  Status WaitAt(std::vector<Pending>& ps, size_t i);
  // Grow-only scratch buffers owned by the communicator; `slot` picks one of kScratchSlots.
  static constexpr int kScratchSlots = 3;
  uint8_t* Scratch(size_t bytes, int slot);
  // A context for another operation of the same communicator, sharing this deadline.
  OpContext ForOp(const char* op_name, uint32_t seq) const {
    return OpContext(comm_, op_name, seq, deadline());
  }
  // A context for a phase of this operation run on a child (local or cross) communicator: same
  // name, deadline and sequence number in messages; `seq` tags its messages.
  OpContext ForChild(CommImpl& child, uint32_t seq) const {
    OpContext c(child, op_name_, seq, deadline());
    c.label_seq_ = label_seq_;
    return c;
  }
  Hierarchy* hierarchy() const;
  int64_t rd_max_bytes() const;
  // Most pieces a ring algorithm cuts one block into (larger pieces than chunk_bytes() where a
  // block would need more); 0: no limit.
  int ring_max_chunks() const;
  size_t hier_segment_bytes() const;
  // Arena algorithms write outputs of at least this many bytes with streaming stores.
  size_t streaming_copy_min_bytes() const;
  // Whether an arena broadcast or all-gather moving `bytes` per rank goes single-copy
  // (process_vm_readv straight from the owner's buffer) instead of through the slots. Collective:
  // the first large operation agrees, across the arena's ranks, whether single copy works.
  Result<bool> ArenaSingleCopy(size_t bytes);
  const char* op_name() const { return op_name_; }
  // The communicator's local arena, or null.
  LocalArena* arena() const;
  // Waits for every rank's (or only `only_rank`'s) arena flag to reach seq, bounded by the
  // operation's deadline; a failure names the ranks and fails the communicator.
  Status WaitArena(LocalArena::Flag flag, uint64_t seq, int only_rank = -1);
  // Waits until this rank may write its slot and the result buffer for step seq.
  Status ArenaWritable(uint64_t seq);
  // Counts bytes this rank wrote into the arena for its peers (weft_transport_sent_bytes_total,
  // transport "arena"); arena algorithms call it where they fill their slot or result part.
  void ArenaWrote(size_t bytes) const {
    if (metrics::Enabled()) {
      metrics::AddSentBytes(
          metrics::SentCounter(metrics::kTransportArena, metrics::PeerClass::kSameHost), bytes);
    }
  }
  uint32_t seq() const { return seq_; }
  // "allreduce #12"
  std::string OpLabel() const;
  // The world rank and transport of a peer, for messages.
  std::string PeerLabel(int peer) const;

 private:
  Status FailureOf(const Pending& p, const Status& s);
  // The transport endpoint to `peer` (InternalError where there is none).
  Result<transport::Endpoint*> EndpointOf(int peer);
  // Posts with post(endpoint of `peer`); a transport's refusal fails the operation (FailureOf).
  template <typename Post>
  Result<Pending> PostVia(int peer, Post&& post);
  // Counts `bytes` sent to `peer` in the transport metrics (when they are on).
  void CountSent(int peer, size_t bytes);
  // The operation's deadline, fixed on first use (from `now` where the caller has read the clock).
  const Deadline& deadline(Clock::time_point now = Clock::time_point::min()) const {
    if (timeout_ms_ >= 0) {
      if (now == Clock::time_point::min()) now = Clock::now();
      deadline_ = Deadline::At(now + std::chrono::milliseconds(timeout_ms_));
      timeout_ms_ = -1;
    }
    return deadline_;
  }
  CommImpl& comm_;
  const char* op_name_;
  uint32_t seq_;
  uint32_t label_seq_;
  mutable int64_t timeout_ms_ = -1;  // >= 0 until the deadline is fixed
  mutable Deadline deadline_ = Deadline::Infinite();
};

// A move-only callable R(Arg), stored inline when small: issuing an operation does not allocate
// for it (std::function would, for any lambda over 16 bytes). Larger callables go to the heap.
template <typename R, typename Arg>
class InlineFn {
 public:
  static constexpr size_t kInlineBytes = 64;
  InlineFn() = default;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, InlineFn>>>
  InlineFn(F&& f) {  // NOLINT(google-explicit-constructor): lambdas convert, as to std::function
    using T = std::decay_t<F>;
    if constexpr (sizeof(T) <= kInlineBytes && alignof(T) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<T>) {
      new (buf_) T(std::forward<F>(f));
      call_ = [](void* p, Arg a) -> R { return (*static_cast<T*>(p))(std::forward<Arg>(a)); };
      manage_ = [](void* dst, void* src) {
        if (dst != nullptr) new (dst) T(std::move(*static_cast<T*>(src)));
        static_cast<T*>(src)->~T();
      };
    } else {
      *reinterpret_cast<T**>(buf_) = new T(std::forward<F>(f));
      call_ = [](void* p, Arg a) -> R { return (**static_cast<T**>(p))(std::forward<Arg>(a)); };
      manage_ = [](void* dst, void* src) {
        if (dst != nullptr) {
          *static_cast<T**>(dst) = *static_cast<T**>(src);
        } else {
          delete *static_cast<T**>(src);
        }
      };
    }
  }
  InlineFn(InlineFn&& o) noexcept { MoveFrom(o); }
  InlineFn& operator=(InlineFn&& o) noexcept {
    if (this != &o) {
      Reset();
      MoveFrom(o);
    }
    return *this;
  }
  InlineFn(const InlineFn&) = delete;
  InlineFn& operator=(const InlineFn&) = delete;
  ~InlineFn() { Reset(); }
  explicit operator bool() const { return call_ != nullptr; }
  R operator()(Arg a) { return call_(buf_, std::forward<Arg>(a)); }

 private:
  void Reset() {
    if (manage_ != nullptr) manage_(nullptr, buf_);
    call_ = nullptr;
    manage_ = nullptr;
  }
  void MoveFrom(InlineFn& o) {
    if (o.manage_ != nullptr) o.manage_(buf_, o.buf_);
    call_ = o.call_;
    manage_ = o.manage_;
    o.call_ = nullptr;
    o.manage_ = nullptr;
  }
  alignas(std::max_align_t) unsigned char buf_[kInlineBytes];
  R (*call_)(void*, Arg) = nullptr;
  // Moves the callable from src into dst (raw storage) and ends src's; dst null: just ends src's.
  void (*manage_)(void* dst, void* src) = nullptr;
};

// An operation's body.
using OpFn = InlineFn<Status, OpContext&>;

// A point-to-point transfer, described so that a group can post it without waiting.
struct P2POp {
  bool is_send = true;
  int peer = 0;
  void* buf = nullptr;
  size_t bytes = 0;
  uint64_t tag = 0;
};

// The state behind a Work handle. Completion is one atomic flag; a waiter that has to sleep does
// so on a futex on it, and Complete() makes a system call only when someone sleeps.
class WorkState {
 public:
  using Fn = OpFn;
  WorkState(metrics::OpName name, metrics::Algo algo, uint32_t seq, Fn fn,
            std::weak_ptr<CommImpl> comm)
      : name(name.text),
        op(name.op),
        algo(algo),
        seq(seq),
        fn(std::move(fn)),
        comm(std::move(comm)) {}
  // Records the result and releases waiters. Called once.
  void Complete(Status s);
  bool done() const { return done_.load(std::memory_order_acquire) != 0; }
  Status Wait(Deadline deadline);
  // The final status; OK until done.
  Status status() const { return done() ? status_ : Status::Ok(); }

  const char* name;
  metrics::Op op;  // metrics labels, fixed when issued
  metrics::Algo algo;
  uint32_t seq;
  Fn fn;
  uint64_t ticket = 0;  // position in the communicator's queue, for the worker's poll
  std::weak_ptr<CommImpl> comm;
  // Set for send/recv: a group posts these first and waits on them last.
  std::optional<P2POp> p2p;

 private:
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> sleepers_{0};
  Status status_;  // written before done_ is raised, read after it is seen
};

// The lock of a communicator's operation queue: held for a few instructions at a time, so a
// thread that finds it taken spins (yielding after a while) instead of sleeping. Taking and
// dropping it costs one atomic exchange and a plain store, where a std::mutex costs two
// read-modify-writes; the latency path takes it once per operation.
class SpinLock {
 public:
  void lock() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      for (int i = 0; locked_.load(std::memory_order_relaxed); ++i) {
        if (i < 64) {
          CpuRelax();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// One communicator: a group of world ranks over shared connections, an ordered queue of
// operations, and the worker thread that runs them (a waiter may run the next one inline).
class CommImpl : public std::enable_shared_from_this<CommImpl> {
 public:
  CommImpl(std::shared_ptr<CommShared> shared, std::vector<int> group, int rank, uint32_t comm_id);
  ~CommImpl();
  void StartWorker();
  // Drains the queue, stops and joins the worker.
  void Shutdown();

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(group_.size()); }
  int world_rank_of(int r) const { return group_[r]; }
  const std::vector<int>& group() const { return group_; }
  uint32_t comm_id() const { return comm_id_; }
  CommShared& shared() { return *shared_; }
  std::shared_ptr<CommShared> shared_ptr() { return shared_; }
  size_t chunk_bytes() const { return shared_->options().chunk_bytes; }
  uint8_t* Scratch(size_t bytes, int slot);

  uint64_t CollectiveTag(uint32_t seq, int step) const;
  uint64_t UserTag(int tag) const;

  // Issues an operation: assigns the next sequence number (collectives) and queues it, or, while
  // a group is open, adds it to the group. `name` is a string literal naming a metrics::Op.
  Result<Work> Issue(metrics::OpName name, bool collective, WorkState::Fn fn,
                     std::optional<P2POp> p2p = std::nullopt);
  // A collective, labelled in the metrics with the algorithm chosen for it.
  Result<Work> Issue(metrics::OpName name, metrics::Algo algo, WorkState::Fn fn);
  void GroupStart();
  Result<Work> GroupEnd();

  // Runs `state` now on the calling thread if it is next in line and nothing else runs.
  void TryRunInline(WorkState* state);
  Status error();
  // error() without polling peers' reports (the per-operation check on the latency path).
  Status KnownError();
  void Abort();
  uint32_t NextSplitIndex() { return split_count_.fetch_add(1); }
  LocalArena* arena() const { return arena_; }
  Hierarchy* hierarchy() const { return hierarchy_.get(); }
  const LinkModels& link_models() const { return link_models_; }
  void SetLinkModels(LinkModels m) {
    link_models_ = std::move(m);
    RefreshTuner();
  }
  void SetHierarchy(std::unique_ptr<Hierarchy> h) {
    hierarchy_ = std::move(h);
    RefreshTuner();
  }
  void SetArena(std::unique_ptr<LocalArena> a) {
    owned_arena_ = std::move(a);
    arena_ = owned_arena_.get();
    RefreshTuner();
  }
  // The tuner's input for this communicator with bytes = 0: everything but the size, kept up to
  // date by the setters above, so choosing an algorithm per operation copies it and sets bytes.
  const TunerInput& tuner_base() const { return tuner_base_; }

 private:
  Result<Work> Enqueue(std::shared_ptr<WorkState> state, bool collective);
  void WorkerLoop();
  void Execute(const std::shared_ptr<WorkState>& state);
  // Runs the operation (unless the communicator failed earlier) and records a failure.
  Status Run(WorkState& state);
  // Execute with metrics: times Run and records latency or error before completing.
  void ExecuteMeasured(WorkState& state);

  std::shared_ptr<CommShared> shared_;
  std::vector<int> group_;
  int rank_;
  uint32_t comm_id_;
  // Metrics transport label of this communicator's operations: its peers' common transport,
  // "mixed" or "self" (arena and hierarchical algorithms override it).
  uint8_t transport_label_ = metrics::kTransportSelf;

  // qlock_ guards the queue, the sequence numbers, groups and stop_; mu_ guards error_ and is
  // what the worker sleeps on (cv_) between polls.
  SpinLock qlock_;
  std::deque<std::shared_ptr<WorkState>> queue_;
  // An operation is running (set under qlock_ by whoever takes it off the queue; cleared without).
  std::atomic<bool> running_{false};
  uint64_t next_ticket_ = 0;
  std::atomic<bool> stop_{false};
  // The worker sleeps until an Enqueue() wakes it (no operation was queued for a whole poll).
  // Set under qlock_ by the worker; cleared by the Enqueue() that wakes it.
  std::atomic<bool> parked_{false};
  uint32_t next_seq_ = 0;
  int group_depth_ = 0;
  std::vector<std::shared_ptr<WorkState>> group_ops_;
  std::mutex mu_;
  std::condition_variable cv_;
  Status error_;
  std::atomic<bool> has_error_{false};
  std::thread worker_;

  std::vector<uint8_t> scratch_[OpContext::kScratchSlots];
  std::atomic<uint32_t> split_count_{0};
  std::unique_ptr<LocalArena> owned_arena_;
  LocalArena* arena_ = nullptr;
  std::unique_ptr<Hierarchy> hierarchy_;
  LinkModels link_models_;
  void RefreshTuner();
  TunerInput tuner_base_;
};

}  // namespace weft::collectives::internal
