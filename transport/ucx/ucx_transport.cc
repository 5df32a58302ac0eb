// The UCX transport's engine: UCP context and worker, connection and authentication, the
// header-based matching of ucx_wire.h, the progress thread and failure handling. See
// ucx_transport.h for the contract.
//
// Threads and locking. One mutex (Core::mu_) guards the UCP worker (created
// UCS_THREAD_MODE_SERIALIZED) and all matching state. Whoever holds it may drive the worker: the
// progress thread, a waiter spinning in Wait() (try-lock only), or a thread posting a request.
// UCP callbacks therefore always run under the mutex. Request callbacks only record an Event, and
// Drain() handles the events after the UCP call returns, so no UCP call ever re-enters our state
// while we iterate it (ucp_request_cancel and a forced ucp_ep_close_nbx call callbacks
// synchronously). The control-message callback (an active message, only ever called from inside
// ucp_worker_progress, which nothing calls while iterating our lists) matches the header itself:
// an inline payload goes straight into its receive, which completes there; what needs a UCP call
// (posting a data receive) becomes an Event.
//
// Progress modes. Waiters spin for a while (WEFT_UCX_WAIT_SPIN_US) driving the worker themselves,
// as MPI libraries do; a message that arrives while someone spins costs no thread wake-up and no
// system call, and one that completes while its waiter spins needs no futex either. Small sends
// go out eagerly and complete inside PostSend. While waiters spin or keep finishing their
// requests by spinning ("poll mode", until about 2 ms after the last such spin, and only while
// no waiter sleeps) the progress thread leaves the worker unarmed and out of its epoll set and
// only looks in once a millisecond, so senders need not signal us and the thread does not compete
// with the waiters for the worker or the core. Otherwise ("event mode": idle, or a waiter gave up
// spinning and sleeps; if it was the only spinner it arms the worker and wakes the thread itself,
// else the thread notices within a millisecond) the worker is armed (ucp_worker_arm) and the
// thread sleeps in epoll on the worker's event fd, an eventfd that posting threads write when they
// leave UCP work behind, and one pidfd per same-host peer; it then wakes every 2 ms while UCP
// operations of ours are in flight (a guard against a transport that leaves work without
// signalling the fd), every 100 ms when none are, so an idle transport costs nothing measurable.
// When it wakes for an event while a waiter sleeps on a transfer of ours, it polls for a spin's
// length before arming again (StandIn), since the rest of that transfer follows within
// microseconds. Spinning waiters poll without yielding for their first microseconds only where
// this host's ranks fit its cores (SpinTight).
#include "transport/ucx/ucx_transport.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/cpu_relax.h"
#include "base/env.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "base/recycling_allocator.h"
#include "base/socket_util.h"
#include "base/thread_name.h"
#include "transport/ucx/ucx_request.h"
#include "transport/ucx/ucx_wire.h"

namespace weft::transport::ucx {
namespace {

WEFT_ENV_KNOB(kInlineKnob, "WEFT_UCX_INLINE_BYTES", "auto",
              "UCX messages up to this size travel inside their control message (0..65536); "
              "larger ones go as a separate UCP message (eager or zero-copy rendezvous). auto: "
              "8000 to a peer UCX reaches through shared memory, 65536 to others (over tcp a "
              "separate message of 16-64 KiB costs UCP a rendezvous: 2-2.5x slower). Ranks may "
              "differ: a receiver takes an inline message of any size");

constexpr size_t kMaxInlineBytes = 64 << 10;
// The automatic inline limits (WEFT_UCX_INLINE_BYTES=auto). Over shared memory a separate data
// message is the faster way from about 16 KiB (32 KiB all-reduce, posix: 12.6 us against 14-15
// inline); over tcp inline is faster up to the cap (16 KiB 37 -> 16 us, 64 KiB 108 -> 44 us).
constexpr size_t kShmInlineBytes = 8000;
constexpr size_t kNetInlineBytes = kMaxInlineBytes;

// Whether a UCX_TLS value lets UCP reach a peer on this host through shared memory (then it
// does): empty or "all", a list naming a shared-memory transport, or an exclusion list ("^...")
// that leaves them in.
bool TlsMayUseSharedMemory(std::string_view tls) {
  bool exclude = !tls.empty() && tls.front() == '^';
  if (exclude) tls.remove_prefix(1);
  if (tls.empty()) return true;
  bool named_shm = false;
  while (!tls.empty()) {
    const size_t comma = tls.find(',');
    std::string_view t = tls.substr(0, comma);
    tls.remove_prefix(comma == std::string_view::npos ? tls.size() : comma + 1);
    if (t == "all" || t == "sm" || t == "shm") return !exclude;
    if (t == "posix" || t == "sysv" || t == "xpmem") named_shm = true;
  }
  return exclude || named_shm;
}
// Inline messages up to this size go with the short header, copied with it into one stack buffer.
constexpr size_t kImmediateBytes = 256;
// Core::Exchange polls for its answer this long (the first kExchangeTightSpin without yielding,
// where ranks fit the cores), then leaves it to a request: an 8-byte round trip takes 0.3-1 us
// over shared memory and 6-10 us over tcp here.
constexpr auto kExchangeTightSpin = std::chrono::microseconds(5);
constexpr auto kExchangeSpin = std::chrono::microseconds(50);
// Of which the first polls, up to this long, hold the worker's lock throughout (Core::Exchange).
constexpr auto kExchangeLockedSpin = std::chrono::microseconds(2);
// Data messages up to this size are sent with UCP_OP_ATTR_FLAG_FAST_CMPL, which lets UCP keep
// them eager (copied out at once) where it would otherwise start a rendezvous, as a blocking send
// does; the waiter here waits at once too. 2 ranks, all-reduce, UCX_TLS=tcp: 8 KiB 101-116 ->
// 34-35 us, 32 KiB 113-120 -> 71-74 us. Not above: over posix a 64 KiB message then took 8x
// longer (the all-reduce of 128 KiB: 67-72 -> 548-745 us).
constexpr size_t kFastDataBytes = 32 << 10;
// Control messages (and their inline bytes) kept from a peer whose half of the handshake
// finished before ours.
constexpr size_t kMaxEarlyCtrl = 4096;
constexpr size_t kMaxEarlyBytes = 16 << 20;
// Released Ops kept for reuse.
constexpr size_t kOpPool = 256;
constexpr int kIdlePollMs = 100;
constexpr int kBusyPollMs = 2;
// Poll mode lasts this long after a waiter's spin last ended in a completion.
constexpr std::chrono::nanoseconds kActiveWindow = std::chrono::milliseconds(2);
constexpr int kActivePollMs = 1;
// In poll mode with no waiter asleep the thread only has to notice the end of the active window,
// and each look takes a core from a spinning rank for a moment (2 ranks, 8-byte all-reduce over
// UCX_TLS=tcp: this thread's switches 225-262 per run at 1 ms, 34-65 at 5 ms; p99 31 -> 21 and
// 17 -> 16 us in two pairs). A waiter that goes to sleep meanwhile (while others still spin)
// wakes the thread itself (EndSpin).
constexpr int kQuietPollMs = 5;
constexpr std::chrono::milliseconds kFlushBound{200};
constexpr std::chrono::milliseconds kCloseBound{1000};
// epoll user data: small values are ours, pidfds carry kPidBase + rank.
constexpr uint64_t kEfdKey = 0;
constexpr uint64_t kWakeKey = 1;
constexpr uint64_t kPidBase = 2;

const char kHelloMagic[8] = {'w', 'e', 'f', 't', 'u', 'c', 'x', '1'};

std::string UcsText(ucs_status_t s) { return ucs_status_string(s); }

Result<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return InvalidArgumentError("odd length");
  std::string out(hex.size() / 2, '\0');
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgumentError("not hexadecimal");
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

struct Peer;
class Core;

// A receive awaited inside Core::Exchange: filled and flagged in place of a request.
struct FastRecv {
  std::atomic<bool> done{false};
  Status status;  // written before done is set
};

// One operation of ours on the worker: a send (one or two UCP messages), a receive, an
// authentication message, a flush or a close. Owned by its Core (on its live list, then back in
// its pool: a message's path allocates no Op); it is the user_data of its UCP requests, so it
// lives until they have completed.
struct Op {
  enum class Kind {
    kSend,
    kRecv,
    kDrop,
    kBye,
    kAuthSend,
    kHelloRecv,
    kProofRecv,
    kFlush,
    kClose
  };
  Op(Core* c, Kind k, Peer* p) : core(c), kind(k), peer(p) {}
  // Makes a pooled Op as new.
  void Reuse(Core* c, Kind k, Peer* p) {
    core = c;
    kind = k;
    peer = p;
    live_prev = live_next = peer_prev = peer_next = nullptr;
    in_flight = false;
    called = false;
    req.reset();
    fast = nullptr;
    parts = 0;
    ucp_reqs[0] = ucp_reqs[1] = nullptr;
    error = UCS_OK;
    hdr = CtrlHeader{};
    buf = nullptr;
    size = 0;
    tag = 0;
  }
  Core* core;
  Kind kind;
  Peer* peer;
  // Intrusive links: Core's list of live ops, and the peer's list of ops with UCP requests
  // pending (in_flight).
  Op* live_prev = nullptr;
  Op* live_next = nullptr;
  Op* peer_prev = nullptr;
  Op* peer_next = nullptr;
  bool in_flight = false;
  bool called = false;  // a UCP callback of this op ran (perhaps inside the call that started it)
  std::shared_ptr<UcxRequest> req;
  FastRecv* fast = nullptr;  // instead of req: a receive of Core::Exchange, awaited in the call
  int parts = 0;             // UCP requests not yet completed
  void* ucp_reqs[2] = {nullptr, nullptr};  // in flight; null once their callback ran
  ucs_status_t error = UCS_OK;             // first failed part
  // Sends: the control message's header (UCP reads it until the send completes).
  CtrlHeader hdr{};
  // Receives.
  char* buf = nullptr;
  size_t size = 0;
  uint64_t tag = 0;
  // Authentication messages (set before use: Reuse() leaves them).
  HelloMsg hello{};
  ProofMsg proof{};
};

// Entries keyed by tag, oldest first; the oldest of a tag matches first. A flat vector: a peer
// has few receives posted or messages waiting at once, every operation brings new tags (the
// tag carries its sequence number), and a hash map would allocate a node (and a queue) per
// message; this keeps its capacity and allocates nothing in steady state.
template <typename T>
class TagList {
 public:
  // Index of the oldest entry with `tag`, or -1.
  ptrdiff_t Find(uint64_t tag) const {
    for (size_t i = 0; i < items_.size(); ++i) {
      if (items_[i].first == tag) return static_cast<ptrdiff_t>(i);
    }
    return -1;
  }
  // Removes and returns entry i, keeping the others' order.
  T Take(ptrdiff_t i) {
    T v = std::move(items_[static_cast<size_t>(i)].second);
    items_.erase(items_.begin() + i);
    return v;
  }
  void Push(uint64_t tag, T v) { items_.emplace_back(tag, std::move(v)); }
  bool empty() const { return items_.empty(); }
  void clear() { items_.clear(); }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }

 private:
  std::vector<std::pair<uint64_t, T>> items_;
};

// A message whose header arrived before any receive matched it.
struct Arrived {
  static constexpr size_t kSmall = 64;
  uint64_t tag = 0;
  uint64_t size = 0;
  uint64_t seq = 0;
  bool is_inline = false;
  bool bye = false;
  std::unique_ptr<char[]> data;  // inline payload over kSmall bytes
  char small[kSmall];            // inline payload up to kSmall bytes (no allocation)
  const char* payload() const { return size <= kSmall ? small : data.get(); }
  void Keep(const char* p, size_t n) {
    if (n == 0) return;
    if (n <= kSmall) {
      std::memcpy(small, p, n);
    } else {
      data.reset(new char[n]);
      std::memcpy(data.get(), p, n);
    }
  }
};

struct Peer {
  Core* core = nullptr;
  int rank = -1;
  int pid = 0;
  std::string name;  // "rank 3"
  bool same_host = false;
  size_t inline_bytes = 0;  // messages to it up to this size go inline
  bool peer_mode = false;  // UCP_ERR_HANDLING_MODE_PEER
  UniqueFd pidfd;
  ucp_ep_h ep = nullptr;
  // Authentication.
  uint8_t nonce[32] = {};
  uint8_t peer_nonce[32] = {};
  bool got_hello = false;
  bool got_proof = false;
  ProofMsg proof_in{};
  bool authed = false;
  Status auth_error;
  uint64_t token_out = 0;
  uint64_t token_in = 0;
  // Control messages (header, inline payload) that arrived before Verify() authenticated it.
  std::vector<std::pair<CtrlHeader, std::string>> early;
  size_t early_bytes = 0;
  bool flushing = false;
  // Data path.
  Status failed;         // sticky: lost, refused or aborted
  bool said_bye = false;  // its transport shut down: it sends nothing more
  bool aborted = false;  // refuse even messages that had arrived
  uint64_t next_send_seq = 0;
  uint64_t next_ctrl_seq = 0;
  std::map<uint64_t, Arrived> reorder;                        // headers that overtook a lower seq
  TagList<Op*> posted;                                        // in post order
  TagList<Arrived> unexpected;                                // in seq order
  Op* inflight = nullptr;  // ops with UCP requests pending (Op::peer_next list)
};

struct Event {
  Op* op = nullptr;
  void* request = nullptr;  // to free; null for an immediate completion
  int part = 0;
  ucs_status_t status = UCS_OK;
  ucp_tag_recv_info_t info{};
  Peer* err_peer = nullptr;  // an endpoint error instead of a completion
  // Instead of a completion: `op` (a receive, or a drop) matched a header in the control-message
  // callback, and its data receive (tag kData|peer|data_seq) is to be posted.
  bool start_data = false;
  uint64_t data_seq = 0;
};

std::string ProofText(const std::string& job, int from, int to, const uint8_t* nonce_from,
                      const uint8_t* nonce_to, const char* what) {
  std::string s = std::string("weft-ucx/1 ") + what + "|" + job + "|" + std::to_string(from) + "|" +
                  std::to_string(to) + "|";
  s.append(reinterpret_cast<const char*>(nonce_from), 32);
  s.append(reinterpret_cast<const char*>(nonce_to), 32);
  return s;
}

class Core final : public Progressor, public std::enable_shared_from_this<Core> {
 public:
  // inline_bytes: nullopt for the automatic per-peer limits.
  Core(const TransportConfig& config, std::optional<size_t> inline_bytes)
      : config_(config),
        inline_bytes_(inline_bytes),
        who_("ucx rank " + std::to_string(config.rank)) {}
  ~Core() override { Shutdown(); }

  Status Init(const std::string& tls);
  Result<std::string> Listen();
  Result<std::vector<Peer*>> Connect(const std::vector<PeerInfo>& peers, Deadline deadline);
  Result<RequestPtr> PostSend(Peer* peer, const void* data, size_t size, uint64_t tag);
  Result<RequestPtr> PostRecv(Peer* peer, void* data, size_t size, uint64_t tag);
  Result<Endpoint::Exchanged> Exchange(Peer* peer, const void* send, void* recv, size_t size,
                                       uint64_t tag);
  // Fails the peer's requests and closes its endpoint. A CANCELLED `why` is an orderly teardown
  // (transport.h): the peer is told, so it sees no failure.
  void AbortPeer(Peer* peer, const Status& why);
  void Abort(const Status& why);
  void Shutdown();
  void PollOnce() override;
  // PollOnce's work, under mu_.
  void PollLocked();
  void BeginSpin() override;
  void EndSpin(bool completed) override;
  void EndSleep() override { sleepers_.fetch_sub(1, std::memory_order_seq_cst); }
  bool SpinTight() const override { return spin_tight_.load(std::memory_order_relaxed); }
  void ListenToEfd(bool on);
  UcxStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  const std::string& who() const { return who_; }

  // UCP callbacks (run under mu_, inside a UCP call).
  void PushEvent(Op* op, void* request, ucs_status_t status, const ucp_tag_recv_info_t* info) {
    Event ev;
    ev.op = op;
    ev.request = request;
    ev.status = status;
    if (info != nullptr) ev.info = *info;
    ev.part = (request != nullptr && op->ucp_reqs[1] == request) ? 1 : 0;
    op->ucp_reqs[ev.part] = nullptr;
    op->called = true;
    events_.push_back(ev);
  }
  // The control-message callback: an active message, its AM header a CtrlHeader, or (short) its
  // data starting with a ShortCtrlHeader.
  void OnCtrl(bool short_form, const void* header, size_t header_length, const char* data,
              size_t length, uint64_t recv_attr);
  void PushPeerError(Peer* peer, ucp_ep_h ep, ucs_status_t status) {
    if (peer->ep != ep) return;  // an endpoint we already closed
    Event ev;
    ev.err_peer = peer;
    ev.status = status;
    events_.push_back(ev);
  }

 private:
  Op* NewOp(Op::Kind kind, Peer* peer);
  // Completes a send's or receive's request (or an Exchange's receive record), if it has one.
  static void Finish(Op* op, Status s);
  // As PostSend, under mu_; a send done on return gives a null request (no shared completed one:
  // copying it is an atomic, which after a send waits for the send's stores to reach the peer).
  Result<RequestPtr> PostSendLocked(Peer* peer, const void* data, size_t size, uint64_t tag);
  // Posts receive `op` (its req or fast set): matched at once against a message that already
  // arrived (true), or queued on the peer (false); refused, the op released, when the peer can
  // send nothing more.
  Result<bool> PostRecvLocked(Peer* peer, Op* op, void* data, size_t size, uint64_t tag);
  // Under mu_, for a receive of Exchange still pending: a request in place of its record.
  RequestPtr StandInFor(Op* op);
  // ucp_am_send_nbx with FORCE_IMM_CMPL: UCS_OK (null), or why it was not sent.
  ucs_status_ptr_t SendImmediate(Peer* peer, unsigned am_id, const void* header,
                                 size_t header_length, const void* data, size_t length);
  void ReleaseOp(Op* op);
  void TrackInFlight(Op* op);
  void FreeAllOps();
  void StartSend(Op* op, int part, ucp_ep_h ep, const void* buf, size_t count, uint64_t tag,
                 ucp_datatype_t dt, bool fast = false);
  void StartRecv(Op* op, void* buf, size_t len, uint64_t tag, uint64_t mask);
  // Counts one more UCP request of `op` in flight and returns the parameters of its UCP call:
  // completion to a callback with `op` as user data, contiguous bytes, plus `attrs`.
  ucp_request_param_t BeginPart(Op* op, uint32_t attrs);
  // Sends a control message: `hdr` (which must live until the send completes) and `size` bytes
  // of inline payload.
  void StartCtrl(Op* op, const CtrlHeader* hdr, const void* payload, size_t size);
  // Records how a UCP call (send, receive, flush, close) that started part `part` of `op`
  // returned: its request, or an event for a completion at once or a failure.
  void Started(Op* op, int part, ucs_status_ptr_t r);
  // Posts the data receive of a matched header later, from Drain (Event::start_data).
  void StartDataLater(Op* op, uint64_t seq);
  void StartData(Op* op, uint64_t seq);
  void Drain();
  void Handle(const Event& ev);
  void ProgressLocked();
  void WakeIfSleeping();
  void Wake();
  void Run();
  void StandIn();

  void Deliver(Peer* peer, const CtrlHeader& hdr, const char* payload);
  void Match(Peer* peer, Op* recv, Arrived& a);
  // A receive matched to an inline message of its size: the payload copied in, completed.
  void CompleteInline(Op* recv, const char* payload);
  void OnHello(Op* op, const Event& ev);
  void OnProof(Op* op, const Event& ev);
  void Verify(Peer* peer);
  void SendAuth(Peer* peer, TagKind kind, const void* msg, size_t len);

  void FailPeer(Peer* peer, const Status& why, bool keep_arrived);
  void CloseEp(Peer* peer, bool force);
  void GracefulClose(const std::vector<Peer*>& peers, bool say_bye);
  // Receives and drops the messages nothing will match any more, before the worker goes.
  void DiscardUnexpected(Deadline deadline);
  void AbortLocked(const Status& why);
  void SayBye(Peer* peer);
  void OnBye(Peer* peer);
  // Completes the receives posted for `peer` that nothing matched with `why`.
  void FailPosted(Peer* peer, const Status& why);
  Status ByeStatus(const Peer* peer) const {
    return UnavailableError("ucx: " + peer->name +
                            " closed its transport (it finished or shut down)");
  }
  // Whether an abort for `why` is the owner tearing down in order (transport.h's contract).
  static bool Orderly(const Status& why) { return why.code() == StatusCode::kCancelled; }
  void OnPeerExited(Peer* peer);

  const TransportConfig config_;
  const std::optional<size_t> inline_bytes_;
  bool shm_tls_ = true;  // UCX_TLS lets UCP use shared memory (set by Init)
  const std::string who_;

  std::mutex mu_;  // guards the worker and everything below
  std::condition_variable cv_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int efd_ = -1;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};
  // The thread sleeps kQuietPollMs in poll mode (no sleepers when it looked).
  std::atomic<bool> quiet_poll_{false};
  std::atomic<int> spinners_{0};
  std::mutex efd_mu_;  // a leaf lock: serialises adding/removing the worker fd from epoll
  // Written under efd_mu_; read without it by ListenToEfd's fast path.
  std::atomic<bool> efd_listened_{true};
  // Spins that ended in a completion, counted; the progress thread notes when it last changed.
  std::atomic<uint64_t> spin_completions_{0};
  // Waiters that gave up spinning and sleep: while there are any and nobody spins, the progress
  // thread must drive the worker (event mode).
  std::atomic<int> sleepers_{0};
  // Set by Connect(): this host's ranks (this one and its same-host peers) fit its cores.
  std::atomic<bool> spin_tight_{false};
  bool shutdown_ = false;
  std::string address_;
  bool connect_started_ = false;
  Status aborted_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unordered_map<int, Peer*> by_rank_;
  Op* live_ops_ = nullptr;                     // every Op in use (Op::live_next list); owned
  std::vector<std::unique_ptr<Op>> free_ops_;  // released Ops kept for reuse
  std::vector<Event> events_;
  std::vector<Event> drain_batch_;  // Drain()'s batch being handled; kept for its capacity
  uint64_t handled_ = 0;            // events handled, ever
  uint64_t delivered_ = 0;          // receives completed inside the control-message callback
  // What a send UCP completed inside PostSend returns: a request already complete (OK) and
  // shared, so the latency path allocates and completes no request of its own.
  const std::shared_ptr<UcxRequest> done_ = [] {
    auto r = std::make_shared<UcxRequest>(UcxRequest::Kind::kSend, -1, 0, 0,
                                          std::weak_ptr<Progressor>());
    r->Complete(Status::Ok());
    return r;
  }();
  int busy_ops_ = 0;                // sends, data receives, flushes and closes in flight
  UcxStats stats_;
};

// ---- UCP callbacks -----------------------------------------------------------------------------

void SendCallback(void* request, ucs_status_t status, void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  op->core->PushEvent(op, request, status, nullptr);
}

void RecvCallback(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                  void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  op->core->PushEvent(op, request, status, info);
}

ucs_status_t CtrlCallback(void* arg, const void* header, size_t header_length, void* data,
                          size_t length, const ucp_am_recv_param_t* param) {
  static_cast<Core*>(arg)->OnCtrl(false, header, header_length, static_cast<const char*>(data),
                                  length, param->recv_attr);
  return UCS_OK;  // done with `data`: whatever we keep was copied
}

ucs_status_t ShortCtrlCallback(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param) {
  static_cast<Core*>(arg)->OnCtrl(true, header, header_length, static_cast<const char*>(data),
                                  length, param->recv_attr);
  return UCS_OK;
}

void EpErrorCallback(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->core->PushPeerError(peer, ep, status);
}

// ---- Setup -------------------------------------------------------------------------------------

Status Core::Init(const std::string& tls) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return UnavailableError(who_ + ": ucp_config_read: " + UcsText(st));
  const char* env_tls = std::getenv("UCX_TLS");
  shm_tls_ = TlsMayUseSharedMemory(!tls.empty() ? tls : env_tls != nullptr ? env_tls : "");
  if (!tls.empty()) {
    st = ucp_config_modify(config, "TLS", tls.c_str());
    if (st != UCS_OK) {
      ucp_config_release(config);
      return InvalidArgumentError(who_ + ": UCX transports '" + tls + "': " + UcsText(st));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.estimated_num_eps = static_cast<size_t>(std::max(1, config_.world_size - 1));
  st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (st != UCS_OK) {
    context_ = nullptr;
    return UnavailableError(who_ + ": ucp_init: " + UcsText(st));
  }
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // our mutex serialises every call
  st = ucp_worker_create(context_, &wp, &worker_);
  if (st != UCS_OK) {
    worker_ = nullptr;
    return UnavailableError(who_ + ": ucp_worker_create: " + UcsText(st));
  }
  for (auto [id, cb] : {std::pair<unsigned, ucp_am_recv_callback_t>{kCtrlAmId, CtrlCallback},
                        std::pair<unsigned, ucp_am_recv_callback_t>{kShortCtrlAmId,
                                                                    ShortCtrlCallback}}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    hp.id = id;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;  // a multi-fragment inline message arrives whole
    hp.cb = cb;
    hp.arg = this;  // the worker goes before the Core
    st = ucp_worker_set_am_recv_handler(worker_, &hp);
    if (st != UCS_OK) {
      return UnavailableError(who_ + ": ucp_worker_set_am_recv_handler: " + UcsText(st));
    }
  }
  st = ucp_worker_get_efd(worker_, &efd_);
  if (st != UCS_OK) return UnavailableError(who_ + ": ucp_worker_get_efd: " + UcsText(st));
  epoll_fd_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) return ErrnoError("epoll_create1", errno);
  wake_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_.valid()) return ErrnoError("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kEfdKey;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, efd_, &ev) < 0) {
    return ErrnoError("epoll_ctl(ADD ucp efd)", errno);
  }
  ev.data.u64 = kWakeKey;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) < 0) {
    return ErrnoError("epoll_ctl(ADD eventfd)", errno);
  }
  return Status::Ok();
}

Result<std::string> Core::Listen() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  if (!address_.empty()) return address_;
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  ucs_status_t st = ucp_worker_get_address(worker_, &addr, &len);
  if (st != UCS_OK) return UnavailableError(who_ + ": ucp_worker_get_address: " + UcsText(st));
  address_ = ToHex(addr, len);
  ucp_worker_release_address(worker_, addr);
  if (!thread_.joinable()) thread_ = NamedThread("weft-ucx", [this] { Run(); });
  WEFT_LOG(INFO) << who_ << ": listening (worker address of " << len << " bytes)";
  return address_;
}

void Core::SendAuth(Peer* peer, TagKind kind, const void* msg, size_t len) {
  Op* op = NewOp(Op::Kind::kAuthSend, peer);
  if (kind == TagKind::kHello) {
    std::memcpy(&op->hello, msg, len);
    StartSend(op, 0, peer->ep, &op->hello, len, MakeTag(kind, config_.rank), ucp_dt_make_contig(1));
  } else {
    std::memcpy(&op->proof, msg, len);
    StartSend(op, 0, peer->ep, &op->proof, len, MakeTag(kind, config_.rank), ucp_dt_make_contig(1));
  }
}

Result<std::vector<Peer*>> Core::Connect(const std::vector<PeerInfo>& infos, Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  if (connect_started_) return FailedPreconditionError(who_ + ": Connect() may be called once");
  std::set<int> seen;
  for (const PeerInfo& p : infos) {
    if (p.rank < 0 || p.rank >= config_.world_size || p.rank == config_.rank) {
      return InvalidArgumentError(who_ + ": Connect() with peer rank " + std::to_string(p.rank) +
                                  " in a world of " + std::to_string(config_.world_size));
    }
    if (!seen.insert(p.rank).second) {
      return InvalidArgumentError(who_ + ": Connect() lists rank " + std::to_string(p.rank) +
                                  " twice");
    }
  }
  connect_started_ = true;
  if (!thread_.joinable()) thread_ = NamedThread("weft-ucx", [this] { Run(); });

  HelloMsg hello{};
  std::memcpy(hello.magic, kHelloMagic, sizeof(hello.magic));
  hello.rank = static_cast<uint32_t>(config_.rank);
  hello.world_size = static_cast<uint32_t>(config_.world_size);
  Digest256 job_hash = Sha256Of(config_.job_id);
  std::memcpy(hello.job_hash, job_hash.data(), 32);

  std::vector<Peer*> mine;
  for (const PeerInfo& info : infos) {
    peers_.push_back(std::make_unique<Peer>());
    Peer* p = peers_.back().get();
    p->core = this;
    p->rank = info.rank;
    p->pid = info.pid;
    p->name = "rank " + std::to_string(info.rank);
    by_rank_[p->rank] = p;
    mine.push_back(p);
    Status rs = RandomBytes(p->nonce, sizeof(p->nonce));
    if (!rs.ok()) {
      p->auth_error = rs;
      continue;
    }
    auto addr = HexDecode(info.address);
    if (!addr.ok() || addr->empty()) {
      p->auth_error = InvalidArgumentError("its published address is not a hex UCP worker address");
      continue;
    }
    // Same host: UCX may pick shared memory, whose 1.13 transports cannot handle peer failure,
    // so liveness comes from a pidfd instead. Elsewhere UCX reports the failure itself.
    p->same_host = !config_.host_id.empty() && info.host_id == config_.host_id && info.pid > 0;
    p->inline_bytes = inline_bytes_.value_or(p->same_host && shm_tls_ ? kShmInlineBytes
                                                                       : kNetInlineBytes);
    if (p->same_host && info.pid != getpid()) {
      int fd = static_cast<int>(syscall(SYS_pidfd_open, info.pid, 0));
      if (fd >= 0) {
        p->pidfd.Reset(fd);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kPidBase + static_cast<uint64_t>(p->rank);
        epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev);
      } else {
        WEFT_LOG(DEBUG) << who_ << ": pidfd_open(" << info.pid << "): " << std::strerror(errno);
      }
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(addr->data());
    ep.err_handler.cb = EpErrorCallback;
    ep.err_handler.arg = p;  // peers live as long as the worker
    ucs_status_t st = UCS_ERR_UNREACHABLE;
    if (!p->same_host) {
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      st = ucp_ep_create(worker_, &ep, &p->ep);
      if (st == UCS_OK) {
        p->peer_mode = true;
        stats_.peer_failure_mode = true;
      } else {
        WEFT_LOG(WARN) << who_ << ": no UCX transport to " << p->name
                       << " can report peer failure (" << UcsText(st)
                       << "); its failure shows only as a timeout";
      }
    }
    if (st != UCS_OK) {
      ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
      st = ucp_ep_create(worker_, &ep, &p->ep);
    }
    if (st != UCS_OK) {
      p->ep = nullptr;
      p->auth_error = UnavailableError("ucp_ep_create: " + UcsText(st));
      continue;
    }
    Op* h = NewOp(Op::Kind::kHelloRecv, p);
    StartRecv(h, &h->hello, sizeof(HelloMsg), MakeTag(TagKind::kHello, p->rank), kFullMask);
    Op* pr = NewOp(Op::Kind::kProofRecv, p);
    StartRecv(pr, &pr->proof, sizeof(ProofMsg), MakeTag(TagKind::kProof, p->rank), kFullMask);
    std::memcpy(hello.nonce, p->nonce, 32);
    SendAuth(p, TagKind::kHello, &hello, sizeof(hello));
  }
  Drain();
  WakeIfSleeping();

  auto settled = [&] {
    if (!aborted_.ok()) return true;
    for (Peer* p : mine) {
      if (!p->authed && p->auth_error.ok() && p->failed.ok()) return false;
    }
    return true;
  };
  while (!settled() && !deadline.Expired()) {
    cv_.wait_for(lock, std::min<std::chrono::nanoseconds>(deadline.Remaining(),
                                                          std::chrono::milliseconds(100)));
  }
  if (!aborted_.ok()) return aborted_;
  std::map<int, Status> failures;
  for (Peer* p : mine) {
    if (!p->auth_error.ok()) {
      failures.emplace(p->rank, p->auth_error);
    } else if (!p->failed.ok()) {
      failures.emplace(p->rank, p->failed);
    } else if (!p->authed) {
      failures.emplace(
          p->rank, DeadlineExceededError(p->got_hello ? "its proof of the job secret did not arrive"
                                                      : "its hello did not arrive"));
    }
  }
  if (!failures.empty()) {
    Status err = ConnectFailure(who_, failures);
    // Refuse them all: a half-connected transport is of no use to the caller.
    for (Peer* p : mine) {
      FailPeer(p, err, /*keep_arrived=*/false);
      p->aborted = true;
      CloseEp(p, /*force=*/true);
    }
    Drain();
    return err;
  }
  int local_ranks = 1;
  for (Peer* p : mine) local_ranks += p->same_host ? 1 : 0;
  spin_tight_.store(RanksFitCores(local_ranks), std::memory_order_relaxed);
  WEFT_LOG(INFO) << who_ << ": connected to " << mine.size() << " peers";
  return mine;
}

// ---- Operations --------------------------------------------------------------------------------

Op* Core::NewOp(Op::Kind kind, Peer* peer) {
  Op* op;
  if (free_ops_.empty()) {
    op = new Op(this, kind, peer);
  } else {
    op = free_ops_.back().release();
    free_ops_.pop_back();
    op->Reuse(this, kind, peer);
  }
  op->live_next = live_ops_;
  if (live_ops_ != nullptr) live_ops_->live_prev = op;
  live_ops_ = op;
  return op;
}

void Core::Finish(Op* op, Status s) {
  if (FastRecv* f = op->fast) {
    // Once: the record lives on its caller's stack, gone as soon as done is seen.
    op->fast = nullptr;
    ++op->core->stats_.exchanges_in_call;  // under mu_, as every completion
    f->status = std::move(s);
    f->done.store(true, std::memory_order_release);
  } else if (op->req) {
    op->req->Complete(std::move(s));
  }
}

void Core::TrackInFlight(Op* op) {
  Peer* p = op->peer;
  if (p == nullptr || op->in_flight) return;
  op->in_flight = true;
  op->peer_prev = nullptr;
  op->peer_next = p->inflight;
  if (p->inflight != nullptr) p->inflight->peer_prev = op;
  p->inflight = op;
}

void Core::ReleaseOp(Op* op) {
  if (op->in_flight) {
    if (op->peer_prev != nullptr) {
      op->peer_prev->peer_next = op->peer_next;
    } else {
      op->peer->inflight = op->peer_next;
    }
    if (op->peer_next != nullptr) op->peer_next->peer_prev = op->peer_prev;
  }
  if (op->live_prev != nullptr) {
    op->live_prev->live_next = op->live_next;
  } else {
    live_ops_ = op->live_next;
  }
  if (op->live_next != nullptr) op->live_next->live_prev = op->live_prev;
  if (free_ops_.size() < kOpPool) {
    op->req.reset();  // the caller may hold the request; we no longer do
    free_ops_.emplace_back(op);
  } else {
    delete op;
  }
}

void Core::FreeAllOps() {
  while (live_ops_ != nullptr) {
    Op* next = live_ops_->live_next;
    delete live_ops_;
    live_ops_ = next;
  }
  free_ops_.clear();
}

ucp_request_param_t Core::BeginPart(Op* op, uint32_t attrs) {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                       UCP_OP_ATTR_FIELD_DATATYPE | attrs;
  param.user_data = op;
  param.datatype = ucp_dt_make_contig(1);
  ++op->parts;
  TrackInFlight(op);
  return param;
}

void Core::StartSend(Op* op, int part, ucp_ep_h ep, const void* buf, size_t count, uint64_t tag,
                     ucp_datatype_t dt, bool fast) {
  ucp_request_param_t param = BeginPart(op, fast ? UCP_OP_ATTR_FLAG_FAST_CMPL : 0);
  param.cb.send = SendCallback;
  param.datatype = dt;
  Started(op, part, ucp_tag_send_nbx(ep, buf, count, tag, &param));
}

void Core::StartCtrl(Op* op, const CtrlHeader* hdr, const void* payload, size_t size) {
  ucp_request_param_t param = BeginPart(op, UCP_OP_ATTR_FIELD_FLAGS);
  param.cb.send = SendCallback;
  param.flags = UCP_AM_SEND_FLAG_EAGER;  // the receiver's callback takes the payload at once
  Started(op, 0,
          ucp_am_send_nbx(op->peer->ep, kCtrlAmId, hdr, sizeof(CtrlHeader), payload, size, &param));
}

void Core::Started(Op* op, int part, ucs_status_ptr_t r) {
  if (UCS_PTR_IS_PTR(r)) {
    op->ucp_reqs[part] = r;
    return;
  }
  Event ev;  // done at once, or failed: not even a request
  ev.op = op;
  ev.part = part;
  ev.status = UCS_PTR_STATUS(r);
  events_.push_back(ev);
}

void Core::StartRecv(Op* op, void* buf, size_t len, uint64_t tag, uint64_t mask) {
  // UCX 1.13 can complete a receive immediately without filling recv_info (seen as sender tag 0,
  // length 0), so completions always come through the callback.
  ucp_request_param_t param = BeginPart(op, UCP_OP_ATTR_FLAG_NO_IMM_CMPL);
  param.cb.recv = RecvCallback;
  op->called = false;
  ucs_status_ptr_t r = ucp_tag_recv_nbx(worker_, buf, len, tag, mask, &param);
  // A message already here (UCP's unexpected queue) may complete the receive inside the call,
  // callback included (UCP_OP_ATTR_FLAG_NO_IMM_CMPL allows it): the event then holds the
  // request, which is no longer ours to cancel.
  if (UCS_PTR_IS_PTR(r) && op->called) return;
  Started(op, 0, r);  // else an error: not even a request
}

ucs_status_ptr_t Core::SendImmediate(Peer* peer, unsigned am_id, const void* header,
                                     size_t header_length, const void* data, size_t length) {
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
  param.datatype = ucp_dt_make_contig(1);
  param.flags = UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t r = ucp_am_send_nbx(peer->ep, am_id, header, header_length, data, length, &param);
  if (UCS_PTR_IS_PTR(r)) {
    // Not expected with FORCE_IMM_CMPL; should UCP queue it anyway, it must finish before the
    // caller's stack buffers go away.
    while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker_);
    ucs_status_t st = ucp_request_check_status(r);
    ucp_request_free(r);
    r = UCS_STATUS_PTR(st);
    Drain();
  }
  return r;
}

Result<RequestPtr> Core::PostSend(Peer* peer, const void* data, size_t size, uint64_t tag) {
  if (data == nullptr && size > 0) {
    return InvalidArgumentError("PostSend: null buffer of " + std::to_string(size) +
                                " bytes for ucx " + peer->name);
  }
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_ASSIGN_OR_RETURN(RequestPtr sent, PostSendLocked(peer, data, size, tag));
  return sent ? sent : RequestPtr(done_);
}

Result<RequestPtr> Core::PostSendLocked(Peer* peer, const void* data, size_t size, uint64_t tag) {
  if (!peer->failed.ok()) return peer->failed;
  if (!aborted_.ok()) return aborted_;
  if (peer->said_bye) return ByeStatus(peer);
  const uint64_t seq = peer->next_send_seq;
  const bool is_inline = size <= peer->inline_bytes;
  const CtrlHeader hdr{kCtrlMagic, is_inline ? kInline : 0u, peer->token_out, seq, tag, size,
                       static_cast<uint32_t>(config_.rank), 0};
  if (is_inline && size <= kImmediateBytes) {
    // A small message first tries UCP's immediate path (eager short: done when the call returns,
    // or refused with NO_RESOURCE) from a stack buffer, with no Op, no callback and no event: the
    // common case of the latency path. Refused, it takes the way below. A short header and the
    // payload go as one contiguous AM data block, not as AM header and data, which UCP sends
    // through an iov (uct_mm_ep_am_short_iov over shared memory, about 160 instructions more per
    // message).
    const ShortCtrlHeader sh{hdr.token, tag, hdr.src, static_cast<uint32_t>(seq)};
    alignas(8) char buf[sizeof(ShortCtrlHeader) + kImmediateBytes];
    std::memcpy(buf, &sh, sizeof(sh));
    if (size > 0) std::memcpy(buf + sizeof(sh), data, size);
    if (SendImmediate(peer, kShortCtrlAmId, nullptr, 0, buf, sizeof(sh) + size) == nullptr) {
      ++peer->next_send_seq;
      ++stats_.inline_sends;
      ++stats_.immediate_sends;
      return RequestPtr();
    }
  }
  Op* op = NewOp(Op::Kind::kSend, peer);
  ++peer->next_send_seq;
  op->hdr = hdr;
  ucs_status_ptr_t inline_sent = nullptr;
  if (is_inline) {
    // The payload goes as the active message's data, read by UCP from the caller's buffer (which
    // the caller keeps until the send completes): no copy of ours. UCP sends an eager message
    // that fits one fragment (short or bcopy) inside the call and returns no request: then
    // nothing is left to track, and the send needs no request or event either (FORCE_IMM_CMPL,
    // as above, refuses what UCP cannot send short: bcopy sizes went this whole way).
    ++stats_.inline_sends;
    ucp_request_param_t param = BeginPart(op, UCP_OP_ATTR_FIELD_FLAGS);
    param.cb.send = SendCallback;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    inline_sent =
        ucp_am_send_nbx(peer->ep, kCtrlAmId, &op->hdr, sizeof(CtrlHeader), data, size, &param);
    if (inline_sent == nullptr) {
      --op->parts;
      ReleaseOp(op);
      ++stats_.immediate_sends;
      return RequestPtr();
    }
  }
  auto req =
      MakeRecycled<UcxRequest>(UcxRequest::Kind::kSend, peer->rank, tag, size, weak_from_this());
  op->req = req;
  ++busy_ops_;
  if (is_inline) {
    Started(op, 0, inline_sent);
  } else {
    // The header first, then the data on its own tag: both leave now, so the receiver never
    // waits a round trip; UCP picks eager or rendezvous for the data by its size.
    ++stats_.data_sends;
    StartCtrl(op, &op->hdr, nullptr, 0);
    StartSend(op, 1, peer->ep, data, size, MakeTag(TagKind::kData, config_.rank, seq),
              ucp_dt_make_contig(1), /*fast=*/size <= kFastDataBytes);
  }
  Drain();
  if (req->done()) {
    ++stats_.immediate_sends;
  } else {
    WakeIfSleeping();
  }
  return RequestPtr(std::move(req));
}

Result<RequestPtr> Core::PostRecv(Peer* peer, void* data, size_t size, uint64_t tag) {
  if (data == nullptr && size > 0) {
    return InvalidArgumentError("PostRecv: null buffer of " + std::to_string(size) +
                                " bytes for ucx " + peer->name);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (peer->aborted) return peer->failed;
  if (!aborted_.ok()) return aborted_;
  auto req =
      MakeRecycled<UcxRequest>(UcxRequest::Kind::kRecv, peer->rank, tag, size, weak_from_this());
  Op* op = NewOp(Op::Kind::kRecv, peer);
  op->req = req;
  WEFT_ASSIGN_OR_RETURN(bool matched, PostRecvLocked(peer, op, data, size, tag));
  if (matched && !req->done()) WakeIfSleeping();
  return RequestPtr(std::move(req));
}

Result<bool> Core::PostRecvLocked(Peer* peer, Op* op, void* data, size_t size, uint64_t tag) {
  op->buf = static_cast<char*>(data);
  op->size = size;
  op->tag = tag;
  const ptrdiff_t waiting = peer->unexpected.Find(tag);
  if (waiting >= 0) {
    Arrived a = peer->unexpected.Take(waiting);
    Match(peer, op, a);
    Drain();
    return true;
  }
  // A lost peer sends nothing more; only messages that had wholly arrived (above) can match.
  if (!peer->failed.ok() || peer->said_bye) {
    ReleaseOp(op);
    return peer->failed.ok() ? ByeStatus(peer) : peer->failed;
  }
  peer->posted.Push(tag, op);
  return false;
}

RequestPtr Core::StandInFor(Op* op) {
  auto req = MakeRecycled<UcxRequest>(UcxRequest::Kind::kRecv, op->peer->rank, op->tag, op->size,
                                      weak_from_this());
  op->req = req;
  op->fast = nullptr;
  return req;
}

Result<Endpoint::Exchanged> Core::Exchange(Peer* peer, const void* send, void* recv, size_t size,
                                           uint64_t tag) {
  if ((send == nullptr || recv == nullptr) && size > 0) {
    return InvalidArgumentError("Exchange: null buffer of " + std::to_string(size) +
                                " bytes for ucx " + peer->name);
  }
  // An inline message (UcxEndpoint::Exchange leaves larger ones to Endpoint's): the send goes
  // through UCP's immediate path, the receive is posted with a record on this stack instead of a
  // request, and this call spins on the worker for the answer: the common case of a small
  // all-reduce then allocates nothing and completes no request (per exchange about 1,000
  // instructions fewer than PostRecv + PostSend + two waits). An answer that takes longer than
  // the spin gets a request that the caller waits on as usual.
  Endpoint::Exchanged out;
  FastRecv fast;
  // Spinning from here on (the progress thread stays out of the way): announced before the send,
  // so that its atomic does not wait for the send's stores to reach the peer.
  BeginSpin();
  struct SpinEnd {
    Core* core;
    ~SpinEnd() { core->EndSpin(/*completed=*/true); }  // a late answer is waited for as a request
  } spin_end{this};
  const bool tight = spin_tight_.load(std::memory_order_relaxed);
  std::unique_lock<std::mutex> lock(mu_);
  if (peer->aborted) return peer->failed;
  if (!aborted_.ok()) return aborted_;
  // The receive first, then the send, then at once the polls: stores after the send's would
  // queue behind those into the peer's memory (stores leave in order) and fill the store buffer,
  // stalling the poll (measured: 10% of the time in posting the receive when it came after the
  // send).
  Op* op = NewOp(Op::Kind::kRecv, peer);
  op->fast = &fast;
  WEFT_RETURN_IF_ERROR(PostRecvLocked(peer, op, recv, size, tag).status());
  auto sent = PostSendLocked(peer, send, size, tag);
  if (!sent.ok()) {
    // The receive stays posted (the failure fails the operation).
    if (!fast.done.load(std::memory_order_acquire)) StandInFor(op);
    return sent.status();
  }
  if (*sent) out.send = std::move(*sent);
  // As SpinWaitRequest::Wait polls (a tight phase only where ranks fit the cores), but for
  // kExchangeSpin at most; the clock is first read on the fourth poll. Where the phase is tight,
  // its first kExchangeLockedSpin still holds the lock: between the send's stores into the peer's
  // memory and the first look at the answer there is then no locked instruction, which would
  // stall until those stores have reached the peer (a cache-line transfer per line, 0.1-0.5 us
  // here; the unlock and PollOnce's try-lock were two).
  if (!tight) lock.unlock();
  bool relax = tight;
  Clock::time_point locked_end{}, tight_end{}, end{};
  for (int polls = 1; !fast.done.load(std::memory_order_acquire); ++polls) {
    if (lock.owns_lock()) {
      PollLocked();
    } else {
      PollOnce();
    }
    if (fast.done.load(std::memory_order_acquire)) break;
    if ((polls & 3) == 0) {
      const Clock::time_point now = Clock::now();
      if (polls == 4) {
        locked_end = now + kExchangeLockedSpin;
        tight_end = now + kExchangeTightSpin;
        end = now + kExchangeSpin;
      } else if (now >= end) {
        break;
      }
      if (lock.owns_lock() && now >= locked_end) lock.unlock();
      relax = tight && now < tight_end;
    }
    if (relax) {
      CpuRelax();
    } else {
      sched_yield();
    }
  }
  if (!fast.done.load(std::memory_order_acquire)) {
    if (!lock.owns_lock()) lock.lock();
    if (!fast.done.load(std::memory_order_acquire)) {
      // Still pending, so the op is live: a request stands in for the record.
      ++stats_.exchanges_late;
      out.recv = StandInFor(op);
      return out;
    }
  }
  if (!fast.status.ok()) return fast.status;
  return out;
}

// ---- Matching ----------------------------------------------------------------------------------

void Core::OnCtrl(bool short_form, const void* header, size_t header_length, const char* data,
                  size_t length, uint64_t recv_attr) {
  CtrlHeader hdr{};
  Peer* peer = nullptr;
  std::string why;
  bool parsed = false;
  uint32_t seq32 = 0;
  if (short_form) {
    if (header_length != 0 || length < sizeof(ShortCtrlHeader) ||
        (recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      why = "a short one of " + std::to_string(length) + " bytes is malformed";
    } else {
      ShortCtrlHeader sh;
      std::memcpy(&sh, data, sizeof(sh));
      data += sizeof(sh);
      length -= sizeof(sh);
      hdr = CtrlHeader{kCtrlMagic, kInline, sh.token, 0, sh.tag, length, sh.src, 0};
      seq32 = sh.seq32;
      parsed = true;
    }
  } else if (header_length != sizeof(CtrlHeader)) {
    why = "its header has " + std::to_string(header_length) + " bytes";
  } else {
    std::memcpy(&hdr, header, sizeof(hdr));
    parsed = true;
  }
  if (parsed) {
    auto it = by_rank_.find(static_cast<int>(hdr.src));
    peer = it == by_rank_.end() ? nullptr : it->second;
    if (peer != nullptr && short_form) hdr.seq = WidenSeq(peer->next_ctrl_seq, seq32);
    if (peer == nullptr) {
      why = "it names rank " + std::to_string(hdr.src) + ", which is not a peer";
    } else if (!peer->authed && peer->auth_error.ok() && peer->failed.ok()) {
      // The peer finished its half of the handshake first; its proof may still be on its way
      // (a tag message, handled after this callback returns). Kept, up to a bound, until
      // Verify() decides, then handled in order.
      const size_t keep = (recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) ? 0 : length;
      if (peer->early.size() >= kMaxEarlyCtrl || peer->early_bytes + keep > kMaxEarlyBytes) {
        why = "it came before the end of the handshake, behind " +
              std::to_string(peer->early.size()) + " others";
      } else {
        peer->early.push_back({hdr, std::string(data, keep)});
        peer->early_bytes += keep;
        ++stats_.early_ctrl;
        return;
      }
    } else if (!peer->authed) {
      why = "it names " + peer->name + ", which is not an authenticated peer";
    } else if (hdr.magic != kCtrlMagic || hdr.token != peer->token_in) {
      why = "its magic or token is wrong (not from the authenticated " + peer->name + ")";
    } else if (recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      why = "it came by rendezvous (control messages are sent eager)";
    } else if ((hdr.flags & kInline) ? length != hdr.size : length != 0) {
      why = "its length does not match its header";
    }
  }
  if (!why.empty()) {
    ++stats_.dropped_ctrl;
    WEFT_LOG(WARN) << who_ << ": dropped a control message: " << why;
    return;
  }
  if (peer->aborted) {
    // Nothing more is delivered from it; a goodbye still tells the closing below that its end
    // is going away (GracefulClose).
    if (hdr.flags & kBye) peer->said_bye = true;
    return;
  }
  if (hdr.seq == peer->next_ctrl_seq) {
    Deliver(peer, hdr, data);
    ++peer->next_ctrl_seq;
    // Headers that overtook this one (UCP delivers one endpoint's active messages in order, so
    // this is a guard, not a path).
    for (auto r = peer->reorder.begin();
         r != peer->reorder.end() && r->first == peer->next_ctrl_seq; r = peer->reorder.erase(r)) {
      CtrlHeader h{kCtrlMagic,
                   (r->second.is_inline ? kInline : 0u) | (r->second.bye ? kBye : 0u),
                   0,
                   r->second.seq,
                   r->second.tag,
                   r->second.size,
                   hdr.src,
                   0};
      Deliver(peer, h, r->second.payload());
      ++peer->next_ctrl_seq;
    }
  } else if (hdr.seq > peer->next_ctrl_seq) {
    Arrived a;
    a.tag = hdr.tag;
    a.size = hdr.size;
    a.seq = hdr.seq;
    a.is_inline = (hdr.flags & kInline) != 0;
    a.bye = (hdr.flags & kBye) != 0;
    if (a.is_inline) a.Keep(data, hdr.size);
    peer->reorder.emplace(hdr.seq, std::move(a));
  } else {
    ++stats_.dropped_ctrl;
    WEFT_LOG(WARN) << who_ << ": dropped a repeated control message from " << peer->name;
  }
}

void Core::Deliver(Peer* peer, const CtrlHeader& hdr, const char* payload) {
  if (hdr.flags & kBye) {
    OnBye(peer);
    return;
  }
  Arrived a;
  a.tag = hdr.tag;
  a.size = hdr.size;
  a.seq = hdr.seq;
  a.is_inline = (hdr.flags & kInline) != 0;
  const ptrdiff_t posted = peer->posted.Find(hdr.tag);
  if (posted >= 0) {
    Op* recv = peer->posted.Take(posted);
    if (a.is_inline && recv->size == a.size) {
      CompleteInline(recv, payload);  // matched at once: straight from UCP's receive buffer
      return;
    }
    Match(peer, recv, a);
    return;
  }
  if (a.is_inline) a.Keep(payload, a.size);
  peer->unexpected.Push(hdr.tag, std::move(a));
}

void Core::Match(Peer* peer, Op* recv, Arrived& a) {
  if (a.size != recv->size) {
    Finish(recv, InvalidArgumentError("ucx: message of " + std::to_string(a.size) + " bytes from " +
                                      peer->name + " does not fit the " +
                                      std::to_string(recv->size) + "-byte receive (tag " +
                                      HexTag(a.tag) + ")"));
    ReleaseOp(recv);
    if (!a.is_inline && peer->failed.ok()) {
      // Consume the data message: a zero-byte receive truncates it (UCP tells a rendezvous
      // sender it is done without moving the data).
      Op* drop = NewOp(Op::Kind::kDrop, peer);
      ++busy_ops_;
      StartDataLater(drop, a.seq);
    }
    return;
  }
  if (a.is_inline) {
    CompleteInline(recv, a.payload());
    return;
  }
  if (!peer->failed.ok()) {
    // Its data was still with the peer when the peer was lost.
    Finish(recv, peer->failed);
    ReleaseOp(recv);
    return;
  }
  ++busy_ops_;
  StartDataLater(recv, a.seq);
}

void Core::CompleteInline(Op* recv, const char* payload) {
  if (recv->size > 0) std::memcpy(recv->buf, payload, recv->size);
  Finish(recv, Status::Ok());
  ReleaseOp(recv);
  ++delivered_;
}

void Core::StartDataLater(Op* op, uint64_t seq) {
  Event ev;
  ev.op = op;
  ev.start_data = true;
  ev.data_seq = seq;
  events_.push_back(ev);
}

void Core::StartData(Op* op, uint64_t seq) {
  Peer* p = op->peer;
  if (!p->failed.ok()) {
    // Lost between the match and now: its data will not come.
    --busy_ops_;
    if (op->kind == Op::Kind::kRecv) Finish(op, p->failed);
    ReleaseOp(op);
    return;
  }
  // A drop: a zero-byte receive truncates the message (UCP tells a rendezvous sender it is done
  // without moving the data).
  static char sink;
  void* buf = op->kind == Op::Kind::kRecv ? static_cast<void*>(op->buf) : &sink;
  const size_t len = op->kind == Op::Kind::kRecv ? op->size : 0;
  StartRecv(op, buf, len, MakeTag(TagKind::kData, p->rank, seq), kFullMask);
}

// ---- Authentication ----------------------------------------------------------------------------

void Core::OnHello(Op* op, const Event& ev) {
  Peer* p = op->peer;
  if (ev.status == UCS_ERR_CANCELED || p->authed || !p->auth_error.ok()) return;
  if (ev.status != UCS_OK) {
    p->auth_error = UnavailableError("receiving its hello: " + UcsText(ev.status));
  } else if (ev.info.length != sizeof(HelloMsg) ||
             std::memcmp(op->hello.magic, kHelloMagic, sizeof(kHelloMagic)) != 0) {
    p->auth_error = FailedPreconditionError("it sent a malformed hello (" +
                                            std::to_string(ev.info.length) + " bytes)");
  } else if (op->hello.rank != static_cast<uint32_t>(p->rank) ||
             op->hello.world_size != static_cast<uint32_t>(config_.world_size)) {
    p->auth_error = FailedPreconditionError(
        "its hello says rank " + std::to_string(op->hello.rank) + " of " +
        std::to_string(op->hello.world_size) + ", expected rank " + std::to_string(p->rank) +
        " of " + std::to_string(config_.world_size));
  } else if (std::memcmp(op->hello.job_hash, Sha256Of(config_.job_id).data(), 32) != 0) {
    p->auth_error = FailedPreconditionError("it belongs to another job (job_id differs)");
  }
  if (!p->auth_error.ok()) {
    cv_.notify_all();
    return;
  }
  std::memcpy(p->peer_nonce, op->hello.nonce, 32);
  p->got_hello = true;
  const std::string& job = config_.job_id;
  const int self = config_.rank;
  Digest256 out =
      HmacSha256(config_.secret, ProofText(job, self, p->rank, p->nonce, p->peer_nonce, "token"));
  Digest256 in =
      HmacSha256(config_.secret, ProofText(job, p->rank, self, p->peer_nonce, p->nonce, "token"));
  std::memcpy(&p->token_out, out.data(), 8);
  std::memcpy(&p->token_in, in.data(), 8);
  ProofMsg proof;
  Digest256 mac =
      HmacSha256(config_.secret, ProofText(job, self, p->rank, p->nonce, p->peer_nonce, "proof"));
  std::memcpy(proof.mac, mac.data(), 32);
  SendAuth(p, TagKind::kProof, &proof, sizeof(proof));
  if (p->got_proof) Verify(p);
}

void Core::OnProof(Op* op, const Event& ev) {
  Peer* p = op->peer;
  if (ev.status == UCS_ERR_CANCELED || p->authed || !p->auth_error.ok()) return;
  if (ev.status != UCS_OK || ev.info.length != sizeof(ProofMsg)) {
    p->auth_error = ev.status != UCS_OK
                        ? UnavailableError("receiving its proof: " + UcsText(ev.status))
                        : FailedPreconditionError("it sent a malformed proof");
    cv_.notify_all();
    return;
  }
  p->proof_in = op->proof;
  p->got_proof = true;
  if (p->got_hello) Verify(p);
}

void Core::Verify(Peer* p) {
  Digest256 want = HmacSha256(config_.secret, ProofText(config_.job_id, p->rank, config_.rank,
                                                        p->peer_nonce, p->nonce, "proof"));
  if (ConstantTimeEqual(want.data(), p->proof_in.mac, 32)) {
    p->authed = true;
    std::vector<std::pair<CtrlHeader, std::string>> early;
    early.swap(p->early);
    p->early_bytes = 0;
    for (const auto& [hdr, payload] : early) {
      OnCtrl(false, &hdr, sizeof(hdr), payload.data(), payload.size(), 0);
    }
  } else {
    p->early.clear();
    p->early_bytes = 0;
    p->auth_error = UnauthenticatedError(
        "it failed authentication: its proof of the job secret does not match (wrong secret?)");
    WEFT_LOG(WARN) << who_ << ": refused " << p->name << ": " << p->auth_error.message();
  }
  cv_.notify_all();
}

// ---- Events and progress -----------------------------------------------------------------------

void Core::Drain() {
  // Handle() may push more events; the two vectors swap so neither is reallocated per message.
  while (!events_.empty()) {
    drain_batch_.swap(events_);
    handled_ += drain_batch_.size();
    for (const Event& ev : drain_batch_) Handle(ev);
    drain_batch_.clear();
  }
}

void Core::Handle(const Event& ev) {
  if (ev.err_peer != nullptr) {
    Peer* p = ev.err_peer;
    if (p->ep == nullptr) return;
    if (p->said_bye) {
      // It shut down in order; its connection going away afterwards is no failure.
      WEFT_LOG(DEBUG) << who_ << ": " << p->name << " closed its transport (UCX: "
                      << UcsText(ev.status) << ")";
      FailPeer(p, ByeStatus(p), /*keep_arrived=*/true);
    } else if (p->aborted || !aborted_.ok()) {
      // This side is closing the connection (or the whole transport) itself, and its control
      // receives are gone, so the peer's goodbye may never be read: nothing to report.
      WEFT_LOG(DEBUG) << who_ << ": connection to " << p->name << " ended while closing (UCX: "
                      << UcsText(ev.status) << ")";
      FailPeer(p, p->failed.ok() ? aborted_ : p->failed, /*keep_arrived=*/true);
    } else {
      WEFT_LOG(WARN) << who_ << ": UCX reports " << p->name << " failed: " << UcsText(ev.status);
      FailPeer(p, UnavailableError("ucx: " + p->name + " failed: " + UcsText(ev.status)),
               /*keep_arrived=*/true);
    }
    CloseEp(p, /*force=*/true);
    return;
  }
  Op* op = ev.op;
  if (ev.start_data) {
    StartData(op, ev.data_seq);
    return;
  }
  if (ev.request != nullptr) ucp_request_free(ev.request);
  --op->parts;
  if (ev.status != UCS_OK && op->error == UCS_OK) op->error = ev.status;
  Peer* p = op->peer;
  switch (op->kind) {
    case Op::Kind::kSend: {
      if (op->parts > 0) return;
      --busy_ops_;
      if (op->error == UCS_OK) {
        op->req->Complete(Status::Ok());
      } else {
        op->req->Complete(!p->failed.ok() ? p->failed
                                          : UnavailableError("ucx: sending to " + p->name +
                                                             " failed: " + UcsText(op->error)));
      }
      ReleaseOp(op);
      return;
    }
    case Op::Kind::kRecv: {
      --busy_ops_;
      if (ev.status == UCS_OK && ev.info.length == op->size) {
        Finish(op, Status::Ok());
      } else if (ev.status == UCS_OK || ev.status == UCS_ERR_MESSAGE_TRUNCATED) {
        Finish(op, InvalidArgumentError("ucx: data of " + std::to_string(ev.info.length) +
                                        " bytes from " + p->name + " does not fit the " +
                                        std::to_string(op->size) + "-byte receive (tag " +
                                        HexTag(op->tag) + ")"));
      } else {
        Finish(op, !p->failed.ok() ? p->failed
                                   : UnavailableError("ucx: receiving from " + p->name +
                                                      " failed: " + UcsText(ev.status)));
      }
      ReleaseOp(op);
      return;
    }
    case Op::Kind::kDrop:
    case Op::Kind::kBye:
    case Op::Kind::kFlush:
    case Op::Kind::kClose:
      --busy_ops_;
      if (op->kind == Op::Kind::kFlush) p->flushing = false;
      ReleaseOp(op);
      return;
    case Op::Kind::kAuthSend:
      if (ev.status != UCS_OK && p->auth_error.ok() && !p->authed) {
        p->auth_error = UnavailableError("sending to it: " + UcsText(ev.status));
        cv_.notify_all();
      }
      ReleaseOp(op);
      return;
    case Op::Kind::kHelloRecv:
      OnHello(op, ev);
      ReleaseOp(op);
      return;
    case Op::Kind::kProofRecv:
      OnProof(op, ev);
      ReleaseOp(op);
      return;
  }
}

void Core::ProgressLocked() {
  do {
    while (ucp_worker_progress(worker_) != 0) {
    }
    Drain();
  } while (!events_.empty());
}

void Core::PollOnce() {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (lock.owns_lock()) PollLocked();
}

void Core::PollLocked() {
  if (shutdown_) return;
  // Drives the worker while it moves (a large transfer advances fragment by fragment), but
  // returns as soon as something completed, unlike ProgressLocked(): the waiter then sees its
  // request done without a further ucp_worker_progress (a system call over tcp) in between.
  const uint64_t delivered = delivered_;
  while (ucp_worker_progress(worker_) != 0 && events_.empty() && delivered_ == delivered) {
  }
  Drain();
}

void Core::ListenToEfd(bool on) {
  // Nothing to change, the common case (every waiter's BeginSpin asks for "off"): no lock. Racing
  // a change the other way, the thread corrects it at its next look (Run() leaves the fd out of
  // the set whenever someone spins).
  if (efd_listened_.load(std::memory_order_seq_cst) == on) return;
  std::lock_guard<std::mutex> lock(efd_mu_);
  if (on == efd_listened_.load() || (on && spinners_.load() > 0)) return;
  if (on) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kEfdKey;
    epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, efd_, &ev);
  } else {
    epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, efd_, nullptr);
  }
  efd_listened_ = on;
}

void Core::BeginSpin() {
  if (spinners_.fetch_add(1, std::memory_order_seq_cst) == 0) ListenToEfd(false);
}

void Core::EndSpin(bool completed) {
  if (completed) spin_completions_.fetch_add(1, std::memory_order_relaxed);
  if (!completed) sleepers_.fetch_add(1, std::memory_order_seq_cst);
  if (spinners_.fetch_sub(1, std::memory_order_seq_cst) != 1 || completed) {
    // A sleeper while others spin: the thread must switch to event mode for it within its
    // short poll, not its quiet one.
    if (!completed && quiet_poll_.exchange(false)) Wake();
    return;
  }
  // The last spinner is about to sleep: poll mode ends, since its waiter now depends on the
  // thread, and the worker goes back to the progress thread armed, as the thread itself would
  // leave it, so the next event wakes it. (A spinner that completes while others sleep does not
  // do this hand-off: the thread, which looks in every millisecond in poll mode, sees the
  // sleepers and switches to event mode itself. Doing it here cost an arm and a thread wake-up
  // per such completion: +35% on an 8-byte all-reduce with 4 ranks on 2 cores.)
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    do {
      ProgressLocked();
    } while (ucp_worker_arm(worker_) == UCS_ERR_BUSY);
  }
  ListenToEfd(true);
  Wake();  // the thread may be in a poll-mode sleep with the fd unlistened
}

void Core::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
}

void Core::WakeIfSleeping() {
  if (sleeping_.load(std::memory_order_seq_cst)) Wake();
}

void Core::StandIn() {
  // UCP signalled while a waiter sleeps: the rest of that transfer (a rendezvous is several
  // messages, a pipeline several transfers) usually follows within microseconds, and one
  // arm-sleep-wake round per event costs tens of microseconds each. So the thread polls as the
  // sleeping waiter would have, for a spin's length after the last event it handled, then arms
  // again. Never when nobody sleeps on an operation of ours: an idle transport stays idle.
  const auto spin = std::chrono::microseconds(UcxRequest::WaitSpinUs());
  Deadline end = Deadline::After(spin);
  while (!stop_.load() && sleepers_.load() > 0 && spinners_.load() == 0 && !end.Expired()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutdown_ || busy_ops_ == 0) return;
      const uint64_t before = handled_;
      ProgressLocked();
      if (handled_ != before) end = Deadline::After(spin);
    }
    sched_yield();
  }
}

void Core::Run() {
  constexpr int kMaxEvents = 16;
  epoll_event events[kMaxEvents];
  uint64_t seen_completions = 0;
  Clock::time_point last_completion{};
  while (!stop_.load()) {
    int timeout;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (shutdown_) break;
      ProgressLocked();
      const Clock::time_point now = Clock::now();
      const uint64_t completions = spin_completions_.load(std::memory_order_relaxed);
      if (completions != seen_completions) {
        seen_completions = completions;
        last_completion = now;
      }
      if (spinners_.load() > 0 ||
          (sleepers_.load() == 0 && now - last_completion < kActiveWindow)) {
        // Poll mode: waiters are driving the worker; look in now and then, unarmed. The worker's
        // fd leaves the epoll set: after an event that arrived while it was armed it can stay
        // readable until the next ucp_worker_arm (shared memory signals through a socket that
        // only arming drains), and this thread would spin on it, holding mu_ against the
        // waiters and taking their core.
        ListenToEfd(false);
        // Raised before sleepers_ is read: a waiter that goes to sleep after the read finds it
        // raised and wakes us (EndSpin).
        quiet_poll_.store(true, std::memory_order_seq_cst);
        const bool quiet = sleepers_.load(std::memory_order_seq_cst) == 0;
        if (!quiet) quiet_poll_.store(false, std::memory_order_relaxed);
        timeout = quiet ? kQuietPollMs : kActivePollMs;
      } else {
        // Event mode: arm and sleep on the worker's fd.
        if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) continue;  // more arrived: progress again
        ListenToEfd(true);
        sleeping_.store(true, std::memory_order_seq_cst);
        timeout = busy_ops_ > 0 ? kBusyPollMs : kIdlePollMs;
      }
    }
    int n = epoll_wait(epoll_fd_.get(), events, kMaxEvents, timeout);
    sleeping_.store(false, std::memory_order_seq_cst);
    quiet_poll_.store(false, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key == kEfdKey) {
        StandIn();
      } else if (key == kWakeKey) {
        uint64_t count;
        ssize_t ignored = read(wake_fd_.get(), &count, sizeof(count));
        (void)ignored;
      } else if (key >= kPidBase) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = by_rank_.find(static_cast<int>(key - kPidBase));
        if (it != by_rank_.end()) OnPeerExited(it->second);
      }
    }
  }
}

// ---- Failure -----------------------------------------------------------------------------------

void Core::OnPeerExited(Peer* p) {
  if (p->pidfd.valid()) {
    epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, p->pidfd.get(), nullptr);
    p->pidfd.Reset();
  }
  if (!p->failed.ok()) return;
  // What the peer sent before it died is already here (our socket buffers, our shared-memory
  // FIFO): take it in before failing the rest.
  ProgressLocked();
  FailPeer(p, UnavailableError("ucx: " + p->name + " (pid " + std::to_string(p->pid) + ") exited"),
           /*keep_arrived=*/true);
  CloseEp(p, /*force=*/true);
  Drain();
}

void Core::FailPeer(Peer* p, const Status& why, bool keep_arrived) {
  if (!keep_arrived) p->aborted = true;
  if (!keep_arrived) p->unexpected.clear();
  if (!p->failed.ok()) return;
  p->failed = why;
  if (p->auth_error.ok() && !p->authed) p->auth_error = why;
  p->early.clear();
  p->early_bytes = 0;
  FailPosted(p, why);
  p->reorder.clear();
  // Waiters wake now. Receives still posted on the worker are cancelled; sends and matched
  // receives end when the endpoint is closed (their callbacks then find the request done).
  std::vector<Op*> inflight;
  for (Op* op = p->inflight; op != nullptr; op = op->peer_next) inflight.push_back(op);
  for (Op* op : inflight) {
    Finish(op, why);
    bool recv = op->kind == Op::Kind::kRecv || op->kind == Op::Kind::kDrop ||
                op->kind == Op::Kind::kHelloRecv || op->kind == Op::Kind::kProofRecv;
    if (recv && op->ucp_reqs[0] != nullptr) ucp_request_cancel(worker_, op->ucp_reqs[0]);
  }
  cv_.notify_all();
}

void Core::CloseEp(Peer* p, bool force) {
  if (p->ep == nullptr) return;
  ucp_ep_h ep = p->ep;
  p->ep = nullptr;
  Op* op = NewOp(Op::Kind::kClose, p);
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = SendCallback;
  param.user_data = op;
  param.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ++busy_ops_;
  ++op->parts;
  Started(op, 0, ucp_ep_close_nbx(ep, &param));
}

// Lets what the peers have been sent leave (bounded: a stuck peer must not hold us), then closes
// the endpoints. Called with mu_ held; drives the worker itself.
void Core::GracefulClose(const std::vector<Peer*>& peers, bool say_bye) {
  Deadline flush_end = Deadline::After(kFlushBound);
  // A peer that is itself shutting down flushed its goodbye before closing its end; whatever of
  // it has arrived is read first, and such a peer is closed without a flush: flushing towards
  // an end that is going away fails inside UCP, which logs it as an error ("error during flush:
  // Endpoint timeout", at the end of about one 4-rank run in eight over UCX_TLS=tcp).
  ProgressLocked();
  for (Peer* p : peers) {
    if (p->ep == nullptr || p->said_bye) continue;
    if (say_bye) SayBye(p);  // before the flush, which then lets it leave too
    Op* op = NewOp(Op::Kind::kFlush, p);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send = SendCallback;
    param.user_data = op;
    ++busy_ops_;
    ++op->parts;
    p->flushing = true;
    TrackInFlight(op);
    Started(op, 0, ucp_ep_flush_nbx(p->ep, &param));
  }
  auto flushing = [&] {
    for (Peer* p : peers) {
      if (p->flushing) return true;
    }
    return false;
  };
  ProgressLocked();
  while (flushing() && !flush_end.Expired()) {
    ProgressLocked();
    std::this_thread::yield();
  }
  for (Peer* p : peers) CloseEp(p, /*force=*/true);
  ProgressLocked();
}

// Tells the peer this transport is shutting down, so that its connection closing afterwards
// reads as an orderly end there, not a failure.
void Core::SayBye(Peer* p) {
  if (p->ep == nullptr || !p->authed) return;
  Op* op = NewOp(Op::Kind::kBye, p);
  op->hdr = CtrlHeader{kCtrlMagic, kBye, p->token_out, p->next_send_seq++, 0, 0,
                       static_cast<uint32_t>(config_.rank), 0};
  ++busy_ops_;
  StartCtrl(op, &op->hdr, nullptr, 0);
}

// The peer's transport shut down after everything it sent had been announced: receives that
// nothing matched can never be, so they end now (not at their deadline), and so do later ones.
// Transfers already matched still finish: their data follows their header on its own tag.
void Core::OnBye(Peer* p) {
  p->said_bye = true;
  WEFT_LOG(DEBUG) << who_ << ": " << p->name << " says it is shutting down";
  FailPosted(p, ByeStatus(p));
}

void Core::FailPosted(Peer* p, const Status& why) {
  for (auto& [tag, op] : p->posted) {
    Finish(op, why);
    ReleaseOp(op);
  }
  p->posted.clear();
}

void Core::AbortLocked(const Status& why) {
  if (aborted_.ok()) aborted_ = why;
  std::vector<Peer*> open;
  for (auto& p : peers_) {
    FailPeer(p.get(), why, /*keep_arrived=*/false);
    if (p->ep != nullptr) open.push_back(p.get());
  }
  cv_.notify_all();
  // Control messages are still read while the endpoints close, so the peers' goodbyes that
  // arrive meanwhile are noted (GracefulClose skips the flush towards those; it begins by
  // handling what is pending).
  GracefulClose(open, Orderly(why));
  Drain();
}

void Core::AbortPeer(Peer* peer, const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_ || peer->aborted) return;
  FailPeer(peer, why, /*keep_arrived=*/false);
  GracefulClose({peer}, Orderly(why));
}

void Core::Abort(const Status& why) {
  Status s = why.ok() ? AbortedError(who_ + " aborted") : why;
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return;
  AbortLocked(s);
}

void Core::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    if (worker_ != nullptr) {
      AbortLocked(CancelledError("the ucx transport of rank " + std::to_string(config_.rank) +
                                 " was destroyed"));
    }
    shutdown_ = true;
  }
  stop_.store(true);
  if (wake_fd_.valid()) Wake();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (worker_ != nullptr) {
    // Closing endpoints complete in a few progress calls; bounded in case one does not.
    Deadline end = Deadline::After(kCloseBound);
    while (busy_ops_ > 0 && !end.Expired()) {
      ProgressLocked();
      std::this_thread::yield();
    }
    for (auto& p : peers_) {
      if (p->ep != nullptr) CloseEp(p.get(), /*force=*/true);
    }
    ProgressLocked();
    DiscardUnexpected(Deadline::After(kFlushBound));
    ucp_worker_destroy(worker_);
    worker_ = nullptr;
  }
  if (context_ != nullptr) {
    ucp_cleanup(context_);
    context_ = nullptr;
  }
  events_.clear();
  FreeAllOps();
}

// After a failure the peers' data messages that nothing will receive any more may sit in UCP's
// unexpected queue: UCP would warn about each such message as the worker is destroyed. None can
// matter now; take them off the worker.
// A message whose data never comes (a rendezvous whose sender has gone) is cancelled at the
// deadline.
void Core::DiscardUnexpected(Deadline deadline) {
  std::vector<char> sink;
  while (!deadline.Expired()) {
    ucp_tag_recv_info_t info{};
    ucp_tag_message_h msg = ucp_tag_probe_nb(worker_, 0, 0, /*remove=*/1, &info);
    if (msg == nullptr) return;
    sink.resize(std::max<size_t>(sink.size(), info.length));
    ucp_request_param_t param{};
    ucs_status_ptr_t r = ucp_tag_msg_recv_nbx(worker_, sink.data(), info.length, msg, &param);
    if (!UCS_PTR_IS_PTR(r)) continue;  // done at once (or failed: dropped either way)
    while (ucp_request_check_status(r) == UCS_INPROGRESS && !deadline.Expired()) {
      ucp_worker_progress(worker_);
    }
    if (ucp_request_check_status(r) == UCS_INPROGRESS) {
      ucp_request_cancel(worker_, r);
      ucp_worker_progress(worker_);
    }
    ucp_request_free(r);
  }
}

// ---- The Transport and Endpoint the caller sees -----------------------------------------------

class UcxEndpoint final : public Endpoint {
 public:
  UcxEndpoint(std::shared_ptr<Core> core, Peer* peer) : core_(std::move(core)), peer_(peer) {}
  ~UcxEndpoint() override {
    core_->AbortPeer(peer_,
                     CancelledError("ucx: the endpoint to " + peer_->name + " was destroyed"));
  }
  int peer() const override { return peer_->rank; }
  Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag) override {
    return core_->PostSend(peer_, data, size, tag);
  }
  Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag) override {
    return core_->PostRecv(peer_, data, size, tag);
  }
  Result<Exchanged> Exchange(const void* send, void* recv, size_t size, uint64_t tag) override {
    // The limit is set at Connect() and constant after it.
    if (size > peer_->inline_bytes) return Endpoint::Exchange(send, recv, size, tag);
    return core_->Exchange(peer_, send, recv, size, tag);
  }
  void Abort(const Status& why) override {
    core_->AbortPeer(peer_, why.ok() ? AbortedError("ucx: " + peer_->name + " aborted") : why);
  }

 private:
  const std::shared_ptr<Core> core_;
  Peer* const peer_;  // owned by core_
};

class UcxTransportImpl final : public Transport {
 public:
  explicit UcxTransportImpl(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~UcxTransportImpl() override { core_->Shutdown(); }
  std::string_view name() const override { return "ucx"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.host_memory = true;
    c.rdma = true;  // UCP rendezvous is zero-copy (RDMA, CMA) where the fabric allows
    c.progress = ProgressModel::kBackgroundThread;
    return c;
  }
  Result<std::string> Listen() override { return core_->Listen(); }
  bool CanConnect(const PeerInfo& /*self*/, const PeerInfo& peer) const override {
    return !peer.address.empty();
  }
  Result<std::vector<std::unique_ptr<Endpoint>>> Connect(const std::vector<PeerInfo>& peers,
                                                         Deadline deadline) override {
    WEFT_ASSIGN_OR_RETURN(std::vector<Peer*> mine, core_->Connect(peers, deadline));
    std::vector<std::unique_ptr<Endpoint>> eps;
    eps.reserve(mine.size());
    for (Peer* p : mine) eps.push_back(std::make_unique<UcxEndpoint>(core_, p));
    return eps;
  }
  void Abort(const Status& why) override { core_->Abort(why); }
  UcxStats stats() const { return core_->stats(); }

 private:
  const std::shared_ptr<Core> core_;
};

}  // namespace

Result<std::unique_ptr<Transport>> CreateUcxTransport(const TransportConfig& config) {
  return CreateUcxTransport(config, UcxTransportOptions{});
}

Result<std::unique_ptr<Transport>> CreateUcxTransport(const TransportConfig& config,
                                                      const UcxTransportOptions& options) {
  if (config.world_size < 1 || config.world_size > kMaxWorldSize || config.rank < 0 ||
      config.rank >= config.world_size) {
    return InvalidArgumentError("ucx transport: rank " + std::to_string(config.rank) +
                                " in a world of " + std::to_string(config.world_size) +
                                " (at most " + std::to_string(kMaxWorldSize) + " ranks)");
  }
  if (config.secret.empty()) {
    WEFT_LOG(WARN) << "ucx rank " << config.rank
                   << ": no job secret configured; any process that learns the worker address "
                      "can join the job";
  }
  std::optional<size_t> inline_bytes;
  if (options.inline_bytes > 0) {
    inline_bytes = std::min(options.inline_bytes, kMaxInlineBytes);
  } else {
    WEFT_ASSIGN_OR_RETURN(std::optional<int64_t> knob,
                          BytesOrAuto(kInlineKnob, 0, static_cast<int64_t>(kMaxInlineBytes),
                                      "(e.g. 8000, 64K; at most 64K)"));
    if (knob) inline_bytes = static_cast<size_t>(*knob);
  }
  auto core = std::make_shared<Core>(config, inline_bytes);
  WEFT_RETURN_IF_ERROR(core->Init(options.tls));
  return std::unique_ptr<Transport>(new UcxTransportImpl(std::move(core)));
}

Result<UcxStats> GetUcxStats(const Transport& transport) {
  const auto* t = dynamic_cast<const UcxTransportImpl*>(&transport);
  if (t == nullptr) return InvalidArgumentError("GetUcxStats: not a ucx transport");
  return t->stats();
}

}  // namespace weft::transport::ucx
