// The MPI transport.
//
// Wire format, on a duplicate of MPI_COMM_WORLD owned by one transport:
//   MPI tag 0 (control): a 24-byte header {weft tag u64, size u64, data MPI tag i32, flags u32},
//     followed by the payload itself when it is at most WEFT_MPI_EAGER_BYTES (flag kInline).
//   MPI tag 1 (hello): 8 bytes exchanged by Connect() with every peer, a fingerprint of the job id.
//   MPI tags 2..MPI_TAG_UB (data): a larger payload, in pieces of at most 1 GiB (MPI counts are
//     ints), on the data tag its header named. The sender cycles data tags per peer, so two
//     messages in flight share one only after MPI_TAG_UB - 1 others from the same sender.
// The receiver probes control messages with MPI_Improbe/MPI_Mrecv in arrival order (MPI keeps
// one source's messages of one tag in order), matches each header against the receives posted for
// that peer and tag (FIFO), and otherwise keeps it as unexpected: inline payloads are kept in
// memory, larger ones stay in MPI (its own unexpected queue or rendezvous protocol) until a
// receive is posted, then land in the user's buffer with no extra copy. A size mismatch fails the
// receive and drains the message into a scratch buffer.
//
// Progress: posts are queued under a mutex and every MPI call on the data path happens in
// Progress(), which holds the progress lock: the transport's own lock under MPI_THREAD_MULTIPLE,
// one process-wide lock otherwise. Without MPI_THREAD_MULTIPLE only the progress thread runs
// Progress(); the few calls outside it (Listen's MPI_Comm_dup, Connect's hello, Abort's
// MPI_Cancel, shutdown) take the same process-wide lock, so no two MPI calls ever overlap, which
// is what MPI_THREAD_SERIALIZED asks. The progress thread runs it
// in a loop: busy (yielding) while there was recent activity or someone waits, then backing off
// in sleeps up to WEFT_MPI_POLL_MAX_US, because MPI offers no descriptor to block on. Under
// MPI_THREAD_MULTIPLE a waiter also runs Progress() itself while it spins, which takes the
// thread hand-off out of small-message latency.
#include "transport/mpi/mpi_transport.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "base/env.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "base/thread_name.h"

namespace weft::transport::mpi {
namespace {

WEFT_ENV_KNOB(kEagerKnob, "WEFT_MPI_EAGER_BYTES", "8K",
              "mpi transport: messages up to this size travel inside their header message");
WEFT_ENV_KNOB(kSpinKnob, "WEFT_MPI_SPIN_US", "50",
              "mpi transport: how long a wait (and the progress thread after activity) polls "
              "before sleeping");
WEFT_ENV_KNOB(kFunnelKnob, "WEFT_MPI_FUNNEL", "0",
              "mpi transport: 1 funnels MPI calls through the progress thread even when MPI "
              "provides MPI_THREAD_MULTIPLE (as it must without it)");
WEFT_ENV_KNOB(kPollMaxKnob, "WEFT_MPI_POLL_MAX_US", "1000",
              "mpi transport: longest sleep of the idle progress thread between MPI polls");

constexpr int kCtrlTag = 0;
constexpr int kHelloTag = 1;
constexpr int kFirstDataTag = 2;
constexpr size_t kMaxPiece = size_t{1} << 30;
constexpr uint32_t kInline = 1;

struct Header {
  uint64_t tag;
  uint64_t size;
  int32_t data_tag;
  uint32_t flags;
};
static_assert(sizeof(Header) == 24);

std::string TagText(uint64_t tag) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(tag));
  return buf;
}

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}

int ThreadLevel() {
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  return level;
}

std::mutex& GlobalMpiLock() {
  static std::mutex mu;
  return mu;
}

class Engine;

class MpiRequest final : public Request {
 public:
  MpiRequest(bool send, int peer, uint64_t tag, size_t size, std::weak_ptr<Engine> engine)
      : send_(send), peer_(peer), tag_(tag), size_(size), engine_(std::move(engine)) {}
  bool Test() override;
  bool Done() const override { return done(); }
  Status Wait(Deadline deadline) override;
  Status status() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  // Completes once; later calls are ignored (an abort racing a completion).
  void Complete(Status s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_.load(std::memory_order_relaxed)) return;
      status_ = std::move(s);
      done_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
  }
  bool done() const { return done_.load(std::memory_order_acquire); }
  std::string Describe() const {
    return std::string(send_ ? "send" : "receive") + " of " + std::to_string(size_) + " bytes " +
           (send_ ? "to" : "from") + " rank " + std::to_string(peer_) + " (mpi, tag " +
           TagText(tag_) + ")";
  }

 private:
  const bool send_;
  const int peer_;
  const uint64_t tag_;
  const size_t size_;
  const std::weak_ptr<Engine> engine_;
  std::atomic<bool> done_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status status_;
};

// One message's MPI requests: completes its weft request when the last one finishes.
struct Transfer {
  std::shared_ptr<MpiRequest> req;  // null for a drain
  int remaining = 0;
  Status status;
  std::vector<char> buffer;  // staged header + inline payload, or the drain buffer
  bool recv = false;
  int mpi_peer = -1;
};

struct PostedRecv {
  std::shared_ptr<MpiRequest> req;
  void* buf;
  size_t size;
  uint64_t tag;
};

struct Unexpected {
  Header h;
  std::vector<char> payload;  // inline payloads only
};

struct PostOp {
  bool send;
  int mpi_peer;
  int weft_peer;
  void* buf;
  size_t size;
  uint64_t tag;
  std::shared_ptr<MpiRequest> req;
};

struct PeerState {
  int weft_rank = -1;
  std::deque<PostedRecv> posted;
  std::deque<Unexpected> unexpected;
  uint32_t next_data = 0;
  Status aborted;
};

// The state every MPI call touches. Shared by the transport, its endpoints and (weakly) requests.
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(MPI_Comm comm, int tag_ub, bool callers_progress, int weft_rank)
      : comm_(comm),
        tag_ub_(tag_ub),
        callers_progress_(callers_progress),
        progress_mu_(callers_progress ? &own_mu_ : &GlobalMpiLock()),
        weft_rank_(weft_rank) {
    int n = 0;
    MPI_Comm_size(comm_, &n);
    peers_.resize(n);
    endpoint_aborted_.assign(n, Status::Ok());
    eager_ = static_cast<size_t>(std::max<int64_t>(0, kEagerKnob.GetBytes()));
    spin_ = std::chrono::microseconds(std::max<int64_t>(0, kSpinKnob.GetInt()));
    poll_max_ = std::chrono::microseconds(std::max<int64_t>(10, kPollMaxKnob.GetInt()));
  }
  ~Engine() { Shutdown(); }

  void SetPeer(int mpi_rank, int weft_rank) { peers_[mpi_rank].weft_rank = weft_rank; }
  bool callers_progress() const { return callers_progress_; }
  std::chrono::microseconds spin() const { return spin_; }

  void StartThread() {
    std::lock_guard<std::mutex> lock(mu_);
    if (thread_.joinable() || stop_) return;
    thread_ = NamedThread("weft-mpi", [this] { Loop(); });
  }

  Result<RequestPtr> Post(bool send, int mpi_peer, void* buf, size_t size, uint64_t tag) {
    int weft_peer = peers_[mpi_peer].weft_rank;
    if (buf == nullptr && size > 0) {
      return InvalidArgumentError(std::string(send ? "send" : "receive") + " of " +
                                  std::to_string(size) + " bytes with a null buffer (mpi, rank " +
                                  std::to_string(weft_peer) + ")");
    }
    auto req = std::make_shared<MpiRequest>(send, weft_peer, tag, size, weak_from_this());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_.ok()) return aborted_;
      if (!endpoint_aborted_[mpi_peer].ok()) return endpoint_aborted_[mpi_peer];
      queue_.push_back(PostOp{send, mpi_peer, weft_peer, buf, size, tag, req});
      ++wake_seq_;
    }
    cv_.notify_one();
    if (callers_progress_) TryProgress();
    return RequestPtr(req);
  }

  // Runs one progress pass unless another thread is in one. Returns whether anything happened.
  bool TryProgress() {
    std::unique_lock<std::mutex> lock(*progress_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    return ProgressLocked();
  }

  void WaiterArrives() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiters_.fetch_add(1);
      ++wake_seq_;
    }
    cv_.notify_one();
  }
  void WaiterLeaves() { waiters_.fetch_sub(1); }

  // Fails every pending request (of one MPI peer, or all with peer -1) and refuses new ones.
  void Abort(const Status& why, int mpi_peer) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (mpi_peer < 0) {
        if (aborted_.ok()) aborted_ = why;
      } else {
        if (endpoint_aborted_[mpi_peer].ok()) endpoint_aborted_[mpi_peer] = why;
      }
    }
    std::lock_guard<std::mutex> lock(*progress_mu_);
    ProgressLocked();  // takes queued posts in, so that they fail too
    AbortLocked(why, mpi_peer);
  }

  // Stops the thread, cancels what MPI still holds for receives, gives sends a moment to finish,
  // and frees the communicator. Idempotent.
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ && comm_ == MPI_COMM_NULL) return;
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(*progress_mu_);
    if (comm_ == MPI_COMM_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) {
      WEFT_LOG(WARN) << "mpi transport destroyed after MPI_Finalize; its MPI state is leaked";
      comm_ = MPI_COMM_NULL;
      return;
    }
    AbortLocked(CancelledError("mpi transport destroyed"), -1);
    Deadline d = Deadline::AfterMs(1000);
    while (!inflight_.empty() && !d.Expired()) {
      if (!ProgressLocked()) std::this_thread::yield();
    }
    for (auto& r : inflight_) {
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }
    if (!inflight_.empty()) {
      WEFT_LOG(WARN) << "mpi transport: " << inflight_.size()
                     << " MPI sends still unmatched at shutdown were released";
    }
    inflight_.clear();
    owners_.clear();
    MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }

  // Connect's hello: every rank sends its fingerprint to each peer and checks theirs.
  // The lock is taken per poll, not across the wait, so that (under MPI_THREAD_SERIALIZED, where
  // it is process-wide) older transports keep progressing while peers arrive.
  Status Hello(const std::vector<int>& mpi_peers, uint64_t fingerprint, Deadline deadline) {
    std::unique_lock<std::mutex> lock(*progress_mu_);
    size_t n = mpi_peers.size();
    std::vector<uint64_t> in(n, 0);
    std::vector<MPI_Request> sends(n, MPI_REQUEST_NULL), recvs(n, MPI_REQUEST_NULL);
    for (size_t i = 0; i < n; ++i) {
      int rc = MPI_Isend(&fingerprint, 8, MPI_BYTE, mpi_peers[i], kHelloTag, comm_, &sends[i]);
      if (rc == MPI_SUCCESS) {
        rc = MPI_Irecv(&in[i], 8, MPI_BYTE, mpi_peers[i], kHelloTag, comm_, &recvs[i]);
      }
      if (rc != MPI_SUCCESS) return UnavailableError("mpi hello: " + MpiErrorText(rc));
    }
    std::vector<bool> got(n, false);
    size_t left = n;
    while (left > 0 && !deadline.Expired()) {
      if (!lock.owns_lock()) lock.lock();
      for (size_t i = 0; i < n; ++i) {
        if (got[i]) continue;
        int flag = 0;
        MPI_Test(&recvs[i], &flag, MPI_STATUS_IGNORE);
        if (flag) {
          got[i] = true;
          --left;
        }
      }
      if (left > 0) {
        lock.unlock();
        std::this_thread::yield();
      }
    }
    if (!lock.owns_lock()) lock.lock();
    std::string missing, foreign;
    for (size_t i = 0; i < n; ++i) {
      std::string who = std::to_string(peers_[mpi_peers[i]].weft_rank);
      if (!got[i]) {
        MPI_Cancel(&recvs[i]);
        MPI_Wait(&recvs[i], MPI_STATUS_IGNORE);
        missing += (missing.empty() ? "" : ", ") + who;
      } else if (in[i] != fingerprint) {
        foreign += (foreign.empty() ? "" : ", ") + who;
      }
    }
    // Eight-byte sends are eager; they complete once MPI has them (or are cancelled with them).
    for (auto& s : sends) {
      int flag = 0;
      MPI_Test(&s, &flag, MPI_STATUS_IGNORE);
      if (!flag) MPI_Request_free(&s);
    }
    if (!missing.empty()) {
      return DeadlineExceededError("mpi transport: ranks " + missing +
                                   " did not answer the hello in time");
    }
    if (!foreign.empty()) {
      return FailedPreconditionError("mpi transport: ranks " + foreign +
                                     " belong to another job or communicator (job id differs)");
    }
    return Status::Ok();
  }

 private:
  void Loop() {
    auto last_activity = Clock::now();
    auto backoff = std::chrono::microseconds(10);
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      bool did;
      {
        std::lock_guard<std::mutex> lock(*progress_mu_);
        did = ProgressLocked();
      }
      auto now = Clock::now();
      if (did) {
        last_activity = now;
        backoff = std::chrono::microseconds(10);
        continue;
      }
      if (now - last_activity < spin_ || (waiters_.load() > 0 && now - last_activity < 4 * spin_)) {
        std::this_thread::yield();
        continue;
      }
      // Nothing moved for a while: poll less often, sooner again when someone posts or waits.
      std::unique_lock<std::mutex> lock(mu_);
      auto cap =
          waiters_.load() > 0 ? std::min(poll_max_, std::chrono::microseconds(200)) : poll_max_;
      backoff = std::min(cap, backoff * 2);
      bool woken = cv_.wait_for(lock, backoff, [&] { return stop_ || wake_seq_ != seen_seq_; });
      seen_seq_ = wake_seq_;
      if (woken) {
        last_activity = Clock::now();
        backoff = std::chrono::microseconds(10);
      }
    }
  }

  bool ProgressLocked() {
    if (comm_ == MPI_COMM_NULL) return false;
    bool did = false;
    std::vector<PostOp> ops;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ops.swap(queue_);
    }
    for (auto& op : ops) {
      did = true;
      Status refused = PeerRefusal(op.mpi_peer);
      if (!refused.ok()) {
        op.req->Complete(refused);
      } else if (op.send) {
        StartSend(op);
      } else {
        StartRecv(op);
      }
    }
    for (int i = 0; i < 64; ++i) {
      int flag = 0;
      MPI_Message msg;
      MPI_Status st;
      if (MPI_Improbe(MPI_ANY_SOURCE, kCtrlTag, comm_, &flag, &msg, &st) != MPI_SUCCESS || !flag) {
        break;
      }
      did = true;
      int count = 0;
      MPI_Get_count(&st, MPI_BYTE, &count);
      std::vector<char> bytes(static_cast<size_t>(std::max(count, 0)));
      MPI_Mrecv(bytes.data(), count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      OnHeader(st.MPI_SOURCE, std::move(bytes));
    }
    if (!inflight_.empty()) {
      int n = static_cast<int>(inflight_.size()), outcount = 0;
      indices_.resize(n);
      statuses_.resize(n);
      int rc = MPI_Testsome(n, inflight_.data(), &outcount, indices_.data(), statuses_.data());
      if (outcount != MPI_UNDEFINED && outcount > 0) {
        did = true;
        for (int k = 0; k < outcount; ++k) {
          int idx = indices_[k];
          auto& t = owners_[idx];
          int err = rc == MPI_ERR_IN_STATUS ? statuses_[k].MPI_ERROR : MPI_SUCCESS;
          int cancelled = 0;
          if (t->recv) MPI_Test_cancelled(&statuses_[k], &cancelled);
          if (t->status.ok() && err != MPI_SUCCESS) {
            t->status = UnavailableError("MPI: " + MpiErrorText(err));
          } else if (t->status.ok() && cancelled) {
            t->status = CancelledError("cancelled");
          }
          if (--t->remaining == 0 && t->req) {
            if (t->status.ok()) {
              t->req->Complete(Status::Ok());
            } else {
              t->req->Complete(
                  Status(t->status.code(), t->req->Describe() + ": " + t->status.message()));
            }
          }
          owners_[idx].reset();
        }
        size_t w = 0;
        for (size_t r = 0; r < inflight_.size(); ++r) {
          if (owners_[r]) {
            inflight_[w] = inflight_[r];
            owners_[w] = std::move(owners_[r]);
            ++w;
          }
        }
        inflight_.resize(w);
        owners_.resize(w);
      }
    }
    return did;
  }

  Status PeerRefusal(int mpi_peer) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_.ok()) return aborted_;
    return endpoint_aborted_[mpi_peer];
  }

  void Track(MPI_Request r, const std::shared_ptr<Transfer>& t) {
    inflight_.push_back(r);
    owners_.push_back(t);
  }

  void FailStart(const std::shared_ptr<Transfer>& t, int rc, const char* what) {
    t->status = UnavailableError(std::string(what) + ": " + MpiErrorText(rc));
    if (t->remaining == 0 && t->req) {
      t->req->Complete(Status(t->status.code(), t->req->Describe() + ": " + t->status.message()));
    }
  }

  void StartSend(PostOp& op) {
    auto t = std::make_shared<Transfer>();
    t->req = op.req;
    t->mpi_peer = op.mpi_peer;
    Header h{op.tag, op.size, 0, 0};
    bool inline_payload = op.size <= eager_;
    if (inline_payload) {
      h.flags = kInline;
    } else {
      uint32_t span = static_cast<uint32_t>(tag_ub_ - kFirstDataTag + 1);
      h.data_tag = kFirstDataTag + static_cast<int32_t>(peers_[op.mpi_peer].next_data++ % span);
    }
    t->buffer.resize(sizeof(Header) + (inline_payload ? op.size : 0));
    std::memcpy(t->buffer.data(), &h, sizeof(h));
    if (inline_payload && op.size > 0) std::memcpy(t->buffer.data() + sizeof(h), op.buf, op.size);
    MPI_Request r;
    int rc = MPI_Isend(t->buffer.data(), static_cast<int>(t->buffer.size()), MPI_BYTE, op.mpi_peer,
                       kCtrlTag, comm_, &r);
    if (rc != MPI_SUCCESS) return FailStart(t, rc, "MPI_Isend of the header");
    ++t->remaining;
    Track(r, t);
    if (inline_payload) return;
    for (size_t off = 0; off < op.size; off += kMaxPiece) {
      int n = static_cast<int>(std::min(kMaxPiece, op.size - off));
      rc = MPI_Isend(static_cast<char*>(op.buf) + off, n, MPI_BYTE, op.mpi_peer, h.data_tag, comm_,
                     &r);
      if (rc != MPI_SUCCESS) return FailStart(t, rc, "MPI_Isend of the data");
      ++t->remaining;
      Track(r, t);
    }
  }

  void StartRecv(PostOp& op) {
    PeerState& p = peers_[op.mpi_peer];
    PostedRecv pr{op.req, op.buf, op.size, op.tag};
    for (auto it = p.unexpected.begin(); it != p.unexpected.end(); ++it) {
      if (it->h.tag != op.tag) continue;
      Unexpected u = std::move(*it);
      p.unexpected.erase(it);
      Match(op.mpi_peer, u.h, u.payload.data(), pr);
      return;
    }
    p.posted.push_back(std::move(pr));
  }

  void OnHeader(int src, std::vector<char> bytes) {
    if (src < 0 || src >= static_cast<int>(peers_.size()) || bytes.size() < sizeof(Header)) {
      WEFT_LOG(WARN) << "mpi transport: malformed control message from MPI rank " << src;
      return;
    }
    Header h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    PeerState& p = peers_[src];
    for (auto it = p.posted.begin(); it != p.posted.end(); ++it) {
      if (it->tag != h.tag) continue;
      PostedRecv pr = std::move(*it);
      p.posted.erase(it);
      Match(src, h, bytes.data() + sizeof(Header), pr);
      return;
    }
    Unexpected u{h, {}};
    if (h.flags & kInline) u.payload.assign(bytes.begin() + sizeof(Header), bytes.end());
    p.unexpected.push_back(std::move(u));
  }

  // A header meets its receive: copy an inline payload, or receive the data where it belongs.
  void Match(int src, const Header& h, const char* inline_data, PostedRecv& pr) {
    bool fits = h.size == pr.size;
    if (!fits) {
      pr.req->Complete(InvalidArgumentError(
          "message of " + std::to_string(h.size) + " bytes from rank " +
          std::to_string(peers_[src].weft_rank) + " does not fit the " + std::to_string(pr.size) +
          "-byte receive (mpi, tag " + TagText(h.tag) + ")"));
    }
    if (h.flags & kInline) {
      if (fits) {
        if (h.size > 0) std::memcpy(pr.buf, inline_data, h.size);
        pr.req->Complete(Status::Ok());
      }
      return;
    }
    auto t = std::make_shared<Transfer>();
    t->recv = true;
    t->mpi_peer = src;
    char* dst;
    if (fits) {
      t->req = pr.req;
      dst = static_cast<char*>(pr.buf);
    } else {
      t->buffer.resize(h.size);  // drained and dropped
      dst = t->buffer.data();
    }
    for (size_t off = 0; off < h.size; off += kMaxPiece) {
      int n = static_cast<int>(std::min<size_t>(kMaxPiece, h.size - off));
      MPI_Request r;
      int rc = MPI_Irecv(dst + off, n, MPI_BYTE, src, h.data_tag, comm_, &r);
      if (rc != MPI_SUCCESS) return FailStart(t, rc, "MPI_Irecv of the data");
      ++t->remaining;
      Track(r, t);
    }
  }

  void AbortLocked(const Status& why, int mpi_peer) {
    for (size_t i = 0; i < peers_.size(); ++i) {
      if (mpi_peer >= 0 && static_cast<int>(i) != mpi_peer) continue;
      for (auto& pr : peers_[i].posted) pr.req->Complete(why);
      peers_[i].posted.clear();
    }
    // Receives MPI holds are cancelled (they would write into buffers the caller takes back);
    // the requests are failed now and their MPI halves retire in later passes.
    for (size_t k = 0; k < owners_.size(); ++k) {
      auto& t = owners_[k];
      if (!t->req) continue;
      if (mpi_peer >= 0 && t->mpi_peer != mpi_peer) continue;
      if (t->recv && inflight_[k] != MPI_REQUEST_NULL) MPI_Cancel(&inflight_[k]);
      t->req->Complete(why);
    }
  }

  MPI_Comm comm_;
  const int tag_ub_;
  const bool callers_progress_;
  std::mutex own_mu_;
  std::mutex* const progress_mu_;
  const int weft_rank_;
  size_t eager_ = 0;
  std::chrono::microseconds spin_{50};
  std::chrono::microseconds poll_max_{1000};

  // Guarded by mu_: the post queue, abort states, the thread's stop flag.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PostOp> queue_;
  Status aborted_;
  std::vector<Status> endpoint_aborted_;
  bool stop_ = false;
  std::thread thread_;
  std::atomic<int> waiters_{0};
  uint64_t wake_seq_ = 0;  // bumped by posts and arriving waiters
  uint64_t seen_seq_ = 0;

  // Guarded by *progress_mu_.
  std::vector<PeerState> peers_;
  std::vector<MPI_Request> inflight_;
  std::vector<std::shared_ptr<Transfer>> owners_;
  std::vector<int> indices_;
  std::vector<MPI_Status> statuses_;
};

bool MpiRequest::Test() {
  if (done()) return true;
  if (auto e = engine_.lock(); e && e->callers_progress()) e->TryProgress();
  return done();
}

Status MpiRequest::Wait(Deadline deadline) {
  if (done()) return status();
  auto engine = engine_.lock();
  auto spin_end = Clock::now() + (engine ? engine->spin() : std::chrono::microseconds(0));
  while (Clock::now() < spin_end && !deadline.Expired()) {
    if (engine && engine->callers_progress()) {
      engine->TryProgress();
    } else {
      std::this_thread::yield();
    }
    if (done()) return status();
  }
  if (engine) engine->WaiterArrives();
  {
    std::unique_lock<std::mutex> lock(mu_);
    while (!done_.load(std::memory_order_acquire) && !deadline.Expired()) {
      if (deadline.infinite()) {
        cv_.wait_for(lock, std::chrono::milliseconds(100));
      } else {
        cv_.wait_until(lock,
                       std::min(deadline.when(), Clock::now() + std::chrono::milliseconds(100)));
      }
    }
  }
  if (engine) engine->WaiterLeaves();
  if (done()) return status();
  return DeadlineExceededError(Describe() + " still pending at its deadline");
}

class MpiEndpoint final : public Endpoint {
 public:
  MpiEndpoint(std::shared_ptr<Engine> engine, int weft_peer, int mpi_peer)
      : engine_(std::move(engine)), weft_peer_(weft_peer), mpi_peer_(mpi_peer) {}
  ~MpiEndpoint() override { engine_->Abort(CancelledError("mpi endpoint destroyed"), mpi_peer_); }
  int peer() const override { return weft_peer_; }
  Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag) override {
    return engine_->Post(true, mpi_peer_, const_cast<void*>(data), size, tag);
  }
  Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag) override {
    return engine_->Post(false, mpi_peer_, data, size, tag);
  }
  void Abort(const Status& why) override { engine_->Abort(why, mpi_peer_); }

 private:
  std::shared_ptr<Engine> engine_;
  const int weft_peer_;
  const int mpi_peer_;
};

class MpiTransport final : public Transport {
 public:
  explicit MpiTransport(const TransportConfig& config) : config_(config) {}
  ~MpiTransport() override {
    if (engine_) engine_->Shutdown();
  }
  std::string_view name() const override { return "mpi"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.progress = ProgressModel::kBackgroundThread;
    return c;
  }

  Result<std::string> Listen() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (listened_) return address_;
    listened_ = true;
    int world = 0, me = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (world != config_.world_size) {
      WEFT_LOG(INFO) << "mpi transport: unused, the communicator has " << config_.world_size
                     << " ranks but MPI_COMM_WORLD " << world;
      return address_;
    }
    int level = ThreadLevel();
    std::unique_lock<std::mutex> global(GlobalMpiLock(), std::defer_lock);
    if (level < MPI_THREAD_MULTIPLE) global.lock();
    MPI_Comm comm;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (rc != MPI_SUCCESS)
      return UnavailableError("mpi transport: MPI_Comm_dup: " + MpiErrorText(rc));
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    // A fingerprint of this MPI job and transport instance, the same on every rank.
    uint64_t job = 0;
    if (me == 0) job = std::random_device{}() * 0x9e3779b97f4a7c15ull ^ std::random_device{}();
    MPI_Bcast(&job, 1, MPI_UINT64_T, 0, comm);
    int* ub = nullptr;
    int found = 0;
    MPI_Comm_get_attr(comm, MPI_TAG_UB, &ub, &found);
    int tag_ub = found && ub ? *ub : 32767;
    bool callers_progress = level == MPI_THREAD_MULTIPLE && !kFunnelKnob.GetBool();
    engine_ = std::make_shared<Engine>(comm, tag_ub, callers_progress, config_.rank);
    job_ = job;
    address_ = std::to_string(me) + "@" + std::to_string(job);
    WEFT_LOG(DEBUG) << "mpi transport: MPI rank " << me << ", MPI_TAG_UB " << tag_ub
                    << (callers_progress ? ", callers progress" : ", funnelled");
    return address_;
  }

  bool CanConnect(const PeerInfo& self, const PeerInfo& peer) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!engine_) return false;
    int mpi_rank;
    uint64_t job;
    return Parse(peer.address, &mpi_rank, &job) && job == job_;
  }

  Result<std::vector<std::unique_ptr<Endpoint>>> Connect(const std::vector<PeerInfo>& peers,
                                                         Deadline deadline) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!engine_) return FailedPreconditionError("mpi transport: not listening or not usable");
    if (connected_) return FailedPreconditionError("mpi transport: Connect() called twice");
    connected_ = true;
    std::vector<int> mpi_peers;
    for (const auto& p : peers) {
      int mpi_rank;
      uint64_t job;
      if (!Parse(p.address, &mpi_rank, &job) || job != job_) {
        return InvalidArgumentError("mpi transport: rank " + std::to_string(p.rank) +
                                    " published '" + p.address +
                                    "', not an address of this MPI job");
      }
      engine_->SetPeer(mpi_rank, p.rank);
      mpi_peers.push_back(mpi_rank);
    }
    Digest256 d = Sha256Of("weft-mpi/" + config_.job_id);
    uint64_t fingerprint;
    std::memcpy(&fingerprint, d.data(), 8);
    WEFT_RETURN_IF_ERROR(engine_->Hello(mpi_peers, fingerprint, deadline));
    engine_->StartThread();
    std::vector<std::unique_ptr<Endpoint>> out;
    for (size_t i = 0; i < peers.size(); ++i) {
      out.push_back(std::make_unique<MpiEndpoint>(engine_, peers[i].rank, mpi_peers[i]));
    }
    return out;
  }

  void Abort(const Status& why) override {
    std::shared_ptr<Engine> e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      e = engine_;
    }
    if (e) e->Abort(why, -1);
  }

 private:
  static bool Parse(const std::string& address, int* mpi_rank, uint64_t* job) {
    size_t at = address.find('@');
    if (at == std::string::npos) return false;
    int64_t r;
    if (!ParseInt(address.substr(0, at), &r) || r < 0) return false;
    char* end = nullptr;
    std::string j = address.substr(at + 1);
    unsigned long long v = std::strtoull(j.c_str(), &end, 10);
    if (j.empty() || *end != '\0') return false;
    *mpi_rank = static_cast<int>(r);
    *job = v;
    return true;
  }

  const TransportConfig config_;
  mutable std::mutex mu_;
  bool listened_ = false;
  bool connected_ = false;
  std::string address_;
  uint64_t job_ = 0;
  std::shared_ptr<Engine> engine_;
};

}  // namespace

bool MpiTransportUsable() {
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  return initialised && !finalized && ThreadLevel() >= MPI_THREAD_SERIALIZED;
}

Result<std::unique_ptr<Transport>> CreateMpiTransport(const TransportConfig& config) {
  if (!MpiTransportUsable()) {
    return FailedPreconditionError(
        "the mpi transport needs MPI initialised with at least MPI_THREAD_SERIALIZED: run under "
        "mpirun without WEFT_STORE or MASTER_ADDR (weft's MPI bootstrap initialises it) or call "
        "MPI_Init_thread before creating the communicator");
  }
  return std::unique_ptr<Transport>(new MpiTransport(config));
}

}  // namespace weft::transport::mpi
