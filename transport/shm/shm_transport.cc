// The shm transport's engine: per-peer matching, the ring protocol (messages as kMsg + kData
// frames, single-copy rendezvous as kRts/kFin), caller-driven progress, doorbell sleeping and
// peer-death detection. See shm_transport.h for the contract.
#include "transport/shm/shm_transport.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/cpu_relax.h"
#include "base/env.h"
#include "base/futex.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "base/recycling_allocator.h"
#include "base/socket_util.h"
#include "base/thread_name.h"
#include "transport/shm/shm_ring.h"
#include "transport/shm/shm_segment.h"

namespace weft::transport::shm {
namespace {

WEFT_ENV_KNOB(kRingBytesKnob, "WEFT_SHM_RING_BYTES", "1M",
              "Bytes of each inbound shm ring (every rank's segment holds one per peer rank)");
WEFT_ENV_KNOB(kEagerBytesKnob, "WEFT_SHM_EAGER_BYTES", "64K",
              "shm messages above this size are pulled single-copy with process_vm_readv");
WEFT_ENV_KNOB(kCmaKnob, "WEFT_SHM_CMA", "1",
              "1: large shm messages go single-copy via process_vm_readv; 0: through the ring");
WEFT_ENV_KNOB(kSpinUsKnob, "WEFT_SHM_SPIN_US", "50",
              "Microseconds an shm wait polls before it sleeps on its futex doorbell");

// Longest single futex sleep: bounds how late a waiter notices a dead peer or its deadline.
constexpr std::chrono::milliseconds kSleepSlice{10};
// How often pending work re-checks that the peers it waits on are alive.
constexpr std::chrono::milliseconds kLivenessPeriod{5};
constexpr uint64_t kMinRingBytes = 4096;
constexpr uint64_t kMaxRingBytes = uint64_t{1} << 30;

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Copies `size` bytes at `remote` in process `pid` to `dst`; 0 or an errno.
int CmaRead(int pid, void* dst, uint64_t remote, uint64_t size) {
  uint64_t done = 0;
  while (done < size) {
    iovec local{static_cast<uint8_t*>(dst) + done, size - done};
    iovec far{reinterpret_cast<void*>(remote + done), size - done};
    ssize_t n = process_vm_readv(pid, &local, 1, &far, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EFAULT;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

class Engine;

// A posted send or receive. Fields other than done_/status_ are touched only under the engine
// mutex; status_ is written before done_ is released and read only after done_ is seen.
class ShmRequest final : public Request {
 public:
  enum class Kind { kSend, kRecv };

  ShmRequest(std::weak_ptr<Engine> engine, Kind what, int peer_rank, void* buffer, uint64_t bytes,
             uint64_t message_tag)
      : kind(what),
        peer(peer_rank),
        data(static_cast<uint8_t*>(buffer)),
        size(bytes),
        tag(message_tag),
        engine_(std::move(engine)) {}

  bool Test() override;
  bool Done() const override { return done(); }
  Status Wait(Deadline deadline) override;
  Status status() const override {
    return done() ? status_ : FailedPreconditionError("shm: request still pending");
  }

  bool done() const { return done_.load(std::memory_order_acquire); }
  void Complete(Status st) {
    status_ = std::move(st);
    done_.store(true, std::memory_order_release);
  }
  std::string Describe() const {
    return std::string(kind == Kind::kSend ? "send of " : "receive of ") + std::to_string(size) +
           " bytes " + (kind == Kind::kSend ? "to" : "from") + " rank " + std::to_string(peer) +
           " (tag " + Hex(tag) + ")";
  }

  const Kind kind;
  const int peer;
  uint8_t* const data;
  const uint64_t size;
  const uint64_t tag;
  // Send state.
  bool rndv = false;     // goes single-copy (kRts, then the receiver pulls)
  bool started = false;  // the kMsg frame is in the ring
  uint64_t sent = 0;     // bytes in the ring so far
  uint64_t id = 0;

 private:
  std::weak_ptr<Engine> engine_;
  std::atomic<bool> done_{false};
  Status status_;
};
using ShmRequestPtr = std::shared_ptr<ShmRequest>;

// A message that arrived before any receive matched it.
struct Unexpected {
  uint64_t tag = 0;
  uint64_t size = 0;
  bool rndv = false;
  // In-ring messages: the payload so far (all of it once received == size).
  std::unique_ptr<uint8_t[]> data;
  uint64_t received = 0;
  // Single-copy messages: where to pull from, and the id to FIN.
  uint64_t id = 0;
  uint64_t addr = 0;
};

// A matched single-copy message waiting for its process_vm_readv.
struct Pull {
  ShmRequestPtr recv;
  uint64_t addr = 0;
  uint64_t id = 0;
};

// The in-ring message currently arriving from one peer (frames of messages never interleave).
struct Incoming {
  bool active = false;
  uint64_t total = 0;
  uint64_t got = 0;
  ShmRequestPtr recv;                // the receive it lands in, or
  Unexpected* unexpected = nullptr;  // the heap buffer it lands in until a receive matches
  uint8_t* dest = nullptr;           // null: bytes are dropped (size mismatch)
};

struct Peer {
  int rank = -1;
  int pid = 0;
  bool same_process = false;
  UniqueFd pidfd;                   // invalid: liveness falls back to kill(pid, 0)
  SharedSegment segment;            // the peer's segment: holds our outbound ring to it
  RingView out;                     // producer view: we -> peer
  RingView in;                      // consumer view: peer -> we (in our segment)
  bool use_cma = false;             // large sends go single-copy
  Status failed;                    // sticky once the peer died or was aborted
  std::deque<ShmRequestPtr> sends;  // not yet wholly in the ring (or kRts not yet written)
  std::unordered_map<uint64_t, ShmRequestPtr> awaiting_fin;
  std::deque<FrameHeader> control;  // kFin frames waiting for ring space
  std::unordered_map<uint64_t, std::deque<ShmRequestPtr>> posted;
  std::unordered_map<uint64_t, std::deque<std::unique_ptr<Unexpected>>> unexpected;
  std::deque<Pull> pulls;
  Incoming incoming;

  bool HasPending() const {
    return !sends.empty() || !awaiting_fin.empty() || !control.empty() || !posted.empty() ||
           !pulls.empty() || incoming.recv != nullptr;
  }
};

Status SizeMismatch(int from, uint64_t msg_size, uint64_t recv_size, uint64_t tag) {
  return InvalidArgumentError("shm: message of " + std::to_string(msg_size) + " bytes from rank " +
                              std::to_string(from) + " does not match the " +
                              std::to_string(recv_size) + "-byte receive (tag " + Hex(tag) +
                              "); message dropped");
}

// Shared state of one transport instance; endpoints hold it strongly, requests weakly. Every
// mutable member is guarded by mu_ except what Listen()/Connect() set up before any endpoint
// exists (own_, cma_probe_word_).
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(const TransportConfig& config, uint64_t ring_bytes, uint64_t eager_bytes, bool cma,
         std::chrono::microseconds spin)
      : config_(config),
        ring_bytes_(ring_bytes),
        eager_bytes_(eager_bytes),
        cma_(cma),
        spin_(spin),
        peers_(config.world_size) {}

  ~Engine() {
    StopPump();
    // Nobody else holds the engine now; fail what is left so no request stays pending forever.
    Status gone = CancelledError("shm: transport of rank " + std::to_string(config_.rank) +
                                 " destroyed with the request pending");
    for (auto& p : peers_) {
      if (p) FailPeerLocked(*p, gone, false);
    }
  }

  int rank() const { return config_.rank; }

  Result<std::string> Listen();
  Status Connect(const std::vector<PeerInfo>& peers, Deadline deadline);
  Result<RequestPtr> Post(ShmRequest::Kind kind, int peer, void* data, uint64_t size, uint64_t tag);
  void Progress() {
    std::lock_guard<std::mutex> lock(mu_);
    ProgressLocked();
  }
  Status Wait(ShmRequest& req, Deadline deadline);
  // Stops and joins the send pump; it does not start again. Idempotent.
  void StopPump();
  void Abort(const Status& why);
  void AbortPeer(int peer, const Status& why);
  ShmStats Stats();

 private:
  Result<std::unique_ptr<Peer>> Attach(const PeerInfo& info, SharedSegment segment);
  void ProgressLocked();
  bool PeerProgressLocked(Peer& p);
  bool DrainLocked(Peer& p);
  Status HandleFrameLocked(Peer& p, const FrameHeader& h);
  void StartIncomingLocked(Peer& p, uint64_t tag, uint64_t total);
  Status ContinueIncomingLocked(Peer& p, uint64_t len);
  void HandleFinLocked(Peer& p, const FrameHeader& h);
  bool PullsLocked(Peer& p);
  bool PushLocked(Peer& p);
  bool MatchUnexpectedLocked(Peer& p, const ShmRequestPtr& req);
  ShmRequestPtr TakePostedLocked(Peer& p, uint64_t tag);
  void QueueFinLocked(Peer& p, uint64_t id, FinCode code, uint64_t detail);
  void CompleteLocked(ShmRequest& req, Status st) {
    req.Complete(std::move(st));
    completed_ = true;
  }
  void FailPeerLocked(Peer& p, const Status& why, bool keep_delivered);
  void CheckLivenessLocked();
  bool PeerExited(const Peer& p) const;
  Status ExitedStatus(const Peer& p) const {
    return UnavailableError("shm: rank " + std::to_string(p.rank) + " (pid " +
                            std::to_string(p.pid) + ") exited");
  }
  // Wakes this rank's other waiting threads if anything completed since the last call.
  void NotifyLocalLocked();
  // Progresses until done() (evaluated with mu_ held) or the deadline: polls for `spin`, then
  // sleeps on the doorbell in slices. False at the deadline.
  template <typename Done>
  bool PumpUntil(Done done, Deadline deadline, std::chrono::microseconds spin);
  // Whether a peer is blocked on progress only this side can make: our sends or kFins wait for
  // ring space, or the peer is streaming a message into our ring that we have begun to take.
  bool AnyStuckLocked() const;
  // Hands stuck work to the pump thread when no caller is waiting (so none is pumping).
  void MaybeWakePumpLocked();
  void PumpLoop();

  const TransportConfig config_;
  const uint64_t ring_bytes_;
  const uint64_t eager_bytes_;
  const bool cma_;
  const std::chrono::microseconds spin_;
  // Peers read this word with process_vm_readv in Connect to learn whether CMA works.
  uint64_t cma_probe_word_ = 0;
  SharedSegment own_;
  bool connect_called_ = false;

  std::mutex mu_;
  std::vector<std::unique_ptr<Peer>> peers_;  // by rank; null for self and unconnected ranks
  std::vector<int> connected_;
  Status aborted_;
  bool completed_ = false;
  uint64_t next_id_ = 1;
  Clock::time_point last_liveness_check_{};
  // The pump: a thread, started on first need, that moves in-ring streams (ours out, or one we
  // started taking in) while no caller is in Wait(). Without it a rank that posts a large send
  // and then computes, or waits on another transport, would stall its peer until it next calls
  // Test/Wait. Messages that are only announced, not streamed, still wait for the caller.
  std::thread pump_;
  std::condition_variable pump_cv_;
  bool pump_stop_ = false;
  bool pump_idle_ = false;
  int waiters_ = 0;  // threads inside Wait()
  uint64_t ring_payload_bytes_ = 0;
  uint64_t cma_bytes_ = 0;
};

bool ShmRequest::Test() {
  if (done()) return true;
  if (auto engine = engine_.lock()) engine->Progress();
  return done();
}

Status ShmRequest::Wait(Deadline deadline) {
  if (done()) return status_;
  auto engine = engine_.lock();
  if (!engine) return status();
  return engine->Wait(*this, deadline);
}

Result<std::string> Engine::Listen() {
  std::lock_guard<std::mutex> lock(mu_);
  if (own_.valid()) return own_.name();
  if (!aborted_.ok()) return aborted_;
  std::string name = "/weft-" + config_.job_id + "-" + std::to_string(config_.rank);
  uint64_t probe = 0;
  if (!RandomBytes(&probe, sizeof(probe)).ok()) {
    probe =
        kSegmentMagic ^ (static_cast<uint64_t>(getpid()) << 20) ^ reinterpret_cast<uintptr_t>(this);
  }
  cma_probe_word_ = probe;
  SegmentParams params;
  params.rank = config_.rank;
  params.world_size = config_.world_size;
  params.ring_capacity = ring_bytes_;
  params.cma_probe_addr = reinterpret_cast<uintptr_t>(&cma_probe_word_);
  params.cma_probe_value = probe;
  params.secret_digest = HmacSha256(config_.secret, name);
  WEFT_ASSIGN_OR_RETURN(own_, SharedSegment::Create(name, params));
  return name;
}

Result<std::unique_ptr<Peer>> Engine::Attach(const PeerInfo& info, SharedSegment segment) {
  SegmentHeader* h = segment.header();
  const std::string& name = segment.name();
  if (h->rank != info.rank || h->world_size != config_.world_size) {
    return FailedPreconditionError(
        "shm: segment " + name + " belongs to rank " + std::to_string(h->rank) + " of " +
        std::to_string(h->world_size) + ", expected rank " + std::to_string(info.rank) + " of " +
        std::to_string(config_.world_size));
  }
  Digest256 digest = HmacSha256(config_.secret, name);
  if (!ConstantTimeEqual(digest.data(), h->secret_digest, digest.size())) {
    return PermissionDeniedError("shm: segment " + name + " of rank " + std::to_string(info.rank) +
                                 " was not created with this job's secret");
  }
  auto p = std::make_unique<Peer>();
  p->rank = info.rank;
  p->pid = h->pid;
  p->same_process = p->pid == getpid();
  if (info.pid != 0 && info.pid != p->pid) {
    WEFT_LOG(WARN) << "shm: rank " << info.rank << " published pid " << info.pid
                   << " but its segment says " << p->pid << "; using the segment's";
  }
  uint32_t flag = kMappedNoCma;
  if (cma_) {
    uint64_t value = 0;
    int err = CmaRead(p->pid, &value, h->cma_probe_addr, sizeof(value));
    if (err == 0 && value == h->cma_probe_value) {
      flag = kMappedCma;
    } else {
      WEFT_LOG(INFO) << "shm: rank " << config_.rank << " cannot read rank " << info.rank
                     << "'s memory with process_vm_readv ("
                     << (err ? std::strerror(err) : "probe value differs")
                     << "); its large messages stream through the ring";
    }
  }
  if (!p->same_process) {
    int fd = static_cast<int>(syscall(SYS_pidfd_open, p->pid, 0));
    if (fd >= 0) {
      p->pidfd.Reset(fd);
    } else if (errno != ESRCH) {
      WEFT_LOG(DEBUG) << "shm: pidfd_open(" << p->pid << "): " << std::strerror(errno)
                      << "; watching rank " << info.rank << " with kill(pid, 0)";
    }
    // ESRCH: it already exited; liveness checks (kill fallback) will report it.
  }
  p->out = segment.Ring(config_.rank);
  p->in = own_.Ring(info.rank);
  p->segment = std::move(segment);
  p->segment.mapped_flag(config_.rank).store(flag, std::memory_order_release);
  RingDoorbell(p->segment.header());
  return p;
}

Status Engine::Connect(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const std::string who = "shm Connect on rank " + std::to_string(config_.rank);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_.ok()) return aborted_;
    if (!own_.valid()) return FailedPreconditionError(who + ": call Listen() first");
    if (connect_called_) return FailedPreconditionError(who + ": Connect() may be called once");
    connect_called_ = true;
  }
  std::unordered_set<int> seen;
  for (const PeerInfo& info : peers) {
    if (info.rank < 0 || info.rank >= config_.world_size || info.rank == config_.rank) {
      return InvalidArgumentError(who + ": peer rank " + std::to_string(info.rank) +
                                  " is not another rank of world size " +
                                  std::to_string(config_.world_size));
    }
    if (!seen.insert(info.rank).second) {
      return InvalidArgumentError(who + ": rank " + std::to_string(info.rank) + " listed twice");
    }
    if (info.address.empty()) {
      return InvalidArgumentError(who + ": rank " + std::to_string(info.rank) +
                                  " published no shm address");
    }
    if (!config_.host_id.empty() && !info.host_id.empty() && info.host_id != config_.host_id) {
      return InvalidArgumentError(who + ": rank " + std::to_string(info.rank) + " is on host '" +
                                  info.host_id + "', not '" + config_.host_id + "'");
    }
  }

  // Map every peer's segment, retrying those that do not exist yet.
  std::vector<std::unique_ptr<Peer>> made(peers.size());
  std::vector<size_t> todo(peers.size());
  for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  auto backoff = std::chrono::microseconds(200);
  while (!todo.empty()) {
    for (auto it = todo.begin(); it != todo.end();) {
      const PeerInfo& info = peers[*it];
      auto segment = SharedSegment::Open(info.address);
      if (!segment.ok()) {
        if (segment.status().code() == StatusCode::kNotFound) {
          ++it;
          continue;
        }
        return segment.status().WithContext(who + " to rank " + std::to_string(info.rank));
      }
      auto peer = Attach(info, std::move(*segment));
      if (!peer.ok()) return peer.status().WithContext(who);
      made[*it] = std::move(*peer);
      it = todo.erase(it);
    }
    if (todo.empty()) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_.ok()) return aborted_;
    }
    if (deadline.Expired()) {
      std::string missing;
      for (size_t i : todo) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(peers[i].rank) + " (" +
                   peers[i].address + ")";
      }
      return DeadlineExceededError(who + ": rank(s) " + missing +
                                   " never created their segment before the deadline");
    }
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(backoff, deadline.Remaining()));
    backoff = std::min<std::chrono::microseconds>(backoff * 2, std::chrono::milliseconds(20));
  }

  // Wait until every listed peer has mapped our segment; then nobody needs its name any more.
  SegmentHeader* own = own_.header();
  auto unmapped = [&] {
    std::vector<int> ranks;
    for (const PeerInfo& info : peers) {
      if (own_.mapped_flag(info.rank).load(std::memory_order_acquire) == kNotMapped) {
        ranks.push_back(info.rank);
      }
    }
    return ranks;
  };
  for (std::vector<int> missing = unmapped(); !missing.empty(); missing = unmapped()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_.ok()) return aborted_;
    }
    for (size_t i = 0; i < peers.size(); ++i) {
      const Peer& p = *made[i];
      if (!p.same_process &&
          own_.mapped_flag(p.rank).load(std::memory_order_acquire) == kNotMapped && PeerExited(p)) {
        return UnavailableError(who + ": rank " + std::to_string(p.rank) + " (pid " +
                                std::to_string(p.pid) + ") exited before mapping segment " +
                                own_.name());
      }
    }
    if (deadline.Expired()) {
      std::string list;
      for (int r : missing) list += (list.empty() ? "" : ", ") + std::to_string(r);
      return DeadlineExceededError(who + ": rank(s) " + list + " did not map segment " +
                                   own_.name() + " before the deadline");
    }
    uint32_t bell = own->doorbell.load(std::memory_order_seq_cst);
    own->sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (unmapped().size() == missing.size()) {
      FutexWait(&own->doorbell, bell,
                std::min<std::chrono::nanoseconds>(kSleepSlice, deadline.Remaining()),
                FutexScope::kShared);  // other processes ring it
    }
    own->sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
  own_.Unlink();

  std::lock_guard<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  for (auto& p : made) {
    p->use_cma = cma_ && own_.mapped_flag(p->rank).load(std::memory_order_acquire) == kMappedCma;
    connected_.push_back(p->rank);
    peers_[p->rank] = std::move(p);
  }
  return Status::Ok();
}

Result<RequestPtr> Engine::Post(ShmRequest::Kind kind, int peer, void* data, uint64_t size,
                                uint64_t tag) {
  auto req = MakeRecycled<ShmRequest>(weak_from_this(), kind, peer, data, size, tag);
  if (data == nullptr && size > 0) {
    return InvalidArgumentError("shm: null buffer for the " + req->Describe());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  Peer& p = *peers_[peer];
  if (kind == ShmRequest::Kind::kSend) {
    if (!p.failed.ok()) return p.failed;
    req->rndv = p.use_cma && size > eager_bytes_;
    req->id = next_id_++;
    p.sends.push_back(req);
  } else if (!MatchUnexpectedLocked(p, req)) {
    if (!p.failed.ok()) return p.failed;
    p.posted[tag].push_back(req);
  }
  PeerProgressLocked(p);
  NotifyLocalLocked();
  MaybeWakePumpLocked();
  return RequestPtr(std::move(req));
}

void Engine::ProgressLocked() {
  for (int r : connected_) PeerProgressLocked(*peers_[r]);
  if (Clock::now() - last_liveness_check_ >= kLivenessPeriod) CheckLivenessLocked();
  NotifyLocalLocked();
  MaybeWakePumpLocked();
}

bool Engine::PeerProgressLocked(Peer& p) {
  if (!p.failed.ok()) return false;
  bool consumed = DrainLocked(p);
  bool pulled = p.failed.ok() && PullsLocked(p);
  bool wrote = p.failed.ok() && PushLocked(p);
  // Consuming frees ring space a blocked sender may wait for; writing gives the peer work.
  if (consumed || wrote) RingDoorbell(p.segment.header());
  return consumed || pulled || wrote;
}

bool Engine::DrainLocked(Peer& p) {
  uint64_t avail = p.in.Readable();
  bool any = false;
  while (avail >= sizeof(FrameHeader)) {
    FrameHeader h;
    p.in.ReadAt(0, &h, sizeof(h));
    const uint64_t bytes = FrameBytes(h.len);
    if (bytes > avail) {
      FailPeerLocked(
          p,
          DataLossError("shm: corrupt frame from rank " + std::to_string(p.rank) + " (kind " +
                        std::to_string(h.kind) + ", " + std::to_string(h.len) + " bytes)"),
          false);
      return true;
    }
    Status st = HandleFrameLocked(p, h);
    p.in.Consume(bytes);
    avail -= bytes;
    any = true;
    if (!st.ok()) {
      FailPeerLocked(p, st, false);
      return true;
    }
    if (!p.failed.ok()) return true;
  }
  return any;
}

Status Engine::HandleFrameLocked(Peer& p, const FrameHeader& h) {
  switch (h.kind) {
    case kFrameMsg:
      if (p.incoming.active) break;
      StartIncomingLocked(p, h.tag, h.total);
      return ContinueIncomingLocked(p, h.len);
    case kFrameData:
      if (!p.incoming.active) break;
      return ContinueIncomingLocked(p, h.len);
    case kFrameRts:
      if (auto recv = TakePostedLocked(p, h.tag)) {
        if (recv->size != h.total) {
          CompleteLocked(*recv, SizeMismatch(p.rank, h.total, recv->size, h.tag));
          QueueFinLocked(p, h.id, kFinSizeMismatch, recv->size);
        } else {
          p.pulls.push_back(Pull{std::move(recv), h.aux, h.id});
        }
      } else {
        auto u = std::make_unique<Unexpected>();
        u->tag = h.tag;
        u->size = h.total;
        u->rndv = true;
        u->id = h.id;
        u->addr = h.aux;
        p.unexpected[h.tag].push_back(std::move(u));
      }
      return Status::Ok();
    case kFrameFin:
      HandleFinLocked(p, h);
      return Status::Ok();
    default:
      break;
  }
  return DataLossError("shm: protocol error from rank " + std::to_string(p.rank) + ": frame kind " +
                       std::to_string(h.kind) +
                       (p.incoming.active ? " inside a message" : " outside a message"));
}

void Engine::StartIncomingLocked(Peer& p, uint64_t tag, uint64_t total) {
  Incoming& in = p.incoming;
  in = Incoming{};
  in.active = true;
  in.total = total;
  if (ShmRequestPtr recv = TakePostedLocked(p, tag)) {
    if (recv->size != total) {
      CompleteLocked(*recv, SizeMismatch(p.rank, total, recv->size, tag));
    } else {
      in.dest = recv->data;
      in.recv = std::move(recv);
    }
    return;
  }
  // Copy it out of the ring even though nobody wants it yet: the ring must keep moving or later
  // messages with other tags would queue behind this one.
  auto u = std::make_unique<Unexpected>();
  u->tag = tag;
  u->size = total;
  if (total > 0) u->data = std::make_unique_for_overwrite<uint8_t[]>(total);
  in.unexpected = u.get();
  in.dest = u->data.get();
  p.unexpected[tag].push_back(std::move(u));
}

Status Engine::ContinueIncomingLocked(Peer& p, uint64_t len) {
  Incoming& in = p.incoming;
  if (len > in.total - in.got) {
    return DataLossError("shm: rank " + std::to_string(p.rank) + " sent more than the " +
                         std::to_string(in.total) + " bytes it announced");
  }
  if (in.dest != nullptr && len > 0) p.in.ReadAt(sizeof(FrameHeader), in.dest + in.got, len);
  in.got += len;
  if (in.unexpected != nullptr) in.unexpected->received = in.got;
  if (in.got == in.total) {
    if (in.recv) CompleteLocked(*in.recv, Status::Ok());
    in = Incoming{};
  }
  return Status::Ok();
}

void Engine::HandleFinLocked(Peer& p, const FrameHeader& h) {
  auto it = p.awaiting_fin.find(h.id);
  if (it == p.awaiting_fin.end()) return;  // its send was aborted meanwhile
  ShmRequestPtr send = std::move(it->second);
  p.awaiting_fin.erase(it);
  Status st;
  if (h.aux == kFinSizeMismatch) {
    st = InvalidArgumentError("shm: rank " + std::to_string(p.rank) + " posted a receive of " +
                              std::to_string(h.total) + " bytes for the " +
                              std::to_string(send->size) + "-byte message sent to it (tag " +
                              Hex(send->tag) + "); message dropped");
  } else if (h.aux == kFinCopyFailed) {
    st = InternalError("shm: rank " + std::to_string(p.rank) + " could not copy the " +
                       std::to_string(send->size) + "-byte message (tag " + Hex(send->tag) +
                       ") with process_vm_readv: " + std::strerror(static_cast<int>(h.total)));
  }
  CompleteLocked(*send, std::move(st));
}

bool Engine::PullsLocked(Peer& p) {
  bool any = false;
  while (!p.pulls.empty()) {
    // A pid is reused only after its process is gone; check first so we never read a stranger.
    if (!p.same_process && PeerExited(p)) {
      FailPeerLocked(p, ExitedStatus(p), true);
      return true;
    }
    Pull pull = std::move(p.pulls.front());
    p.pulls.pop_front();
    any = true;
    ShmRequest& recv = *pull.recv;
    int err = CmaRead(p.pid, recv.data, pull.addr, recv.size);
    if (err == 0) {
      cma_bytes_ += recv.size;
      CompleteLocked(recv, Status::Ok());
      QueueFinLocked(p, pull.id, kFinOk, 0);
    } else if (err == ESRCH) {
      Status st = ExitedStatus(p);
      CompleteLocked(recv, st);
      FailPeerLocked(p, st, true);
      return true;
    } else {
      CompleteLocked(recv, InternalError("shm: copying the " + std::to_string(recv.size) +
                                         "-byte message (tag " + Hex(recv.tag) + ") from rank " +
                                         std::to_string(p.rank) +
                                         " with process_vm_readv failed: " + std::strerror(err)));
      QueueFinLocked(p, pull.id, kFinCopyFailed, static_cast<uint64_t>(err));
    }
  }
  return any;
}

bool Engine::PushLocked(Peer& p) {
  bool wrote = false;
  uint64_t free = p.out.Free();
  while (!p.control.empty() && free >= FrameBytes(0)) {
    p.out.WriteFrame(p.control.front(), nullptr, 0);
    p.control.pop_front();
    free -= FrameBytes(0);
    wrote = true;
  }
  if (!p.control.empty()) return wrote;
  // Fragments of a quarter ring keep the copy pipelined; below a sixteenth we rather wait for
  // the receiver to free more than pay a header per sliver.
  const uint64_t max_frag = p.out.capacity() / 4;
  const uint64_t min_frag = p.out.capacity() / 16;
  while (!p.sends.empty() && free >= FrameBytes(0)) {
    ShmRequest& s = *p.sends.front();
    FrameHeader h;
    if (s.rndv) {
      h.kind = kFrameRts;
      h.tag = s.tag;
      h.total = s.size;
      h.id = s.id;
      h.aux = reinterpret_cast<uintptr_t>(s.data);
      p.out.WriteFrame(h, nullptr, 0);
      free -= FrameBytes(0);
      p.awaiting_fin.emplace(s.id, std::move(p.sends.front()));
      p.sends.pop_front();
      wrote = true;
      continue;
    }
    const uint64_t want = std::min(s.size - s.sent, max_frag);
    const uint64_t room = free - sizeof(FrameHeader);  // free and the header are 8-aligned
    uint64_t len = want;
    if (room < want) {
      if (room < min_frag) break;
      len = room;
    }
    if (!s.started) {
      h.kind = kFrameMsg;
      h.tag = s.tag;
      h.total = s.size;
      h.id = s.id;
    } else {
      h.kind = kFrameData;
    }
    h.len = static_cast<uint32_t>(len);
    p.out.WriteFrame(h, s.data + s.sent, len);
    free -= FrameBytes(len);
    s.started = true;
    s.sent += len;
    ring_payload_bytes_ += len;
    wrote = true;
    if (s.sent == s.size) {
      CompleteLocked(s, Status::Ok());
      p.sends.pop_front();
    }
  }
  return wrote;
}

ShmRequestPtr Engine::TakePostedLocked(Peer& p, uint64_t tag) {
  auto it = p.posted.find(tag);
  if (it == p.posted.end()) return nullptr;
  ShmRequestPtr req = std::move(it->second.front());
  it->second.pop_front();
  if (it->second.empty()) p.posted.erase(it);
  return req;
}

bool Engine::MatchUnexpectedLocked(Peer& p, const ShmRequestPtr& req) {
  auto it = p.unexpected.find(req->tag);
  if (it == p.unexpected.end()) return false;
  std::unique_ptr<Unexpected> u = std::move(it->second.front());
  it->second.pop_front();
  if (it->second.empty()) p.unexpected.erase(it);
  Incoming& in = p.incoming;
  const bool arriving = in.active && in.unexpected == u.get();
  if (arriving) in.unexpected = nullptr;
  if (u->size != req->size) {
    CompleteLocked(*req, SizeMismatch(p.rank, u->size, req->size, req->tag));
    if (u->rndv) QueueFinLocked(p, u->id, kFinSizeMismatch, req->size);
    if (arriving) in.dest = nullptr;  // drop the rest of it as it arrives
    return true;
  }
  if (u->rndv) {
    p.pulls.push_back(Pull{req, u->addr, u->id});
    return true;
  }
  if (u->received > 0) std::memcpy(req->data, u->data.get(), u->received);
  if (arriving) {
    // The rest lands straight in the receive's buffer.
    in.recv = req;
    in.dest = req->data;
  } else {
    CompleteLocked(*req, Status::Ok());
  }
  return true;
}

void Engine::QueueFinLocked(Peer& p, uint64_t id, FinCode code, uint64_t detail) {
  FrameHeader h;
  h.kind = kFrameFin;
  h.id = id;
  h.aux = code;
  h.total = detail;
  p.control.push_back(h);
}

void Engine::FailPeerLocked(Peer& p, const Status& why, bool keep_delivered) {
  if (!p.failed.ok()) return;
  p.failed = why;
  for (auto& s : p.sends) CompleteLocked(*s, why);
  p.sends.clear();
  for (auto& [id, s] : p.awaiting_fin) CompleteLocked(*s, why);
  p.awaiting_fin.clear();
  for (auto& [tag, q] : p.posted) {
    for (auto& r : q) CompleteLocked(*r, why);
  }
  p.posted.clear();
  for (auto& pull : p.pulls) CompleteLocked(*pull.recv, why);
  p.pulls.clear();
  if (p.incoming.recv) CompleteLocked(*p.incoming.recv, why);
  p.incoming = Incoming{};
  p.control.clear();
  // Messages that arrived whole before a peer exited can still be received.
  for (auto it = p.unexpected.begin(); it != p.unexpected.end();) {
    auto& q = it->second;
    for (auto u = q.begin(); u != q.end();) {
      bool whole = keep_delivered && !(*u)->rndv && (*u)->received == (*u)->size;
      u = whole ? u + 1 : q.erase(u);
    }
    it = q.empty() ? p.unexpected.erase(it) : std::next(it);
  }
}

bool Engine::PeerExited(const Peer& p) const {
  if (p.pidfd.valid()) {
    pollfd pfd{p.pidfd.get(), POLLIN, 0};
    return poll(&pfd, 1, 0) > 0;
  }
  return kill(p.pid, 0) != 0 && errno == ESRCH;
}

void Engine::CheckLivenessLocked() {
  last_liveness_check_ = Clock::now();
  for (int r : connected_) {
    Peer& p = *peers_[r];
    if (p.same_process || !p.failed.ok() || !p.HasPending() || !PeerExited(p)) continue;
    // Deliver what it finished writing before it died, then fail the rest.
    PeerProgressLocked(p);
    FailPeerLocked(p, ExitedStatus(p), true);
    // It may have died before unlinking its name.
    shm_unlink(p.segment.name().c_str());
  }
}

void Engine::NotifyLocalLocked() {
  if (!completed_) return;
  completed_ = false;
  // Another thread of this rank may sleep on a request we just completed.
  if (own_.valid() && own_.header()->sleepers.load(std::memory_order_seq_cst) != 0) {
    RingDoorbell(own_.header());
  }
}

template <typename Done>
bool Engine::PumpUntil(Done done, Deadline deadline, std::chrono::microseconds spin) {
  SegmentHeader* own = own_.header();
  auto pass = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    ProgressLocked();
    return done();
  };
  for (;;) {
    // Poll first: a wake-up costs tens of microseconds, most answers come sooner. Yielding now
    // and then lets a peer on the same core (oversubscribed runs) produce that answer.
    const auto spin_until = Clock::now() + spin;
    for (int polls = 1;; ++polls) {
      if (pass()) return true;
      if (polls % 16 == 0 || spin.count() == 0) {
        if (deadline.Expired()) return false;
        if (Clock::now() >= spin_until) break;
        sched_yield();
      } else {
        for (int i = 0; i < 4; ++i) CpuRelax();
      }
    }
    // Sleep: announce it, re-check, then wait on the doorbell value sampled before the re-check,
    // so work published after the re-check has changed it and the wait returns at once.
    uint32_t bell = own->doorbell.load(std::memory_order_seq_cst);
    own->sleepers.fetch_add(1, std::memory_order_seq_cst);
    bool finished = pass();
    if (!finished && !deadline.Expired()) {
      FutexWait(&own->doorbell, bell,
                std::min<std::chrono::nanoseconds>(kSleepSlice, deadline.Remaining()),
                FutexScope::kShared);  // other processes ring it
    }
    own->sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (finished) return true;
  }
}

Status Engine::Wait(ShmRequest& req, Deadline deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++waiters_;
  }
  bool done = PumpUntil([&] { return req.done(); }, deadline, spin_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    --waiters_;
    MaybeWakePumpLocked();
  }
  if (done) return req.status();
  return DeadlineExceededError("shm: " + req.Describe() + " on rank " +
                               std::to_string(config_.rank) + " still pending at the deadline");
}

bool Engine::AnyStuckLocked() const {
  for (int r : connected_) {
    const Peer& p = *peers_[r];
    if (p.failed.ok() && (!p.sends.empty() || !p.control.empty() || p.incoming.active)) {
      return true;
    }
  }
  return false;
}

void Engine::MaybeWakePumpLocked() {
  if (waiters_ > 0 || pump_stop_ || (pump_.joinable() && !pump_idle_) || !AnyStuckLocked()) {
    return;
  }
  if (!pump_.joinable()) {
    pump_ = NamedThread("weft-shm", [this] { PumpLoop(); });
  } else {
    pump_cv_.notify_one();
  }
}

void Engine::PumpLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!pump_stop_) {
    if (waiters_ > 0 || !AnyStuckLocked()) {
      pump_idle_ = true;
      pump_cv_.wait(lock);
      pump_idle_ = false;
      continue;
    }
    lock.unlock();
    // No spinning: this thread only stands in for absent callers and should not compete with
    // them, or with the receiver it waits for, for a core.
    PumpUntil([&] { return pump_stop_ || waiters_ > 0 || !AnyStuckLocked(); }, Deadline::Infinite(),
              std::chrono::microseconds(0));
    lock.lock();
  }
}

void Engine::StopPump() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pump_stop_ = true;
    pump_cv_.notify_one();
    if (own_.valid()) RingDoorbell(own_.header());
  }
  if (pump_.joinable()) pump_.join();
}

void Engine::Abort(const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.ok()) aborted_ = why.ok() ? AbortedError("shm: transport aborted") : why;
  for (int r : connected_) FailPeerLocked(*peers_[r], aborted_, false);
  completed_ = false;
  // Wake every waiter of this rank, Connect() included.
  if (own_.valid()) RingDoorbell(own_.header());
}

void Engine::AbortPeer(int peer, const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  FailPeerLocked(*peers_[peer], why.ok() ? AbortedError("shm: endpoint aborted") : why, false);
  NotifyLocalLocked();
}

ShmStats Engine::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  ShmStats s;
  s.ring_payload_bytes = ring_payload_bytes_;
  s.cma_bytes = cma_bytes_;
  for (int r : connected_) s.cma_peers += peers_[r]->use_cma ? 1 : 0;
  return s;
}

// A handle on the engine for one peer. Thread-safe (all state is in the engine); destroying it
// cancels its pending requests. Keeps the engine alive, so misuse cannot touch freed memory.
class ShmEndpoint final : public Endpoint {
 public:
  ShmEndpoint(std::shared_ptr<Engine> engine, int peer) : engine_(std::move(engine)), peer_(peer) {}
  ~ShmEndpoint() override {
    engine_->AbortPeer(peer_,
                       CancelledError("shm: endpoint of rank " + std::to_string(engine_->rank()) +
                                      " to rank " + std::to_string(peer_) + " destroyed"));
  }
  int peer() const override { return peer_; }
  Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag) override {
    return engine_->Post(ShmRequest::Kind::kSend, peer_, const_cast<void*>(data), size, tag);
  }
  Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag) override {
    return engine_->Post(ShmRequest::Kind::kRecv, peer_, data, size, tag);
  }
  void Abort(const Status& why) override { engine_->AbortPeer(peer_, why); }

 private:
  std::shared_ptr<Engine> engine_;
  const int peer_;
};

// Owns the engine (shared with its endpoints); destroying it stops the pump thread, and the
// segments are unmapped when the last endpoint is gone too.
class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) {}
  ~ShmTransport() override { engine_->StopPump(); }
  std::string_view name() const override { return "shm"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.host_memory = true;
    c.progress = ProgressModel::kCallerDriven;
    return c;
  }
  Result<std::string> Listen() override { return engine_->Listen(); }
  bool CanConnect(const PeerInfo& self, const PeerInfo& peer) const override {
    return !self.host_id.empty() && self.host_id == peer.host_id;
  }
  Result<std::vector<std::unique_ptr<Endpoint>>> Connect(const std::vector<PeerInfo>& peers,
                                                         Deadline deadline) override {
    WEFT_RETURN_IF_ERROR(engine_->Connect(peers, deadline));
    std::vector<std::unique_ptr<Endpoint>> endpoints;
    endpoints.reserve(peers.size());
    for (const PeerInfo& info : peers) {
      endpoints.push_back(std::make_unique<ShmEndpoint>(engine_, info.rank));
    }
    return endpoints;
  }
  void Abort(const Status& why) override { engine_->Abort(why); }
  ShmStats Stats() const { return engine_->Stats(); }

 private:
  std::shared_ptr<Engine> engine_;
};

bool SafeForSegmentName(const std::string& s) {
  if (s.empty() || s.size() > 200) return false;
  for (char c : s) {
    if (c == '/' || c == '\0' || static_cast<unsigned char>(c) < 0x20) return false;
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config) {
  return CreateShmTransport(config, ShmOptions{});
}

Result<std::unique_ptr<Transport>> CreateShmTransport(const TransportConfig& config,
                                                      const ShmOptions& options) {
  if (config.world_size < 1 || config.rank < 0 || config.rank >= config.world_size) {
    return InvalidArgumentError("shm: rank " + std::to_string(config.rank) +
                                " is not in world size " + std::to_string(config.world_size));
  }
  if (!SafeForSegmentName(config.job_id)) {
    return InvalidArgumentError("shm: job_id '" + config.job_id +
                                "' cannot name a segment (empty, too long, or has '/')");
  }
  uint64_t ring = config.shm_ring_bytes != 0 ? config.shm_ring_bytes
                                             : static_cast<uint64_t>(kRingBytesKnob.GetBytes());
  ring = std::clamp<uint64_t>((ring + 63) / 64 * 64, kMinRingBytes, kMaxRingBytes);
  uint64_t eager = config.shm_eager_bytes != 0 ? config.shm_eager_bytes
                                               : static_cast<uint64_t>(kEagerBytesKnob.GetBytes());
  bool cma = options.cma.value_or(kCmaKnob.GetBool());
  auto spin = std::chrono::microseconds(std::max<int64_t>(0, kSpinUsKnob.GetInt()));
  auto engine = std::make_shared<Engine>(config, ring, eager, cma, spin);
  return std::unique_ptr<Transport>(new ShmTransport(std::move(engine)));
}

Result<ShmStats> GetShmStats(const Transport& transport) {
  const auto* shm = dynamic_cast<const ShmTransport*>(&transport);
  if (shm == nullptr) {
    return InvalidArgumentError("GetShmStats: transport '" + std::string(transport.name()) +
                                "' is not shm");
  }
  return shm->Stats();
}

}  // namespace weft::transport::shm
