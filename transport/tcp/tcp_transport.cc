// The TCP transport: listener, connection setup with the job-secret handshake, and the progress
// thread. Data-path state per peer lives in tcp_peer.cc.
//
// Addresses. Listening on every interface, a rank publishes all the IPv4 addresses that
// WEFT_TCP_IFNAME, else WEFT_SOCKET_IFNAME, selects ("10.0.0.1,192.168.1.5:PORT", in the order of
// base/socket_util.h's CandidateAddresses), since it cannot know which of them its peers reach:
// docker0-style addresses exist on every host, a second NIC may sit in a subnet other hosts do
// not route. Loopback addresses are published only when nothing else is selected: same-host peers
// reach the other addresses as well, other hosts never reach them.
//
// Connection setup. Of each pair the lower rank dials the higher one, `sockets` times. Socket 0
// tries the peer's addresses in order (loopback ones skipped when the peer is on another host,
// unless they are all it offers), each attempt bounded by kDialAttempt for the connect and
// WEFT_TCP_HANDSHAKE_TIMEOUT_MS for the handshake, in rounds until the Connect() deadline; the
// first address that answers and authenticates as the peer is kept for the pair's other sockets. A
// single address is dialed as it always was: retried until the deadline. Each connection runs the
// handshake of base/auth_handshake.h; the client's hello is
//   "weft-tcp/1\njob=<job_id>\nrank=<r>\nworld=<n>\nsocket=<i>\nsockets=<k>\nto=<peer rank>"
// ("to" is optional for the server) and after its proof the server sends one more byte: 0 =
// accepted, else why it refused (wrong job, unexpected rank, bad socket index, too late, not the
// rank the dialer wanted), so the dialer can report the reason instead of a bare EOF. The job
// secret is shared by all ranks, so "to" is what tells a dialer that an address which happens to
// reach another rank of the job on its own host (same port, another interface) is the wrong one.
// The server side runs inside the progress thread's event loop, so a silent or hostile client never
// holds up the job; connections that finish before this rank's Connect() are parked until it names
// its peers.
#include "transport/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/auth_handshake.h"
#include "base/env.h"
#include "base/logging.h"
#include "base/socket_util.h"
#include "base/thread_name.h"
#include "transport/tcp/tcp_peer.h"
#include "transport/tcp/tcp_request.h"

namespace weft::transport::tcp {
namespace {

WEFT_ENV_KNOB(kSocketsKnob, "WEFT_TCP_SOCKETS", "auto",
              "TCP transport sockets per peer pair, 1..64, or auto: 1 to a peer on this host "
              "(same host id), 2 to a peer on another (TransportConfig overrides)");
WEFT_ENV_KNOB(kChunkKnob, "WEFT_TCP_CHUNK_BYTES", "auto",
              "TCP transport chunk: messages are cut into chunks of this size, 1K..1G, striped "
              "over a pair's sockets; auto: 512K where a pair has several sockets, 4M where it "
              "has one (TransportConfig overrides)");
WEFT_ENV_KNOB(kBufferKnob, "WEFT_TCP_BUFFER_BYTES", "0",
              "SO_SNDBUF/SO_RCVBUF of TCP transport sockets; 0 keeps the OS default");
WEFT_ENV_KNOB(kCongestionKnob, "WEFT_TCP_CONGESTION", "auto",
              "TCP congestion control of the TCP transport's sockets: auto (cubic for peers on "
              "this host, reached over loopback or with the same host id; the system default for "
              "others), system (the system default for all), or an algorithm name for all "
              "(cubic, reno, bbr, ...)");
WEFT_ENV_KNOB(kHandshakeTimeoutKnob, "WEFT_TCP_HANDSHAKE_TIMEOUT_MS", "5000",
              "time an accepted TCP transport connection has to authenticate before it is refused");
WEFT_ENV_KNOB(kIfnameKnob, "WEFT_TCP_IFNAME", "",
              "WEFT_SOCKET_IFNAME for the TCP transport alone, winning over it when set (same "
              "syntax: name prefixes in order of preference, or ^ in front to exclude them)");

WEFT_ENV_KNOB(kPollModeKnob, "WEFT_TCP_POLL_MODE", "1",
              "1: while a waiter spins on a peer it reads the peer's sockets itself and the "
              "progress thread is not woken for their data; 0: the progress thread always is");

constexpr size_t kMaxPendingHandshakes = 256;
constexpr int kMaxSocketsPerPeer = 64;
constexpr int64_t kMinChunkBytes = 1 << 10;
constexpr int64_t kMaxChunkBytes = 1 << 30;
// How long one connect to one of several candidate addresses may take before the next is tried:
// long enough for a loaded host to answer a SYN, short enough that an address whose packets
// vanish costs seconds, not the whole Connect() deadline.
constexpr auto kDialAttempt = std::chrono::milliseconds(2500);

// WEFT_TCP_SOCKETS: {to peers on other hosts, to peers on this host}. "auto" gives a peer on this
// host one socket: the pair's traffic is then the kernel copying between two processes, bounded
// by the CPUs, not by any one connection, and a second socket only adds streams for the same
// cores to serve (2 ranks over loopback, interleaved, one socket against two: 64 MiB all-reduce
// 1.18x faster in 11 of 12 rounds, all-gather 1.09x in 11 of 12, reduce-scatter 1.11x in 15 of
// 16; 256 KiB to 1 MiB within a few percent either way; see the README). Across hosts two
// sockets keep one slow connection from pacing the rest.
Result<std::pair<int, int>> ParseSocketsKnob(const std::string& value) {
  if (value == "auto") return std::make_pair(2, 1);
  int64_t n = 0;
  if (!ParseInt(value, &n) || n < 1 || n > kMaxSocketsPerPeer) {
    return InvalidArgumentError("WEFT_TCP_SOCKETS=" + value + ": want 1.." +
                                std::to_string(kMaxSocketsPerPeer) + " or auto");
  }
  return std::make_pair(static_cast<int>(n), static_cast<int>(n));
}

Status SocketCountMismatch(int rank, int theirs, int ours) {
  return InvalidArgumentError("rank " + std::to_string(rank) + " dials with " +
                              std::to_string(theirs) + " socket(s), but this rank expects " +
                              std::to_string(ours) +
                              " for it (WEFT_TCP_SOCKETS or host ids differ between the two)");
}

enum AckCode : uint8_t {
  kAccepted = 0,
  kRefusedJob = 1,
  kRefusedRank = 2,
  kRefusedSocket = 3,
  kRefusedLate = 4,
  kRefusedHello = 5,
  kRefusedWrongPeer = 6,
};

std::string AckText(uint8_t code) {
  switch (code) {
    case kRefusedJob:
      return "it belongs to another job (job_id differs)";
    case kRefusedRank:
      return "it does not expect a connection from this rank (rank or world size differs)";
    case kRefusedSocket:
      return "bad or duplicate socket index (sockets per peer differ?)";
    case kRefusedLate:
      return "it has finished or aborted its Connect()";
    case kRefusedHello:
      return "malformed hello";
    case kRefusedWrongPeer:
      return "it is another rank of this job (the address reaches the wrong process)";
    default:
      return "unknown refusal code " + std::to_string(code);
  }
}

struct Hello {
  std::string job;
  int64_t rank = -1;
  int64_t world = -1;
  int64_t socket = -1;
  int64_t sockets = -1;
  int64_t to = -1;  // the rank the dialer wants; -1: not said
};

constexpr std::string_view kHelloMagic = "weft-tcp/1";

std::string EncodeHello(const Hello& h) {
  return std::string(kHelloMagic) + "\njob=" + h.job + "\nrank=" + std::to_string(h.rank) +
         "\nworld=" + std::to_string(h.world) + "\nsocket=" + std::to_string(h.socket) +
         "\nsockets=" + std::to_string(h.sockets) +
         (h.to >= 0 ? "\nto=" + std::to_string(h.to) : std::string());
}

Result<Hello> ParseHello(std::string_view text) {
  Hello h;
  bool first = true;
  int fields = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (first) {
      if (line != kHelloMagic) return InvalidArgumentError("not a weft-tcp/1 hello");
      first = false;
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return InvalidArgumentError("malformed hello line");
    std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    int64_t* num = key == "rank"      ? &h.rank
                   : key == "world"   ? &h.world
                   : key == "socket"  ? &h.socket
                   : key == "sockets" ? &h.sockets
                   : key == "to"      ? &h.to
                                      : nullptr;
    if (key == "job") {
      h.job = std::string(value);
    } else if (num == nullptr || !ParseInt(value, num)) {
      return InvalidArgumentError("malformed hello field '" + std::string(key) + "'");
    }
    if (key != "to") ++fields;
  }
  if (first || fields != 5) return InvalidArgumentError("incomplete hello");
  return h;
}

// The hosts Listen() publishes when bound to every interface (see the file comment).
Result<std::vector<std::string>> PublishedHosts() {
  const bool tcp_only = kIfnameKnob.IsSet() && !kIfnameKnob.Get().empty();
  const std::string& spec = tcp_only ? kIfnameKnob.Get() : SocketIfnameSpec();
  auto found = CandidateAddresses(spec, tcp_only ? "WEFT_TCP_IFNAME" : "WEFT_SOCKET_IFNAME");
  if (!found.ok()) {
    // No interface up at all (a bare namespace): loopback is all a peer could use, as before.
    if (spec.empty()) return std::vector<std::string>{"127.0.0.1"};
    return found.status();
  }
  std::vector<std::string> outer, loopback;
  for (const InterfaceAddress& ia : *found) (ia.loopback ? loopback : outer).push_back(ia.address);
  return outer.empty() ? loopback : outer;
}

std::string RemoteAddressOf(int fd) {
  Result<HostPort> peer = PeerHostPortOf(fd);
  return peer.ok() ? peer->ToString() : "?";
}

// Sends a few bytes that must fit an empty socket buffer at once (greeting, handshake reply).
bool SendSmall(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

void SetBufferSizes(int fd, int64_t bytes) {
  if (bytes <= 0) return;
  int b = static_cast<int>(std::min<int64_t>(bytes, 1 << 30));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof(b));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof(b));
}

// An accepted connection that has not finished the handshake. Owned by the progress thread.
struct HandshakeConn : PollTarget {
  HandshakeConn(UniqueFd f, std::string secret, Clock::time_point d, std::string from_addr)
      : PollTarget(Kind::kHandshake),
        fd(std::move(f)),
        hs(std::move(secret)),
        deadline(d),
        from(std::move(from_addr)) {}
  UniqueFd fd;
  ServerHandshakeState hs;
  std::string in;
  Clock::time_point deadline;
  std::string from;
};

// An authenticated socket from a lower rank that arrived before this rank's Connect().
struct ParkedSocket {
  int rank;
  int index;
  int sockets;  // how many the dialer opens to this rank
  UniqueFd fd;
};

struct Settings {
  // Sockets per pair, to peers on other hosts (or of unknown host) and to peers on this host.
  // Both ends of a pair derive the same count from the same two host ids.
  int sockets_per_peer;
  int local_sockets_per_peer;
  // Chunk size for pairs with several sockets and with one. With one there is nothing to stripe,
  // and a larger chunk means fewer headers, read-aheads copied out of the staging buffer and
  // sendmsg/recv calls: 2 ranks on this host, one socket, in-place 1 MiB broadcast back to back,
  // vCPUs together, p50 118-130 us with 4M against 150-191 with 512K (Open MPI 130-177 in the
  // same rounds); all-reduce, all-gather, reduce-scatter of 1 MiB and 64 MiB level.
  size_t chunk_bytes;
  size_t single_socket_chunk_bytes;
  int64_t buffer_bytes;
  CongestionPolicy congestion;
  std::chrono::milliseconds handshake_timeout;
};

class TcpTransportImpl final : public TcpTransport, public PeerScheduler {
 public:
  TcpTransportImpl(const TransportConfig& config, const Settings& settings)
      : config_(config), settings_(settings) {}
  ~TcpTransportImpl() override;

  Status Init();

  std::string_view name() const override { return "tcp"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.host_memory = true;
    c.progress = ProgressModel::kBackgroundThread;
    return c;
  }
  Result<std::string> Listen() override;
  bool CanConnect(const PeerInfo& /*self*/, const PeerInfo& peer) const override {
    return !peer.address.empty();
  }
  Result<std::vector<std::unique_ptr<Endpoint>>> Connect(const std::vector<PeerInfo>& peers,
                                                         Deadline deadline) override;
  void Abort(const Status& why) override;
  int64_t refused_connections() const override { return refused_.load(); }

  void Schedule(TcpPeer* peer) override;
  void Unarmed(TcpPeer* peer) override;

 private:
  Status StartThreadLocked();
  // The peer published this host's id (both ends of the pair see the same two ids).
  bool SameHost(const PeerInfo& p) const {
    return !config_.host_id.empty() && p.host_id == config_.host_id;
  }
  int SocketsFor(const PeerInfo& p) const {
    return SameHost(p) ? settings_.local_sockets_per_peer : settings_.sockets_per_peer;
  }
  std::string SocketCountsText() const {
    if (settings_.sockets_per_peer == settings_.local_sockets_per_peer) {
      return std::to_string(settings_.sockets_per_peer) + " per peer";
    }
    return std::to_string(settings_.local_sockets_per_peer) + " per peer on this host and " +
           std::to_string(settings_.sockets_per_peer) + " per peer elsewhere";
  }
  // One connection for socket `index` of `peer` at `addr`: connect, handshake, verdict. With
  // `one_of_several`, connect once within kDialAttempt and handshake within the handshake timeout;
  // else retry the connect until the deadline. On failure *wrong_process says whether the process
  // there was not the peer (unreachable, another job or rank, not weft), so another address may
  // do better.
  Result<UniqueFd> DialAt(const PeerInfo& peer, const HostPort& addr, int index,
                          bool one_of_several, Deadline deadline, bool* wrong_process);
  // Socket 0 of `peer`: its addresses in order, in rounds until the deadline; returns the socket
  // and the address that worked. The error names every address with its own failure.
  Result<std::pair<UniqueFd, HostPort>> DialFirst(const PeerInfo& peer, Deadline deadline);
  void Wake();
  // Progress thread.
  void Run();
  void Activate(TcpPeer* peer);
  void TakeKicked();
  void RearmQuietPeers();
  void AcceptAll();
  void OnHandshake(HandshakeConn* conn);
  void Admit(HandshakeConn* conn);
  void Refuse(HandshakeConn* conn, const std::string& why);
  void Drop(HandshakeConn* conn);
  void SweepHandshakes();
  int NextTimeoutMs();

  const TransportConfig config_;
  const Settings settings_;
  std::string who_;  // "tcp rank 3", for log lines

  PollTarget wake_target_{PollTarget::Kind::kWake};
  PollTarget listen_target_{PollTarget::Kind::kListener};
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  UniqueFd listen_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> refused_{0};

  std::mutex mu_;  // guards what follows, up to kick_mu_; taken before any peer's lock
  std::condition_variable cv_;
  std::string address_;
  bool thread_started_ = false;
  bool connect_started_ = false;
  bool connect_done_ = false;
  Status aborted_;
  std::vector<std::shared_ptr<TcpPeer>> peers_;  // shared only with waiters' weak refs
  std::map<int, TcpPeer*> inbound_;  // lower ranks expected to dial, while Connect() runs
  int inbound_missing_ = 0;
  std::vector<ParkedSocket> parked_;

  std::mutex kick_mu_;  // a leaf lock: guards kicked_, unarmed_ and TcpPeer's flags for them
  std::vector<TcpPeer*> kicked_;
  std::vector<TcpPeer*> unarmed_;  // peers in poll mode, to re-arm once quiet

  // Progress thread only.
  std::list<std::unique_ptr<HandshakeConn>> handshakes_;
  std::vector<TcpPeer*> active_;
};

Status TcpTransportImpl::Init() {
  who_ = "tcp rank " + std::to_string(config_.rank);
  epoll_fd_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) return ErrnoError("epoll_create1", errno);
  wake_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_.valid()) return ErrnoError("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &wake_target_;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) < 0) {
    return ErrnoError("epoll_ctl(ADD eventfd)", errno);
  }
  return Status::Ok();
}

TcpTransportImpl::~TcpTransportImpl() {
  stop_.store(true);
  Wake();
  if (thread_.joinable()) thread_.join();
  handshakes_.clear();
  for (auto& p : peers_) {
    p->Abort(CancelledError("the tcp transport of rank " + std::to_string(config_.rank) +
                            " was destroyed"));
  }
  peers_.clear();
}

void TcpTransportImpl::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;  // the counter cannot overflow in practice; a full one still wakes the loop
}

Status TcpTransportImpl::StartThreadLocked() {
  if (thread_started_) return Status::Ok();
  thread_started_ = true;
  thread_ = NamedThread("weft-tcp", [this] { Run(); });
  return Status::Ok();
}

Result<std::string> TcpTransportImpl::Listen() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!aborted_.ok()) return aborted_;
  if (!address_.empty()) return address_;
  if (connect_started_) return FailedPreconditionError(who_ + ": Listen() must precede Connect()");
  const std::string& host = config_.listen_host;
  bool any = host.empty() || host == "0.0.0.0";
  auto listener = ListenTcp(any ? "0.0.0.0" : host, 0);
  if (!listener.ok()) return listener.status().WithContext(who_ + ": cannot listen");
  std::vector<std::string> publish = {host};
  if (any) {
    auto hosts = PublishedHosts();
    if (!hosts.ok()) return hosts.status().WithContext(who_);
    publish = std::move(*hosts);
  }
  // Accepted sockets inherit the buffer sizes, in time for the window scale negotiation.
  SetBufferSizes(listener->fd.get(), settings_.buffer_bytes);
  listen_fd_ = std::move(listener->fd);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;  // edge-triggered: running out of fds must not spin the loop
  ev.data.ptr = &listen_target_;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev) < 0) {
    int err = errno;
    listen_fd_.Reset();
    return ErrnoError("epoll_ctl(ADD listener)", err);
  }
  WEFT_RETURN_IF_ERROR(StartThreadLocked());
  address_ = FormatHostPortList(publish, listener->port);
  WEFT_LOG(INFO) << who_ << ": listening on " << address_;
  return address_;
}

Result<UniqueFd> TcpTransportImpl::DialAt(const PeerInfo& peer, const HostPort& addr, int index,
                                          bool one_of_several, Deadline deadline,
                                          bool* wrong_process) {
  *wrong_process = true;
  const std::string what = "rank " + std::to_string(peer.rank) + " at " + addr.ToString();
  // Among several addresses, one that drops packets or answers slowly must not use up the
  // deadline the others need; a single address gets the whole deadline, as it always did.
  auto fd = one_of_several ? ConnectTcpOnce(addr, Deadline::After(kDialAttempt).Min(deadline))
                           : ConnectTcp(addr, deadline);
  if (!fd.ok()) return fd.status();
  SetBufferSizes(fd->get(), settings_.buffer_bytes);
  Hello hello;
  hello.job = config_.job_id;
  hello.rank = config_.rank;
  hello.world = config_.world_size;
  hello.socket = index;
  hello.sockets = SocketsFor(peer);
  hello.to = peer.rank;
  const Deadline hs_deadline =
      one_of_several ? Deadline::After(settings_.handshake_timeout).Min(deadline) : deadline;
  Status s = ClientHandshake(fd->get(), config_.secret, EncodeHello(hello), hs_deadline);
  if (!s.ok()) return s.WithContext("handshake with " + what);
  uint8_t ack = 0;
  s = ReadFull(fd->get(), &ack, 1, hs_deadline);
  if (!s.ok()) return s.WithContext("handshake with " + what);
  if (ack != kAccepted) {
    // Past the proof, the process knows the job secret; unless it says it is another job or
    // another rank, it is the peer, and its refusal holds for every address.
    *wrong_process = ack == kRefusedJob || ack == kRefusedWrongPeer;
    return FailedPreconditionError(what + " refused socket " + std::to_string(index) + ": " +
                                   AckText(ack));
  }
  *wrong_process = false;
  return fd;
}

Result<std::pair<UniqueFd, HostPort>> TcpTransportImpl::DialFirst(const PeerInfo& peer,
                                                                  Deadline deadline) {
  const std::string who = "rank " + std::to_string(peer.rank);
  WEFT_ASSIGN_OR_RETURN(std::vector<HostPort> all, ParseHostPortList(peer.address));
  // 127.0.0.0/8 on another host would reach this host's own namespace; keep such addresses only
  // when they are all the peer offers (a test giving ranks of one machine different host ids).
  std::vector<HostPort> candidates;
  const bool remote =
      !config_.host_id.empty() && !peer.host_id.empty() && peer.host_id != config_.host_id;
  for (const HostPort& hp : all) {
    if (!(remote && IsLoopbackHost(hp.host))) candidates.push_back(hp);
  }
  if (candidates.empty()) candidates = all;
  const bool several = candidates.size() > 1;
  std::vector<Status> last(candidates.size(), UnavailableError("not tried before the deadline"));
  std::vector<bool> attempted(candidates.size(), false);
  auto backoff = std::chrono::milliseconds(20);
  for (int round = 0;; ++round) {
    for (size_t c = 0; c < candidates.size(); ++c) {
      bool wrong_process = true;
      auto fd = DialAt(peer, candidates[c], 0, several, deadline, &wrong_process);
      if (fd.ok()) {
        WEFT_LOG(INFO) << who_ << ": reached " << who << " at " << candidates[c].ToString()
                       << (several ? " (address " + std::to_string(c + 1) + " of " +
                                         std::to_string(candidates.size()) + ")"
                                   : std::string());
        return std::make_pair(std::move(*fd), candidates[c]);
      }
      // A single address already had the whole deadline to connect, as it always did.
      if (!wrong_process || !several) return fd.status();
      // An attempt the overall deadline cut short says less than an earlier round's own failure.
      if (!attempted[c] || !deadline.Expired()) last[c] = fd.status();
      attempted[c] = true;
      if (several && round == 0) {
        WEFT_LOG(INFO) << who_ << ": " << who << " at " << candidates[c].ToString()
                       << " failed, trying the next address: " << fd.status().message();
      }
      if (deadline.Expired()) break;
    }
    if (deadline.Expired()) break;
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(backoff, deadline.Remaining()));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
  std::string tried;
  StatusCode code = StatusCode::kDeadlineExceeded;
  for (size_t c = 0; c < candidates.size(); ++c) {
    tried += (c ? "; " : "") + candidates[c].ToString() + ": " + last[c].message();
    if (last[c].code() != StatusCode::kDeadlineExceeded) code = last[c].code();
  }
  return Status(code, "none of its " + std::to_string(candidates.size()) +
                          " addresses connected before the deadline (" + tried +
                          "); WEFT_SOCKET_IFNAME or WEFT_TCP_IFNAME on " + who +
                          " choose what it offers");
}

Result<std::vector<std::unique_ptr<Endpoint>>> TcpTransportImpl::Connect(
    const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int self = config_.rank;
  std::set<int> seen;
  bool need_inbound = false;
  for (const PeerInfo& p : peers) {
    if (p.rank < 0 || p.rank >= config_.world_size || p.rank == self) {
      return InvalidArgumentError(who_ + ": Connect() with peer rank " + std::to_string(p.rank) +
                                  " in a world of " + std::to_string(config_.world_size));
    }
    if (!seen.insert(p.rank).second) {
      return InvalidArgumentError(who_ + ": Connect() lists rank " + std::to_string(p.rank) +
                                  " twice");
    }
    if (p.rank > self) {
      auto hp = ParseHostPortList(p.address);
      if (!hp.ok()) return hp.status().WithContext(who_ + ": rank " + std::to_string(p.rank));
    } else {
      need_inbound = true;
    }
  }

  // Ranks on this host; without host ids, every peer might be.
  int local_ranks = 1;
  for (const PeerInfo& p : peers) {
    local_ranks += config_.host_id.empty() || p.host_id == config_.host_id ? 1 : 0;
  }
  // Where ranks outnumber cores, waiters yield as they poll (no tight phase) and spin longer
  // before they sleep; in poll mode either way: a progress thread woken for every message would
  // take the core from the very ranks the waiter needs (measured, 4 ranks on 2 cores, 8-byte
  // all-reduce p50 medians of 5 interleaved runs: armed with 50 us spins 92.6 us, poll mode with
  // 2000 us spins 50.7 us, Open MPI 54.2 us).
  const bool spin_tight = RanksFitCores(local_ranks);

  std::vector<TcpPeer*> mine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_.ok()) return aborted_;
    if (connect_started_) {
      return FailedPreconditionError(who_ + ": Connect() may be called once per transport");
    }
    if (need_inbound && !listen_fd_.valid()) {
      return FailedPreconditionError(who_ +
                                     ": Listen() must precede Connect() (lower ranks dial "
                                     "this one)");
    }
    connect_started_ = true;
    WEFT_RETURN_IF_ERROR(StartThreadLocked());
    for (const PeerInfo& p : peers) {
      TcpPeer::Options o;
      o.self_rank = self;
      o.rank = p.rank;
      o.address = p.address;
      o.num_sockets = SocketsFor(p);
      o.chunk_bytes = o.num_sockets == 1 ? settings_.single_socket_chunk_bytes : settings_.chunk_bytes;
      o.socket_buffer_bytes = settings_.buffer_bytes;
      o.congestion = settings_.congestion;
      o.same_host = SameHost(p);
      o.epoll_fd = epoll_fd_.get();
      o.scheduler = this;
      o.spin_tight = spin_tight;
      o.poll_mode = kPollModeKnob.GetBool();
      o.wait_spin_us = TcpRequest::WaitSpinUs(!spin_tight);
      peers_.push_back(std::make_shared<TcpPeer>(std::move(o)));
      mine.push_back(peers_.back().get());
      if (p.rank < self) {
        inbound_[p.rank] = mine.back();
        inbound_missing_ += mine.back()->num_sockets();
      }
    }
    for (ParkedSocket& ps : parked_) {
      auto it = inbound_.find(ps.rank);
      Status s = it == inbound_.end()
                     ? InvalidArgumentError("rank " + std::to_string(ps.rank) +
                                            " is not among this Connect()'s peers")
                 : ps.sockets != it->second->num_sockets()
                     ? SocketCountMismatch(ps.rank, ps.sockets, it->second->num_sockets())
                     : it->second->AttachSocket(ps.index, std::move(ps.fd));
      if (s.ok()) {
        --inbound_missing_;
      } else {
        ++refused_;
        WEFT_LOG(WARN) << who_ << ": refused a parked connection: " << s.message();
      }
    }
    parked_.clear();
  }

  // Dial the higher ranks from this thread while the progress thread accepts the lower ones.
  std::map<int, Status> failures;
  for (size_t i = 0; i < peers.size(); ++i) {
    if (peers[i].rank < self) continue;
    // Socket 0 finds the address that works; the others go straight to it.
    auto first = DialFirst(peers[i], deadline);
    if (!first.ok()) {
      failures.emplace(peers[i].rank, first.status());
      continue;
    }
    const HostPort chosen = first->second;
    Status s = mine[i]->AttachSocket(0, std::move(first->first));
    for (int index = 1; index < mine[i]->num_sockets() && s.ok(); ++index) {
      bool wrong_process;
      auto fd = DialAt(peers[i], chosen, index, /*one_of_several=*/false, deadline, &wrong_process);
      s = fd.ok() ? mine[i]->AttachSocket(index, std::move(*fd)) : fd.status();
    }
    if (!s.ok()) failures.emplace(peers[i].rank, s);
  }

  Status aborted;
  {
    std::unique_lock<std::mutex> lock(mu_);
    while (inbound_missing_ > 0 && aborted_.ok() && !deadline.Expired()) {
      cv_.wait_for(lock, std::min<std::chrono::nanoseconds>(deadline.Remaining(),
                                                            std::chrono::milliseconds(100)));
    }
    connect_done_ = true;  // from now on the listener refuses everything
    for (auto& [rank, peer] : inbound_) {
      const int sockets = peer->num_sockets();
      int attached = 0;
      for (int index = 0; index < sockets; ++index) attached += peer->SocketAttached(index);
      if (attached < sockets) {
        std::string what = std::to_string(attached) + " of " + std::to_string(sockets) +
                           " sockets arrived before the deadline (this rank listens at " +
                           address_ + ")";
        failures.emplace(rank, DeadlineExceededError(what));
      }
    }
    inbound_.clear();
    inbound_missing_ = 0;
    aborted = aborted_;
  }
  if (!aborted.ok()) return aborted;
  if (!failures.empty()) {
    Status err = ConnectFailure(who_, failures);
    for (TcpPeer* p : mine) p->Abort(err);
    return err;
  }
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  endpoints.reserve(mine.size());
  for (TcpPeer* p : mine) endpoints.push_back(std::make_unique<TcpEndpoint>(p));
  int local = 0;
  for (TcpPeer* p : mine) local += p->same_host() ? 1 : 0;
  WEFT_LOG(INFO) << who_ << ": connected to " << mine.size() << " peers: " << local
                 << " on this host with " << settings_.local_sockets_per_peer << " socket(s) each, "
                 << mine.size() - local << " elsewhere with " << settings_.sockets_per_peer;
  return endpoints;
}

void TcpTransportImpl::Abort(const Status& why) {
  Status s = why.ok() ? AbortedError(who_ + " aborted") : why;
  std::vector<TcpPeer*> peers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.ok()) aborted_ = s;
    for (auto& p : peers_) peers.push_back(p.get());
    parked_.clear();
    cv_.notify_all();
  }
  for (TcpPeer* p : peers) p->Abort(s);
}

void TcpTransportImpl::Schedule(TcpPeer* peer) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(kick_mu_);
    if (peer->kick_pending) return;
    peer->kick_pending = true;
    wake = kicked_.empty();
    kicked_.push_back(peer);
  }
  if (wake) Wake();
}

void TcpTransportImpl::Unarmed(TcpPeer* peer) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(kick_mu_);
    if (peer->unarmed_listed) return;
    peer->unarmed_listed = true;
    wake = unarmed_.empty();
    unarmed_.push_back(peer);
  }
  if (wake) Wake();  // the thread may sleep without a timeout
}

// ---- Progress thread ---------------------------------------------------------------------------

void TcpTransportImpl::Run() {
  constexpr int kMaxEvents = 128;
  epoll_event events[kMaxEvents];
  while (!stop_.load()) {
    int n = epoll_wait(epoll_fd_.get(), events, kMaxEvents, NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = ErrnoError(who_ + ": epoll_wait", errno);
      WEFT_LOG(ERROR) << s.message() << "; failing all tcp requests";
      Abort(s);
      return;
    }
    for (int i = 0; i < n; ++i) {
      auto* target = static_cast<PollTarget*>(events[i].data.ptr);
      switch (target->kind) {
        case PollTarget::Kind::kWake:
          TakeKicked();
          break;
        case PollTarget::Kind::kListener:
          AcceptAll();
          break;
        case PollTarget::Kind::kHandshake:
          OnHandshake(static_cast<HandshakeConn*>(target));
          break;
        case PollTarget::Kind::kSocket: {
          auto* s = static_cast<PeerSocket*>(target);
          s->peer->MarkReady(s, events[i].events);
          Activate(s->peer);
          break;
        }
      }
    }
    // Peers with more to do than one pass allows stay active and are served round-robin, so one
    // busy pair does not starve the others.
    for (size_t j = 0; j < active_.size();) {
      TcpPeer* p = active_[j];
      if (p->Service()) {
        ++j;
      } else {
        p->active = false;
        active_[j] = active_.back();
        active_.pop_back();
      }
    }
    SweepHandshakes();
    RearmQuietPeers();
  }
}

// Waiters keep spinning on a peer in poll mode many times a millisecond during a run of small
// collectives; after kPollModeQuiet without one, data nobody spins for (an unexpected message, a
// receive nobody waits on yet, a peer's failure notice) must reach this thread again. It looks
// every kPollModeQuiet / 2 while a peer is unarmed. Each look takes a core from a rank for a
// moment: at once a millisecond (2 ms quiet) it was the p99 of the 8-byte all-reduce over tcp
// (2 ranks, 4 interleaved pairs: 35 us, 23-25 us in 3 of them with this; 10-12 us with looks
// 20 ms apart; Open MPI 13-26 us). Connection loss is reported by epoll whether armed or not,
// and Test() drives the peer itself, as Wait() does.
constexpr auto kPollModeQuiet = std::chrono::milliseconds(10);

void TcpTransportImpl::RearmQuietPeers() {
  std::vector<TcpPeer*> unarmed;
  {
    std::lock_guard<std::mutex> lock(kick_mu_);
    if (unarmed_.empty()) return;
    unarmed.swap(unarmed_);
    for (TcpPeer* p : unarmed) p->unarmed_listed = false;
  }
  const Clock::time_point now = Clock::now();
  std::erase_if(unarmed, [&](TcpPeer* p) { return p->RearmIfQuiet(now, kPollModeQuiet); });
  // Listed again without a wake-up: this thread looks again within NextTimeoutMs().
  std::lock_guard<std::mutex> lock(kick_mu_);
  for (TcpPeer* p : unarmed) {
    if (p->unarmed_listed) continue;
    p->unarmed_listed = true;
    unarmed_.push_back(p);
  }
}

int TcpTransportImpl::NextTimeoutMs() {
  if (!active_.empty()) return 0;
  {
    std::lock_guard<std::mutex> lock(kick_mu_);
    if (!unarmed_.empty()) {  // RearmQuietPeers() must look again
      return static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(kPollModeQuiet / 2).count());
    }
  }
  if (handshakes_.empty()) return -1;
  auto earliest = Clock::time_point::max();
  for (auto& c : handshakes_) earliest = std::min(earliest, c->deadline);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(earliest - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 1000));
}

void TcpTransportImpl::Activate(TcpPeer* peer) {
  if (peer->active) return;
  peer->active = true;
  active_.push_back(peer);
}

void TcpTransportImpl::TakeKicked() {
  uint64_t count;
  ssize_t ignored = read(wake_fd_.get(), &count, sizeof(count));
  (void)ignored;
  std::vector<TcpPeer*> kicked;
  {
    std::lock_guard<std::mutex> lock(kick_mu_);
    kicked.swap(kicked_);
    for (TcpPeer* p : kicked) p->kick_pending = false;
  }
  for (TcpPeer* p : kicked) Activate(p);
}

void TcpTransportImpl::AcceptAll() {
  while (true) {
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        WEFT_LOG(WARN) << who_ << ": accept failed: " << std::strerror(errno);
      }
      return;
    }
    UniqueFd conn(fd);
    std::string from = RemoteAddressOf(fd);
    if (handshakes_.size() >= kMaxPendingHandshakes) {
      ++refused_;
      WEFT_LOG(WARN) << who_ << ": refused a connection from " << from << ": "
                     << kMaxPendingHandshakes << " connections are already authenticating";
      continue;
    }
    auto hc = std::make_unique<HandshakeConn>(std::move(conn), config_.secret,
                                              Clock::now() + settings_.handshake_timeout, from);
    if (!hc->hs.Start().ok() || !SendSmall(hc->fd.get(), hc->hs.greeting())) {
      ++refused_;
      WEFT_LOG(WARN) << who_ << ": refused a connection from " << from
                     << ": could not send the greeting";
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = static_cast<PollTarget*>(hc.get());
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, hc->fd.get(), &ev) < 0) {
      ++refused_;
      WEFT_LOG(WARN) << who_ << ": refused a connection from " << from << ": "
                     << std::strerror(errno);
      continue;
    }
    handshakes_.push_back(std::move(hc));
  }
}

void TcpTransportImpl::OnHandshake(HandshakeConn* conn) {
  char buf[1024];
  while (true) {
    ssize_t n = recv(conn->fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      conn->in.append(buf, static_cast<size_t>(n));
      if (conn->in.size() > kMaxHelloBytes + 256) {
        return Refuse(conn, "it sent more bytes than a handshake holds");
      }
      continue;
    }
    if (n == 0) return Refuse(conn, "it closed the connection during the handshake");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return Refuse(conn, std::strerror(errno));
  }
  auto done = conn->hs.Consume(conn->in);
  if (!done.ok()) return Refuse(conn, done.status().message());
  if (!*done) return;
  // The client waits for our reply before it sends data, so anything more is not ours.
  if (!conn->in.empty()) return Refuse(conn, "it sent data before the handshake finished");
  Admit(conn);
}

void TcpTransportImpl::Admit(HandshakeConn* conn) {
  uint8_t code = kAccepted;
  std::string why;
  auto parsed = ParseHello(conn->hs.hello());
  Hello h;
  if (!parsed.ok()) {
    code = kRefusedHello;
    why = parsed.status().message();
  } else {
    h = *parsed;
    if (h.job != config_.job_id) {
      code = kRefusedJob;
      why = "it belongs to job '" + h.job + "', not '" + config_.job_id + "'";
    } else if (h.to >= 0 && h.to != config_.rank) {
      code = kRefusedWrongPeer;
      why = "rank " + std::to_string(h.rank) + " wanted rank " + std::to_string(h.to) +
            ", this is rank " + std::to_string(config_.rank) +
            " (an address of that rank reaches this one)";
    } else if (h.world != config_.world_size || h.rank < 0 || h.rank >= config_.rank) {
      code = kRefusedRank;
      why = "rank " + std::to_string(h.rank) + " of " + std::to_string(h.world) +
            " does not dial rank " + std::to_string(config_.rank) + " of " +
            std::to_string(config_.world_size) + " (the lower rank of a pair dials)";
    } else if ((h.sockets != settings_.sockets_per_peer &&
                h.sockets != settings_.local_sockets_per_peer) ||
               h.socket < 0 || h.socket >= h.sockets) {
      code = kRefusedSocket;
      why = "socket " + std::to_string(h.socket) + " of " + std::to_string(h.sockets) +
            " from rank " + std::to_string(h.rank) + ", but this rank uses " +
            SocketCountsText();
    }
  }
  const int rank = static_cast<int>(h.rank);
  const int index = static_cast<int>(h.socket);
  std::unique_lock<std::mutex> lock(mu_);
  TcpPeer* peer = nullptr;
  if (code == kAccepted) {
    if (!aborted_.ok() || connect_done_) {
      code = kRefusedLate;
      why = "rank " + std::to_string(rank) + " connected after Connect() finished or aborted";
    } else if (connect_started_) {
      auto it = inbound_.find(rank);
      if (it == inbound_.end()) {
        code = kRefusedRank;
        why = "rank " + std::to_string(rank) + " is not among this Connect()'s peers";
      } else if (it->second->SocketAttached(index)) {
        code = kRefusedSocket;
        why = "duplicate socket " + std::to_string(index) + " from rank " + std::to_string(rank);
      } else if (h.sockets != it->second->num_sockets()) {
        code = kRefusedSocket;
        why = SocketCountMismatch(rank, static_cast<int>(h.sockets), it->second->num_sockets())
                  .message();
      } else {
        peer = it->second;
      }
    } else {
      for (const ParkedSocket& ps : parked_) {
        if (ps.rank == rank && ps.index == index) {
          code = kRefusedSocket;
          why = "duplicate socket " + std::to_string(index) + " from rank " + std::to_string(rank);
        }
      }
    }
  }
  // The proof that we know the secret, then whether we take the connection: a refused dialer
  // learns why instead of seeing a bare close.
  std::string reply = conn->hs.reply();
  reply.push_back(static_cast<char>(code));
  bool sent = SendSmall(conn->fd.get(), reply);
  if (code == kAccepted && !sent) why = "could not send the handshake reply";
  if (code != kAccepted || !sent) {
    lock.unlock();
    return Refuse(conn, why);
  }
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, conn->fd.get(), nullptr);
  UniqueFd fd = std::move(conn->fd);
  std::string from = conn->from;
  Drop(conn);
  if (peer == nullptr) {
    parked_.push_back(ParkedSocket{rank, index, static_cast<int>(h.sockets), std::move(fd)});
    return;
  }
  Status s = peer->AttachSocket(index, std::move(fd));
  if (s.ok()) {
    if (--inbound_missing_ == 0) cv_.notify_all();
  } else {
    ++refused_;
    WEFT_LOG(WARN) << who_ << ": refused a connection from " << from << ": " << s.message();
  }
}

void TcpTransportImpl::Refuse(HandshakeConn* conn, const std::string& why) {
  ++refused_;
  WEFT_LOG(WARN) << who_ << ": refused a connection from " << conn->from << ": " << why;
  Drop(conn);
}

void TcpTransportImpl::Drop(HandshakeConn* conn) {
  if (conn->fd.valid()) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, conn->fd.get(), nullptr);
  handshakes_.remove_if([conn](const auto& c) { return c.get() == conn; });
}

void TcpTransportImpl::SweepHandshakes() {
  if (handshakes_.empty()) return;
  auto now = Clock::now();
  std::vector<HandshakeConn*> expired;
  for (auto& c : handshakes_) {
    if (c->deadline <= now) expired.push_back(c.get());
  }
  for (HandshakeConn* c : expired) {
    Refuse(c, "no handshake within " + std::to_string(settings_.handshake_timeout.count()) + " ms");
  }
}

}  // namespace

Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config) {
  return CreateTcpTransport(config, TcpTransportOptions{});
}

Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config,
                                                      const TcpTransportOptions& options) {
  if (config.world_size < 1 || config.rank < 0 || config.rank >= config.world_size) {
    return InvalidArgumentError("tcp transport: rank " + std::to_string(config.rank) +
                                " in a world of " + std::to_string(config.world_size));
  }
  if (config.tcp_sockets_per_peer < 0 || config.tcp_sockets_per_peer > kMaxSocketsPerPeer) {
    return InvalidArgumentError("tcp transport: " + std::to_string(config.tcp_sockets_per_peer) +
                                " sockets per peer (1.." + std::to_string(kMaxSocketsPerPeer) +
                                ")");
  }
  if (config.secret.empty()) {
    WEFT_LOG(WARN) << "tcp rank " << config.rank
                   << ": no job secret configured; any local process can join the job";
  }
  Settings s;
  if (config.tcp_sockets_per_peer > 0) {
    s.sockets_per_peer = s.local_sockets_per_peer = config.tcp_sockets_per_peer;
  } else {
    WEFT_ASSIGN_OR_RETURN(auto counts, ParseSocketsKnob(kSocketsKnob.Get()));
    s.sockets_per_peer = counts.first;
    s.local_sockets_per_peer = counts.second;
  }
  std::pair<int64_t, int64_t> chunks{static_cast<int64_t>(config.tcp_chunk_bytes),
                                     static_cast<int64_t>(config.tcp_chunk_bytes)};
  if (config.tcp_chunk_bytes == 0) {
    // WEFT_TCP_CHUNK_BYTES: (chunk for pairs with several sockets, chunk for pairs with one).
    WEFT_ASSIGN_OR_RETURN(std::optional<int64_t> v,
                          BytesOrAuto(kChunkKnob, kMinChunkBytes, kMaxChunkBytes,
                                      "from 1K to 1G (e.g. 512K, 4M)"));
    chunks = v ? std::make_pair(*v, *v) : std::make_pair(int64_t{512} << 10, int64_t{4} << 20);
  }
  // Whole 64-byte units: a message of whole elements is then cut into chunks of whole elements,
  // which a receive reduced as it lands relies on (TcpPeer::ReduceLand).
  auto whole = [](int64_t v) {
    return static_cast<size_t>(std::clamp(v, kMinChunkBytes, kMaxChunkBytes)) & ~size_t{63};
  };
  s.chunk_bytes = whole(chunks.first);
  s.single_socket_chunk_bytes = whole(chunks.second);
  s.buffer_bytes =
      options.socket_buffer_bytes > 0 ? options.socket_buffer_bytes : kBufferKnob.GetBytes();
  WEFT_ASSIGN_OR_RETURN(
      s.congestion,
      ParseCongestionPolicy(!options.congestion.empty() ? options.congestion : kCongestionKnob.Get()));
  s.handshake_timeout =
      options.handshake_timeout.count() > 0
          ? options.handshake_timeout
          : std::chrono::milliseconds(std::max<int64_t>(1, kHandshakeTimeoutKnob.GetInt()));
  auto t = std::make_unique<TcpTransportImpl>(config, s);
  WEFT_RETURN_IF_ERROR(t->Init());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace weft::transport::tcp
