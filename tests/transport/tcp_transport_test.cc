// TCP-specific transport tests, beyond the shared conformance suite: hostile and stray clients on
// the listener, peers that vanish mid-transfer (in-process and a SIGKILLed child process), socket
// counts, connection timeouts, and a throughput print (not an assertion).
#include "transport/tcp/tcp_transport.h"
#include "transport/tcp/tcp_peer.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "base/auth_handshake.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "base/reduce_kernels.h"
#include "base/socket_util.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "tcp-test-secret";

// Transports created here with no socket count (config 0) read WEFT_TCP_SOCKETS, which a process
// reads once; pin it to its default before any test runs, so the auto tests test auto whatever
// the caller's environment says (the death test sets its own values in fresh processes).
const bool kSocketsKnobPinned = [] { return setenv("WEFT_TCP_SOCKETS", "auto", 1) == 0; }();

std::string NewJobId() {
  static std::atomic<int> counter{0};
  return "tcptest" + std::to_string(getpid()) + "x" + std::to_string(counter++);
}

TransportConfig Config(int rank, int n, const std::string& job, int sockets, size_t chunk) {
  TransportConfig c;
  c.rank = rank;
  c.world_size = n;
  c.host_id = "tcp-test-host";
  c.secret = kSecret;
  c.job_id = job;
  c.tcp_sockets_per_peer = sockets;
  c.tcp_chunk_bytes = chunk;
  c.listen_host = "127.0.0.1";
  return c;
}

// Ranks as threads of this process. Endpoints are declared after transports so they are
// destroyed first, as the interface requires.
struct Ranks {
  std::string job;
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<PeerInfo> infos;
  std::vector<std::vector<std::unique_ptr<Endpoint>>> endpoints;  // [rank][peer]
};

// Creates and listens n transports; Connect() is left to the caller (see ConnectAll).
Ranks ListenAll(int n, int sockets, size_t chunk, TcpTransportOptions options = {}) {
  Ranks r;
  r.job = NewJobId();
  for (int i = 0; i < n; ++i) {
    auto t = CreateTcpTransport(Config(i, n, r.job, sockets, chunk), options);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    auto addr = (*t)->Listen();
    EXPECT_TRUE(addr.ok()) << addr.status().ToString();
    r.infos.push_back(PeerInfo{i, "tcp-test-host", static_cast<int>(getpid()), *addr});
    r.transports.push_back(std::move(*t));
  }
  r.endpoints.resize(n);
  return r;
}

void ConnectAll(Ranks& r) {
  int n = static_cast<int>(r.transports.size());
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&r, i, n] {
      std::vector<PeerInfo> peers;
      for (int p = 0; p < n; ++p) {
        if (p != i) peers.push_back(r.infos[p]);
      }
      auto eps = r.transports[i]->Connect(peers, Deadline::AfterMs(20000));
      ASSERT_TRUE(eps.ok()) << eps.status().ToString();
      r.endpoints[i].resize(n);
      for (size_t k = 0; k < peers.size(); ++k) {
        r.endpoints[i][peers[k].rank] = std::move((*eps)[k]);
      }
    });
  }
  for (auto& t : threads) t.join();
}

std::vector<uint8_t> Pattern(size_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 11)) & 0xff);
  return v;
}

Deadline Soon() { return Deadline::AfterMs(30000); }

// Sends `sizes` from rank `from` to rank `to` (tags alternate) and checks what arrives.
void Exchange(Ranks& r, int from, int to, const std::vector<size_t>& sizes) {
  std::vector<std::vector<uint8_t>> out, in;
  std::vector<RequestPtr> reqs;
  for (size_t i = 0; i < sizes.size(); ++i) {
    out.push_back(Pattern(sizes[i], static_cast<int>(i) + from * 100));
    in.emplace_back(sizes[i], 0);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto s = r.endpoints[from][to]->PostSend(out[i].data(), out[i].size(), i % 3);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    reqs.push_back(*s);
  }
  // Receive tag by tag, so later messages of other tags are unexpected when they arrive.
  for (uint64_t tag = 0; tag < 3; ++tag) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (i % 3 != tag) continue;
      auto q = r.endpoints[to][from]->PostRecv(in[i].data(), in[i].size(), tag);
      ASSERT_TRUE(q.ok()) << q.status().ToString();
      reqs.push_back(*q);
    }
  }
  for (auto& q : reqs) {
    Status st = q->Wait(Soon());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(in[i], out[i]) << "message " << i;
}

Result<HostPort> AddressOf(const Ranks& r, int rank) {
  return ParseHostPort(r.infos[rank].address);
}

std::string HelloFor(const std::string& job, int rank, int world, int socket, int sockets) {
  return "weft-tcp/1\njob=" + job + "\nrank=" + std::to_string(rank) +
         "\nworld=" + std::to_string(world) + "\nsocket=" + std::to_string(socket) +
         "\nsockets=" + std::to_string(sockets);
}

// True once the server has closed `fd` (EOF or reset), reading and dropping anything before it.
bool ClosedByServer(int fd, Deadline deadline) {
  char c;
  Status s;
  do {
    s = ReadFull(fd, &c, 1, deadline);
  } while (s.ok());
  return s.code() != StatusCode::kDeadlineExceeded;
}

// A client that authenticates properly and introduces itself with `hello`; returns the server's
// one-byte verdict (0 = accepted), or -1 if the connection failed before it.
int AuthedClient(const HostPort& addr, const std::string& hello) {
  auto fd = ConnectTcp(addr, Deadline::AfterMs(5000));
  if (!fd.ok()) return -1;
  if (!ClientHandshake(fd->get(), kSecret, hello, Deadline::AfterMs(5000)).ok()) return -1;
  uint8_t ack = 0;
  if (!ReadFull(fd->get(), &ack, 1, Deadline::AfterMs(5000)).ok()) return -1;
  return ack;
}

// How many of this process's epoll registrations ask for EPOLLOUT (from /proc/self/fdinfo of
// every epoll instance: "tfd: <fd> events: <hex mask> ...").
int EpollOutRegistrations() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char target[64] = {0};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(link.c_str(), target, sizeof(target) - 1) <= 0) continue;
    if (std::string(target) != "anon_inode:[eventpoll]") continue;
    std::ifstream info(std::string("/proc/self/fdinfo/") + e->d_name);
    for (std::string word; info >> word;) {
      if (word != "events:") continue;
      std::string mask;
      info >> mask;
      if (std::stoul(mask, nullptr, 16) & EPOLLOUT) ++count;
    }
  }
  closedir(dir);
  return count;
}


// The congestion control of every TCP socket of this process with an end at port `port` (both
// ends of each connection to a listener there), read with TCP_CONGESTION.
std::vector<std::string> CongestionOfSocketsAt(int port) {
  std::vector<std::string> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    sockaddr_storage self{}, peer{};
    socklen_t ls = sizeof(self), lp = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&self), &ls) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &lp) != 0 ||
        self.ss_family != AF_INET) {
      continue;
    }
    auto port_of = [](const sockaddr_storage& a) {
      return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
    };
    if (port_of(self) != port && port_of(peer) != port) continue;
    char name[32] = {0};
    socklen_t len = sizeof(name);
    if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) continue;
    out.emplace_back(name);
  }
  closedir(dir);
  return out;
}

std::string SystemCongestionControl() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_congestion_control");
  std::string name;
  in >> name;
  return name;
}

int ListenPort(const std::string& published) {
  auto hp = ParseHostPortList(published);
  return hp.ok() ? (*hp)[0].port : -1;
}

TEST(TcpTransport, EpollOutOnlyWhileASendWaitsForRoom) {
  // Edge-triggered EPOLLOUT reports every acknowledgement that frees send-buffer space, so a
  // socket registered for it all the time woke the progress thread for messages it had nothing
  // to do with (2 ranks, 8 B all-reduce: p99 63-90 us with 16k-96k context switches in 6 runs of
  // 8, against 34-53 us). It is asked for only while a send is stuck.
  Ranks r = ListenAll(2, 2, 64 << 10);
  ConnectAll(r);
  Exchange(r, 0, 1, {8, 100, 3000});
  Exchange(r, 1, 0, {8, 100, 3000});
  EXPECT_EQ(EpollOutRegistrations(), 0);
  // 64 MiB that nobody receives yet: the socket buffers fill and the rest waits for room.
  std::vector<uint8_t> big = Pattern(64 << 20, 5), got(64 << 20);
  auto s = r.endpoints[0][1]->PostSend(big.data(), big.size(), 9);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)->Test());
  EXPECT_GT(EpollOutRegistrations(), 0);
  auto q = r.endpoints[1][0]->PostRecv(got.data(), got.size(), 9);
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE((*q)->Wait(Soon()).ok());
  ASSERT_TRUE((*s)->Wait(Soon()).ok());
  EXPECT_EQ(got, big);
  // The send completes while its writer still holds the peer; the registration follows.
  Deadline settle = Deadline::AfterMs(2000);
  while (EpollOutRegistrations() != 0 && !settle.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(EpollOutRegistrations(), 0);
}

TEST(TcpTransport, ReportsBackgroundProgress) {
  auto t = CreateTcpTransport(Config(0, 1, NewJobId(), 0, 0));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->name(), "tcp");
  EXPECT_EQ((*t)->capabilities().progress, ProgressModel::kBackgroundThread);
  auto eps = (*t)->Connect({}, Deadline::AfterMs(1000));
  ASSERT_TRUE(eps.ok()) << eps.status().ToString();
  EXPECT_TRUE(eps->empty());
}

TEST(TcpTransport, HostileClientsAreRefusedWhileTheJobRuns) {
  TcpTransportOptions opt;
  opt.handshake_timeout = std::chrono::milliseconds(300);
  Ranks r = ListenAll(2, 2, 16 << 10, opt);
  auto server = AddressOf(r, 1);  // rank 1 accepts rank 0's sockets
  ASSERT_TRUE(server.ok());
  std::atomic<int> wrong_secret_refused{0}, garbage_refused{0}, silent_refused{0};
  std::atomic<int> wrong_job_ack{-2};
  std::vector<std::thread> clients;
  clients.emplace_back([&] {
    auto fd = ConnectTcp(*server, Deadline::AfterMs(5000));
    ASSERT_TRUE(fd.ok());
    Status s = ClientHandshake(fd->get(), "not-the-secret", HelloFor(r.job, 0, 2, 0, 2),
                               Deadline::AfterMs(5000));
    if (!s.ok()) wrong_secret_refused++;
  });
  clients.emplace_back([&] {
    auto fd = ConnectTcp(*server, Deadline::AfterMs(5000));
    ASSERT_TRUE(fd.ok());
    std::vector<uint8_t> junk(4096);
    ASSERT_TRUE(RandomBytes(junk.data(), junk.size()).ok());
    WriteFull(fd->get(), junk.data(), junk.size(), Deadline::AfterMs(5000)).IgnoreError();
    if (ClosedByServer(fd->get(), Deadline::AfterMs(5000))) garbage_refused++;
  });
  clients.emplace_back([&] {
    auto fd = ConnectTcp(*server, Deadline::AfterMs(5000));
    ASSERT_TRUE(fd.ok());
    auto t0 = Clock::now();
    if (ClosedByServer(fd->get(), Deadline::AfterMs(5000)) &&
        Clock::now() - t0 >= std::chrono::milliseconds(250)) {
      silent_refused++;
    }
  });
  clients.emplace_back(
      [&] { wrong_job_ack = AuthedClient(*server, HelloFor("other-job", 0, 2, 0, 2)); });

  // The real job connects and exchanges data while the strays are at the door.
  ConnectAll(r);
  ASSERT_TRUE(r.endpoints[0][1] && r.endpoints[1][0]);
  Exchange(r, 0, 1, {0, 1, 7, 16 << 10, (16 << 10) + 1, 1 << 20, 3 << 20});
  Exchange(r, 1, 0, {5, 100000, 2 << 20});
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong_secret_refused.load(), 1);
  EXPECT_EQ(garbage_refused.load(), 1);
  EXPECT_EQ(silent_refused.load(), 1);
  EXPECT_NE(wrong_job_ack.load(), 0);
  EXPECT_GT(wrong_job_ack.load(), 0);

  // Connect() is done: even a well-formed connection from the right rank is refused now.
  EXPECT_GT(AuthedClient(*server, HelloFor(r.job, 0, 2, 0, 2)), 0);
  auto* tcp1 = dynamic_cast<TcpTransport*>(r.transports[1].get());
  ASSERT_NE(tcp1, nullptr);
  Deadline until = Deadline::AfterMs(5000);
  while (tcp1->refused_connections() < 5 && !until.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(tcp1->refused_connections(), 5);
  // And the job is undisturbed.
  Exchange(r, 0, 1, {1 << 20, 0, 3});
}

TEST(TcpTransport, PeerDestroyedMidTransferFailsPendingReceive) {
  Ranks r = ListenAll(2, 2, 16 << 10);
  ConnectAll(r);
  constexpr size_t kBig = 64 << 20;
  std::vector<uint8_t> out(kBig, 0x5a), in(kBig);
  std::vector<uint8_t> other(16);
  auto recv_big = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 1);
  auto recv_other = r.endpoints[1][0]->PostRecv(other.data(), other.size(), 2);
  ASSERT_TRUE(recv_big.ok() && recv_other.ok());
  auto send = r.endpoints[0][1]->PostSend(out.data(), out.size(), 1);
  ASSERT_TRUE(send.ok());
  // Rank 0 goes away while its 64 MiB are on the wire.
  r.endpoints[0].clear();
  r.transports[0].reset();
  auto t0 = Clock::now();
  Status st = (*recv_big)->Wait(Deadline::AfterMs(10000));
  auto took = Clock::now() - t0;
  if (st.ok()) {
    // The whole message made it out before the close: then it must be intact.
    EXPECT_EQ(in, out);
  } else {
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
    EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("tcp"), std::string::npos) << st.message();
    EXPECT_LT(took, std::chrono::seconds(1));
  }
  // A receive nothing will ever match fails either way, naming the peer, promptly.
  auto t1 = Clock::now();
  Status st2 = (*recv_other)->Wait(Deadline::AfterMs(1000));
  EXPECT_EQ(st2.code(), StatusCode::kUnavailable) << st2.ToString();
  EXPECT_NE(st2.message().find("rank 0"), std::string::npos) << st2.message();
  EXPECT_LT(Clock::now() - t1, std::chrono::seconds(1));
  // The endpoint refuses new work with the same error.
  auto late = r.endpoints[1][0]->PostSend(out.data(), 8, 3);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable);
}

TEST(TcpTransport, MessagesThatArrivedSurviveThePeerLeaving) {
  Ranks r = ListenAll(2, 3, 16 << 10);
  ConnectAll(r);
  std::vector<std::vector<uint8_t>> out = {Pattern(10, 1), Pattern(200000, 2), Pattern(0, 3)};
  for (size_t i = 0; i < out.size(); ++i) {
    auto s = r.endpoints[0][1]->PostSend(out[i].data(), out[i].size(), 9);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Wait(Soon()).ok());
  }
  // Sends completed (in the kernel); the sender now leaves before any receive is posted.
  r.endpoints[0].clear();
  r.transports[0].reset();
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<uint8_t> in(out[i].size());
    auto q = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 9);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    Status st = (*q)->Wait(Soon());
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(in, out[i]);
  }
  std::vector<uint8_t> in(4);
  auto q = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 9);
  Status st = q.ok() ? (*q)->Wait(Deadline::AfterMs(5000)) : q.status();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
}

// The peer is a real process that dies without warning.
TEST(TcpTransport, KilledPeerProcessFailsPendingReceiveWithinASecond) {
  constexpr size_t kMsg = 8 << 20;
  int to_child[2], to_parent[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(to_parent), 0);
  const std::string job = NewJobId();
  // Fork before this process starts any thread of its own (earlier tests joined theirs).
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(to_child[1]);
    close(to_parent[0]);
    auto t = CreateTcpTransport(Config(0, 2, job, 2, 64 << 10));
    if (!t.ok()) _exit(2);
    auto addr = (*t)->Listen();
    if (!addr.ok()) _exit(3);
    std::string mine = *addr + "\n";
    if (write(to_parent[1], mine.data(), mine.size()) != static_cast<ssize_t>(mine.size()))
      _exit(4);
    char buf[256] = {0};
    ssize_t n = read(to_child[0], buf, sizeof(buf) - 1);
    if (n <= 0) _exit(5);
    std::string peer_addr(buf, static_cast<size_t>(n));
    peer_addr.resize(peer_addr.find('\n'));
    auto eps = (*t)->Connect({PeerInfo{1, "h", 0, peer_addr}}, Deadline::AfterMs(20000));
    if (!eps.ok()) _exit(6);
    std::vector<uint8_t> data = Pattern(kMsg, 7);
    while (true) {  // until killed
      auto s = (*eps)[0]->PostSend(data.data(), data.size(), 7);
      if (!s.ok() || !(*s)->Wait(Deadline::AfterMs(60000)).ok()) _exit(7);
    }
  }
  close(to_child[0]);
  close(to_parent[1]);
  auto t = CreateTcpTransport(Config(1, 2, job, 2, 64 << 10));
  ASSERT_TRUE(t.ok());
  auto addr = (*t)->Listen();
  ASSERT_TRUE(addr.ok());
  std::string mine = *addr + "\n";
  ASSERT_EQ(write(to_child[1], mine.data(), mine.size()), static_cast<ssize_t>(mine.size()));
  char buf[256] = {0};
  ssize_t n = read(to_parent[0], buf, sizeof(buf) - 1);
  ASSERT_GT(n, 0);
  std::string child_addr(buf, static_cast<size_t>(n));
  child_addr.resize(child_addr.find('\n'));
  auto eps = (*t)->Connect({PeerInfo{0, "h", pid, child_addr}}, Deadline::AfterMs(20000));
  ASSERT_TRUE(eps.ok()) << eps.status().ToString();
  Endpoint& ep = *(*eps)[0];
  std::vector<uint8_t> in(kMsg);
  auto first = ep.PostRecv(in.data(), in.size(), 7);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Wait(Soon()).ok());
  EXPECT_EQ(in, Pattern(kMsg, 7));
  // The child keeps streaming; this receive is in flight when it dies.
  auto pending = ep.PostRecv(in.data(), in.size(), 7);
  auto pending2 = ep.PostRecv(in.data(), in.size(), 8);
  ASSERT_TRUE(pending.ok() && pending2.ok());
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  auto t0 = Clock::now();
  Status st = (*pending2)->Wait(Deadline::AfterMs(5000));
  auto took = Clock::now() - t0;
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  EXPECT_TRUE(WIFSIGNALED(wstatus)) << "child exited early with " << WEXITSTATUS(wstatus);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
  EXPECT_LT(took, std::chrono::seconds(1));
  Status st1 = (*pending)->Wait(Deadline::AfterMs(1000));
  // The message in flight may still have completed just before the kill; if not, it failed too.
  if (!st1.ok()) {
    EXPECT_EQ(st1.code(), StatusCode::kUnavailable) << st1.ToString();
  }
  close(to_child[1]);
  close(to_parent[0]);
}

class TcpSockets : public ::testing::TestWithParam<int> {};

TEST_P(TcpSockets, ThreeRanksAllSizesAndTags) {
  Ranks r = ListenAll(3, GetParam(), 16 << 10);
  ConnectAll(r);
  std::vector<size_t> sizes = {
      0, 1, 16 << 10, (16 << 10) - 1, (16 << 10) + 1, 0, 100003, 1 << 20, 7, (5 << 20) + 11,
      3, 0, 65536};
  std::vector<std::thread> threads;
  for (int from = 0; from < 3; ++from) {
    for (int to = 0; to < 3; ++to) {
      if (from != to)
        threads.emplace_back([&r, from, to, &sizes] { Exchange(r, from, to, sizes); });
    }
  }
  for (auto& t : threads) t.join();
}

INSTANTIATE_TEST_SUITE_P(Counts, TcpSockets, ::testing::Values(1, 4),
                         [](const auto& p) { return std::to_string(p.param) + "sockets"; });

TEST(TcpTransport, EightRanksAllPairsAtOnce) {
  Ranks r = ListenAll(8, 2, 16 << 10);
  ConnectAll(r);
  std::vector<size_t> sizes = {0, 3, (16 << 10) + 5, 100000, 1, 250000};
  std::vector<std::thread> threads;
  for (int from = 0; from < 8; ++from) {
    for (int to = 0; to < 8; ++to) {
      if (from != to) {
        threads.emplace_back([&r, from, to, &sizes] { Exchange(r, from, to, sizes); });
      }
    }
  }
  for (auto& t : threads) t.join();
}

TEST(TcpTransport, SizeMismatchOfAMultiChunkMessageDrainsIt) {
  Ranks r = ListenAll(2, 2, 16 << 10);
  ConnectAll(r);
  auto big = Pattern((1 << 20) + 3, 1);
  std::vector<uint8_t> small(512 << 10);
  // Once with the receive posted first, once with the message already buffered.
  for (int round = 0; round < 2; ++round) {
    RequestPtr recv, send;
    if (round == 0) {
      recv = *r.endpoints[1][0]->PostRecv(small.data(), small.size(), 0x77);
      send = *r.endpoints[0][1]->PostSend(big.data(), big.size(), 0x77);
    } else {
      send = *r.endpoints[0][1]->PostSend(big.data(), big.size(), 0x77);
      ASSERT_TRUE(send->Wait(Soon()).ok());
      recv = *r.endpoints[1][0]->PostRecv(small.data(), small.size(), 0x77);
    }
    Status st = recv->Wait(Soon());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    for (const char* part : {"rank 0", "1048579", "524288", "0x77"}) {
      EXPECT_NE(st.message().find(part), std::string::npos) << part << " in " << st.message();
    }
    EXPECT_TRUE(send->Wait(Soon()).ok());
    Exchange(r, 0, 1, {10, 40000, 0});
  }
}

TEST(TcpTransport, AbortFailsPendingRequestsAndThePeerNotices) {
  Ranks r = ListenAll(2, 2, 16 << 10);
  ConnectAll(r);
  std::vector<uint8_t> out(32 << 20, 1), in(16), never(16);
  // The receiver buffers unexpected data, so this send may well finish before the abort.
  auto send = r.endpoints[0][1]->PostSend(out.data(), out.size(), 1);
  auto local = r.endpoints[0][1]->PostRecv(never.data(), never.size(), 3);  // nobody sends it
  auto remote = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 2);
  ASSERT_TRUE(send.ok() && local.ok() && remote.ok());
  r.transports[0]->Abort(AbortedError("stop now"));
  Status ls = (*local)->Wait(Soon());
  EXPECT_EQ(ls.code(), StatusCode::kAborted) << ls.ToString();
  EXPECT_EQ(ls.message(), "stop now");
  Status st = (*send)->Wait(Soon());
  EXPECT_TRUE(st.ok() || st.code() == StatusCode::kAborted) << st.ToString();
  Status rs = (*remote)->Wait(Deadline::AfterMs(5000));
  EXPECT_EQ(rs.code(), StatusCode::kUnavailable) << rs.ToString();
  EXPECT_NE(rs.message().find("rank 0"), std::string::npos) << rs.message();
  auto again = r.endpoints[0][1]->PostSend(out.data(), 1, 1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAborted);
}

TEST(TcpTransport, ConnectDeadlineNamesTheMissingRank) {
  Ranks r = ListenAll(3, 2, 0);
  // Rank 0 listens but never calls Connect(): ranks 1 and 2 wait for it in vain.
  std::vector<Status> errors(3);
  std::vector<std::thread> threads;
  for (int i = 1; i < 3; ++i) {
    threads.emplace_back([&, i] {
      std::vector<PeerInfo> peers;
      for (int p = 0; p < 3; ++p) {
        if (p != i) peers.push_back(r.infos[p]);
      }
      auto eps = r.transports[i]->Connect(peers, Deadline::AfterMs(500));
      errors[i] = eps.ok() ? Status() : eps.status();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(errors[i].code(), StatusCode::kDeadlineExceeded) << errors[i].ToString();
    EXPECT_NE(errors[i].message().find("rank 0 did not connect"), std::string::npos)
        << errors[i].message();
  }
}

TEST(TcpTransport, MismatchedSocketCountIsReportedClearly) {
  std::string job = NewJobId();
  auto a = CreateTcpTransport(Config(0, 2, job, 2, 0));
  auto b = CreateTcpTransport(Config(1, 2, job, 3, 0));
  ASSERT_TRUE(a.ok() && b.ok());
  auto addr_a = (*a)->Listen();
  auto addr_b = (*b)->Listen();
  ASSERT_TRUE(addr_a.ok() && addr_b.ok());
  Status sa, sb;
  std::thread ta([&] {
    auto eps = (*a)->Connect({PeerInfo{1, "h", 0, *addr_b}}, Deadline::AfterMs(2000));
    sa = eps.ok() ? Status() : eps.status();
  });
  auto eps = (*b)->Connect({PeerInfo{0, "h", 0, *addr_a}}, Deadline::AfterMs(1000));
  sb = eps.ok() ? Status() : eps.status();
  ta.join();
  EXPECT_FALSE(sa.ok());
  EXPECT_NE(sa.message().find("socket"), std::string::npos) << sa.message();
  EXPECT_FALSE(sb.ok());
  EXPECT_NE(sb.message().find("rank 0 did not connect"), std::string::npos) << sb.message();
}

// Connects ranks 0 and 1 (both listening on loopback, both with host id "tcp-test-host", socket
// count from WEFT_TCP_SOCKETS) where each sees the other under the host id given for it; returns
// both Connect() results' statuses and the pair's sockets (both ends, this process holds them).
struct AutoPair {
  Status s0, s1;
  int sockets_at_1 = 0;
};
AutoPair ConnectAutoPair(const std::string& host_seen_by_0, const std::string& host_seen_by_1) {
  AutoPair out;
  const std::string job = NewJobId();
  auto a = CreateTcpTransport(Config(0, 2, job, /*sockets=*/0, 0));
  auto b = CreateTcpTransport(Config(1, 2, job, /*sockets=*/0, 0));
  if (!a.ok() || !b.ok()) {
    out.s0 = a.ok() ? b.status() : a.status();
    return out;
  }
  auto addr_a = (*a)->Listen();
  auto addr_b = (*b)->Listen();
  if (!addr_a.ok() || !addr_b.ok()) {
    out.s0 = addr_a.ok() ? addr_b.status() : addr_a.status();
    return out;
  }
  std::vector<std::unique_ptr<Endpoint>> eps_a, eps_b;
  // Rank 1 (the one dialed) enters Connect() first, so it knows what rank 0 should send when its
  // sockets arrive and can refuse them at the handshake; a socket that arrives before Connect()
  // is only checked once Connect() knows the peer (the dialer then learns of it as a closed
  // connection, not from the handshake).
  std::thread tb([&] {
    auto eps = (*b)->Connect({PeerInfo{0, host_seen_by_1, 0, *addr_a}}, Deadline::AfterMs(2000));
    out.s1 = eps.ok() ? Status() : eps.status();
    if (eps.ok()) eps_b = std::move(*eps);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto eps = (*a)->Connect({PeerInfo{1, host_seen_by_0, 0, *addr_b}}, Deadline::AfterMs(3000));
  out.s0 = eps.ok() ? Status() : eps.status();
  if (eps.ok()) eps_a = std::move(*eps);
  tb.join();
  out.sockets_at_1 = static_cast<int>(CongestionOfSocketsAt(ListenPort(*addr_b)).size());
  return out;
}

TEST(TcpTransport, AutoGivesOneSocketToAPeerOnThisHostAndTwoToOthers) {
  ASSERT_TRUE(kSocketsKnobPinned);
  AutoPair same = ConnectAutoPair("tcp-test-host", "tcp-test-host");
  ASSERT_TRUE(same.s0.ok() && same.s1.ok()) << same.s0.ToString() << " / " << same.s1.ToString();
  EXPECT_EQ(same.sockets_at_1, 2);  // one connection, both of its ends
  AutoPair other = ConnectAutoPair("another-host", "another-host");
  ASSERT_TRUE(other.s0.ok() && other.s1.ok()) << other.s0.ToString() << " / " << other.s1.ToString();
  EXPECT_EQ(other.sockets_at_1, 4);
}

TEST(TcpTransport, PairThatDisagreesOnTheHostIsRefusedOnBothSides) {
  ASSERT_TRUE(kSocketsKnobPinned);
  // Rank 0 sees rank 1 on its own host and dials one socket; rank 1 sees rank 0 elsewhere and
  // expects two.
  AutoPair p = ConnectAutoPair("tcp-test-host", "another-host");
  ASSERT_FALSE(p.s0.ok());
  EXPECT_NE(p.s0.message().find("sockets per peer differ"), std::string::npos) << p.s0.message();
  ASSERT_FALSE(p.s1.ok());
  EXPECT_NE(p.s1.message().find("rank 0"), std::string::npos) << p.s1.message();
  EXPECT_NE(p.s1.message().find("0 of 2 sockets"), std::string::npos) << p.s1.message();
}

// In a fresh process per value (a knob is read once), `knob` set to each of `bad` makes
// CreateTcpTransport fail with "KNOB=value: " followed by `want`. `sockets`: the config's count
// (0 reads WEFT_TCP_SOCKETS).
void ExpectKnobRefused(const char* knob, std::initializer_list<const char*> bad, int sockets,
                       const std::string& want) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const char* value : bad) {
    EXPECT_EXIT(
        {
          setenv(knob, value, 1);
          auto t = CreateTcpTransport(Config(0, 2, NewJobId(), sockets, 0));
          std::fprintf(stderr, "%s\n", t.ok() ? "created" : t.status().message().c_str());
          std::exit(t.ok() ? 0 : 3);
        },
        testing::ExitedWithCode(3), std::string(knob) + "=" + value + ": " + want);
  }
}

TEST(TcpTransportDeathTest, MalformedSocketsKnobFailsCreationNamingIt) {
  ExpectKnobRefused("WEFT_TCP_SOCKETS", {"abc", "0", "65", "2x"}, 0, "want 1..64 or auto");
}

// Not an assertion: prints 64 MiB ping-pong bandwidth and small-message round-trip latency.
TEST(TcpTransport, ThroughputPrint) {
  constexpr size_t kBytes = 64 << 20;
  constexpr int kIters = 4;
  for (int sockets : {1, 2, 4}) {
    Ranks r = ListenAll(2, sockets, 0);  // default chunk (WEFT_TCP_CHUNK_BYTES)
    ConnectAll(r);
    std::vector<uint8_t> a(kBytes, 1), b(kBytes), back(kBytes);
    auto round_trip = [&] {
      std::thread echo([&] {
        auto q = r.endpoints[1][0]->PostRecv(b.data(), kBytes, 0);
        ASSERT_TRUE(q.ok() && (*q)->Wait(Soon()).ok());
        auto s = r.endpoints[1][0]->PostSend(b.data(), kBytes, 0);
        ASSERT_TRUE(s.ok() && (*s)->Wait(Soon()).ok());
      });
      auto s = r.endpoints[0][1]->PostSend(a.data(), kBytes, 0);
      auto q = r.endpoints[0][1]->PostRecv(back.data(), kBytes, 0);
      ASSERT_TRUE(s.ok() && q.ok());
      ASSERT_TRUE((*s)->Wait(Soon()).ok());
      ASSERT_TRUE((*q)->Wait(Soon()).ok());
      echo.join();
    };
    round_trip();  // warm-up: socket buffers grow, pages fault in
    auto t0 = Clock::now();
    for (int i = 0; i < kIters; ++i) round_trip();
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    double gbs = 2.0 * kBytes * kIters / secs / 1e9;
    EXPECT_EQ(back, a);
    // Small-message round trips, for the latency side of the picture.
    constexpr int kPings = 2000;
    uint64_t ping = 0, pong = 0;
    std::vector<double> rtt_us;
    std::thread echo([&] {
      for (int i = 0; i < kPings; ++i) {
        auto q = r.endpoints[1][0]->PostRecv(&pong, 8, 5);
        ASSERT_TRUE(q.ok() && (*q)->Wait(Soon()).ok());
        auto s = r.endpoints[1][0]->PostSend(&pong, 8, 6);
        ASSERT_TRUE(s.ok() && (*s)->Wait(Soon()).ok());
      }
    });
    for (int i = 0; i < kPings; ++i) {
      auto t = Clock::now();
      auto q = r.endpoints[0][1]->PostRecv(&ping, 8, 6);
      auto s = r.endpoints[0][1]->PostSend(&ping, 8, 5);
      ASSERT_TRUE(q.ok() && s.ok() && (*s)->Wait(Soon()).ok() && (*q)->Wait(Soon()).ok());
      rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    }
    echo.join();
    std::sort(rtt_us.begin(), rtt_us.end());
    std::printf(
        "[ tcp      ] %d socket(s) per pair: 64 MiB ping-pong %.2f GB/s; 8-byte round trip "
        "median %.1f us, p99 %.1f us\n",
        sockets, gbs, rtt_us[kPings / 2], rtt_us[kPings * 99 / 100]);
  }
}

// ---- Addresses: the published list, interface choice, and dialing several candidates ----------

TEST(SocketUtil, LoopbackHostsAndPeerAddresses) {
  for (const char* h : {"127.0.0.1", "127.5.6.7", "::1", "localhost", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  }
  for (const char* h : {"10.0.0.1", "::ffff:10.0.0.1", "0.0.0.0", "", "128.0.0.1"}) {
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
  }
  auto l = ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  auto c = ConnectTcp(HostPort{"127.0.0.1", l->port}, Deadline::AfterMs(5000));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto peer = PeerAddressOf(c->get());
  ASSERT_TRUE(peer.ok()) << peer.status().ToString();
  EXPECT_EQ(*peer, "127.0.0.1");
  auto peer_port = PeerHostPortOf(c->get());
  ASSERT_TRUE(peer_port.ok()) << peer_port.status().ToString();
  EXPECT_EQ(peer_port->ToString(), "127.0.0.1:" + std::to_string(l->port));
  auto local = LocalAddressOf(c->get());
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(*local, "127.0.0.1");
  EXPECT_FALSE(PeerAddressOf(l->fd.get()).ok());  // a listener has no peer
}

TEST(TcpAddressList, ParsesOneOrSeveralHostsWithOnePort) {
  auto one = ParseHostPortList("10.0.0.1:29500");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].host, "10.0.0.1");
  EXPECT_EQ((*one)[0].port, 29500);
  auto v6 = ParseHostPortList("[fe80::1]:7");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  ASSERT_EQ(v6->size(), 1u);
  EXPECT_EQ((*v6)[0].host, "fe80::1");

  auto many = ParseHostPortList("10.0.0.1,192.168.1.5,[fd00::2],node-b:29500");
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  ASSERT_EQ(many->size(), 4u);
  const char* hosts[] = {"10.0.0.1", "192.168.1.5", "fd00::2", "node-b"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*many)[i].host, hosts[i]);
    EXPECT_EQ((*many)[i].port, 29500);
  }
  // One host formats exactly as a single HostPort always did; a list round-trips.
  EXPECT_EQ(FormatHostPortList({"10.0.0.1"}, 80), (HostPort{"10.0.0.1", 80}.ToString()));
  EXPECT_EQ(FormatHostPortList({"10.0.0.1", "fd00::2"}, 80), "10.0.0.1,[fd00::2]:80");
  auto back = ParseHostPortList(FormatHostPortList({"10.0.0.1", "fd00::2"}, 80));
  ASSERT_TRUE(back.ok() && back->size() == 2u);
  EXPECT_EQ((*back)[1].host, "fd00::2");
}

TEST(TcpAddressList, MalformedListsAreRejectedNamingTheText) {
  for (const char* text : {"a,,b:1", ",a:1", "a,:1", "a,b", "a,b:", "a,b:0", "a,b:99999", "a,b:x1",
                           "[::1,a:1", "a b,c:1", "a,[]:1", "", "a:"}) {
    auto r = ParseHostPortList(text);
    ASSERT_FALSE(r.ok()) << "'" << text << "' parsed";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(r.status().message().find(std::string("'") + text + "'"), std::string::npos)
        << r.status().message();
  }
}

TEST(TcpAddressList, ConnectRejectsAMalformedPeerAddress) {
  auto t = CreateTcpTransport(Config(0, 2, NewJobId(), 1, 0));
  ASSERT_TRUE(t.ok());
  auto eps = (*t)->Connect({PeerInfo{1, "h", 0, "10.0.0.1,,10.0.0.2:5"}}, Deadline::AfterMs(1000));
  ASSERT_FALSE(eps.ok());
  EXPECT_EQ(eps.status().code(), StatusCode::kInvalidArgument) << eps.status().ToString();
  EXPECT_NE(eps.status().message().find("rank 1"), std::string::npos) << eps.status().message();
}

std::vector<std::string> Names(const std::vector<InterfaceAddress>& v) {
  std::vector<std::string> out;
  for (const auto& ia : v) out.push_back(ia.ifname);
  return out;
}

TEST(InterfaceChoice, OrderFollowsTheSpecWithLoopbackLast) {
  // In the kernel's order, loopback first as it usually is.
  const std::vector<InterfaceAddress> up = {
      {"lo", "127.0.0.1", true},  {"eth0", "10.0.0.1", false}, {"docker0", "172.17.0.1", false},
      {"ib0", "10.1.0.1", false}, {"eth1", "10.0.1.1", false}, {"veth12ab", "172.18.0.1", false},
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(Names(SelectInterfaces("", up)),
            (V{"eth0", "docker0", "ib0", "eth1", "veth12ab", "lo"}));
  // Listed prefixes are preferences: ib first, then both eth ones in interface order.
  EXPECT_EQ(Names(SelectInterfaces("ib,eth", up)), (V{"ib0", "eth0", "eth1"}));
  EXPECT_EQ(Names(SelectInterfaces("eth1,docker,eth", up)), (V{"eth1", "docker0", "eth0"}));
  // Loopback stays last even when listed first.
  EXPECT_EQ(Names(SelectInterfaces("lo,eth", up)), (V{"eth0", "eth1", "lo"}));
  // ^ excludes, keeping interface order.
  EXPECT_EQ(Names(SelectInterfaces("^docker,veth", up)), (V{"eth0", "ib0", "eth1", "lo"}));
  EXPECT_EQ(Names(SelectInterfaces("^lo", up)), (V{"eth0", "docker0", "ib0", "eth1", "veth12ab"}));
  EXPECT_TRUE(SelectInterfaces("wlan", up).empty());
  // Empty items in a spec are ignored.
  EXPECT_EQ(Names(SelectInterfaces(",ib,,", up)), (V{"ib0"}));

  EXPECT_TRUE(IfnameSelected("", "anything"));
  EXPECT_TRUE(IfnameSelected("eth,ib", "ib0"));
  EXPECT_FALSE(IfnameSelected("eth,ib", "docker0"));
  EXPECT_FALSE(IfnameSelected("^docker,veth", "veth0"));
  EXPECT_TRUE(IfnameSelected("^docker,veth", "eth0"));
}

TEST(InterfaceChoice, CandidateAddressesNameTheKnobWhenNothingMatches) {
  auto none = CandidateAddresses("no-such-if", "WEFT_TCP_IFNAME");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("WEFT_TCP_IFNAME='no-such-if'"), std::string::npos)
      << none.status().message();
  auto lo = CandidateAddresses("lo");
  ASSERT_TRUE(lo.ok()) << lo.status().ToString();
  EXPECT_EQ((*lo)[0].address, "127.0.0.1");
  EXPECT_TRUE((*lo)[0].loopback);
}

TEST(InterfaceChoice, ListeningOnEveryInterfacePublishesAParsableList) {
  TransportConfig c = Config(0, 1, NewJobId(), 1, 0);
  c.listen_host = "";
  auto t = CreateTcpTransport(c);
  ASSERT_TRUE(t.ok());
  auto addr = (*t)->Listen();
  ASSERT_TRUE(addr.ok()) << addr.status().ToString();
  auto hosts = ParseHostPortList(*addr);
  ASSERT_TRUE(hosts.ok()) << hosts.status().ToString();
  ASSERT_FALSE(hosts->empty());
  // Loopback only when it is all there is.
  size_t loopback = 0;
  for (const auto& hp : *hosts) loopback += hp.host.rfind("127.", 0) == 0;
  EXPECT_TRUE(loopback == 0 || loopback == hosts->size()) << *addr;
}

// A listener on `host`:`port` that accepts and at once closes every connection, counting them:
// an address that reaches something which is not the peer.
class ClosingListener {
 public:
  ClosingListener(const std::string& host, int port) {
    auto l = ListenTcp(host, port);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    if (!l.ok()) return;
    fd_ = std::move(l->fd);
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        auto c = AcceptTcp(fd_.get());
        if (c.ok()) accepted_++;
      }
    });
  }
  ~ClosingListener() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int accepted() const { return accepted_.load(); }

 private:
  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

TEST(TcpTransport, DialFallsBackToTheNextAddressAndKeepsItForEverySocket) {
  Ranks r = ListenAll(2, 3, 16 << 10);
  auto server = AddressOf(r, 1);
  ASSERT_TRUE(server.ok());
  // 127.0.0.2 at rank 1's port reaches a process that is not rank 1; it is tried first.
  ClosingListener decoy("127.0.0.2", server->port);
  r.infos[1].address = FormatHostPortList({"127.0.0.2", "127.0.0.1"}, server->port);
  auto t0 = Clock::now();
  ConnectAll(r);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(decoy.accepted(), 1) << "sockets 1 and 2 must go straight to the address that worked";
  Exchange(r, 0, 1, {0, 1, 100000});
  Exchange(r, 1, 0, {7, 70000});
}

TEST(TcpTransport, AnAddressReachingAnotherRankIsNotTakenForThePeer) {
  std::string job = NewJobId();
  auto a = CreateTcpTransport(Config(0, 3, job, 1, 0));
  auto b = CreateTcpTransport(Config(1, 3, job, 1, 0));
  ASSERT_TRUE(a.ok() && b.ok());
  auto addr_b = (*b)->Listen();
  ASSERT_TRUE(addr_b.ok());
  // Rank 0 is told that rank 2 lives where rank 1 does: same secret and job, wrong rank.
  auto eps = (*a)->Connect({PeerInfo{2, "h", 0, *addr_b}}, Deadline::AfterMs(1000));
  ASSERT_FALSE(eps.ok());
  EXPECT_NE(eps.status().message().find("rank 2"), std::string::npos) << eps.status().message();
  EXPECT_NE(eps.status().message().find("another rank of this job"), std::string::npos)
      << eps.status().message();
  // Rank 1 counts the refusal just after telling the dialer.
  auto* tb = dynamic_cast<TcpTransport*>(b->get());
  ASSERT_NE(tb, nullptr);
  Deadline until = Deadline::AfterMs(5000);
  while (tb->refused_connections() < 1 && !until.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(tb->refused_connections(), 1);
}

TEST(TcpTransport, NoAddressAnsweringFailsNamingEachWithinTheDeadline) {
  Ranks r = ListenAll(2, 2, 0);
  auto server = AddressOf(r, 1);
  ASSERT_TRUE(server.ok());
  // Nothing listens on 127.0.0.2 or 127.0.0.3: both refuse at once, round after round.
  const std::string dead = FormatHostPortList({"127.0.0.2", "127.0.0.3"}, server->port);
  Status s0, s1;
  auto t0 = Clock::now();
  std::thread t([&] {
    auto eps = r.transports[1]->Connect({r.infos[0]}, Deadline::AfterMs(1500));
    s1 = eps.ok() ? Status() : eps.status();
  });
  auto eps =
      r.transports[0]->Connect({PeerInfo{1, "tcp-test-host", 0, dead}}, Deadline::AfterMs(1500));
  s0 = eps.ok() ? Status() : eps.status();
  t.join();
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(4000));
  ASSERT_FALSE(s0.ok());
  for (const std::string& want :
       {std::string("rank 1 did not connect"), std::string("none of its 2 addresses"),
        "127.0.0.2:" + std::to_string(server->port), "127.0.0.3:" + std::to_string(server->port),
        std::string("WEFT_SOCKET_IFNAME")}) {
    EXPECT_NE(s0.message().find(want), std::string::npos) << want << " in " << s0.message();
  }
  ASSERT_FALSE(s1.ok());
  EXPECT_NE(s1.message().find("rank 0 did not connect"), std::string::npos) << s1.message();
  EXPECT_NE(s1.message().find(r.infos[1].address), std::string::npos) << s1.message();
}

TEST(TcpTransport, LoopbackSocketsUseCubicOrWhatTheKnobNames) {
  // auto: every socket of a loopback pair runs cubic, whatever the system default (bbr on the dev
  // VM, whose pacing halved loopback exchanges in some runs); a name applies to every socket;
  // system leaves the default. Each case: 2 ranks x 2 sockets, both ends = 4 sockets.
  const std::string system = SystemCongestionControl();
  ASSERT_FALSE(system.empty());
  for (const std::string& policy : {std::string("auto"), std::string("reno"),
                                    std::string("system")}) {
    TcpTransportOptions options;
    options.congestion = policy;
    Ranks r = ListenAll(2, 2, 64 << 10, options);
    ConnectAll(r);
    Exchange(r, 0, 1, {8, 1 << 20});
    const std::string want = policy == "auto" ? "cubic" : policy == "system" ? system : policy;
    std::vector<std::string> got = CongestionOfSocketsAt(ListenPort(r.infos[1].address));
    EXPECT_EQ(got, std::vector<std::string>(4, want)) << "policy " << policy;
  }
}

TEST(TcpTransport, CongestionKnobRejectsUnknownAlgorithmsNamingTheChoices) {
  for (const char* bad : {"no_such_cc", "Cubic!", "a_name_longer_than_fifteen"}) {
    TcpTransportOptions options;
    options.congestion = bad;
    auto t = CreateTcpTransport(Config(0, 2, NewJobId(), 1, 0), options);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("WEFT_TCP_CONGESTION=\"" + std::string(bad)),
              std::string::npos)
        << t.status().ToString();
    EXPECT_NE(t.status().message().find("cubic"), std::string::npos) << t.status().ToString();
  }
}

// Ranks 0 and 1 of one job, 2 sockets per peer, with the given host ids and listen hosts,
// listening (their published addresses in addr_a / addr_b). Needs an address that is not
// loopback; every machine this suite runs on (CI, the dev VM, containers) has one, in nic.
struct NicPair {
  std::string nic;
  std::unique_ptr<Transport> a, b;
  std::string addr_a, addr_b;
};
Status MakeNicPair(NicPair* p, const std::string& host_a, const std::string& host_b,
                   const std::string& listen_a, const std::string& listen_b) {
  auto outer = CandidateAddresses("^lo");
  if (!outer.ok()) {
    return outer.status().WithContext("this test needs a non-loopback IPv4 interface");
  }
  p->nic = (*outer)[0].address;
  const std::string job = NewJobId();
  TransportConfig ca = Config(0, 2, job, 2, 0), cb = Config(1, 2, job, 2, 0);
  ca.host_id = host_a;
  cb.host_id = host_b;
  ca.listen_host = listen_a.empty() ? p->nic : listen_a;
  cb.listen_host = listen_b.empty() ? p->nic : listen_b;
  WEFT_ASSIGN_OR_RETURN(p->a, CreateTcpTransport(ca));
  WEFT_ASSIGN_OR_RETURN(p->b, CreateTcpTransport(cb));
  WEFT_ASSIGN_OR_RETURN(p->addr_a, p->a->Listen());
  WEFT_ASSIGN_OR_RETURN(p->addr_b, p->b->Listen());
  return Status::Ok();
}

TEST(TcpTransport, PeersWithThisHostsIdGetCubicOverAnyAddress) {
  // Two ranks of one host that reach each other through a NIC address (WEFT_SOCKET_IFNAME, a pod
  // IP) still never leave the machine: auto gives them cubic as it does loopback pairs.
  NicPair p;
  Status made = MakeNicPair(&p, "tcp-test-host", "tcp-test-host", "", "");
  ASSERT_TRUE(made.ok()) << made.ToString();
  std::vector<std::unique_ptr<Endpoint>> eps_a, eps_b;
  Status sa, sb;
  std::thread ta([&] {
    auto eps = p.a->Connect({PeerInfo{1, "tcp-test-host", 0, p.addr_b}}, Deadline::AfterMs(10000));
    sa = eps.ok() ? Status() : eps.status();
    if (eps.ok()) eps_a = std::move(*eps);
  });
  auto eps = p.b->Connect({PeerInfo{0, "tcp-test-host", 0, p.addr_a}}, Deadline::AfterMs(10000));
  sb = eps.ok() ? Status() : eps.status();
  if (eps.ok()) eps_b = std::move(*eps);
  ta.join();
  ASSERT_TRUE(sa.ok()) << sa.ToString();
  ASSERT_TRUE(sb.ok()) << sb.ToString();
  EXPECT_EQ(CongestionOfSocketsAt(ListenPort(p.addr_b)), std::vector<std::string>(4, "cubic"));
}

TEST(TcpTransport, LoopbackAddressesAreSkippedForAPeerOnAnotherHost) {
  // Without a non-loopback address the test fails saying so rather than passing untested.
  // Rank 1 listens on every interface: reachable through both 127.0.0.1 and the NIC.
  NicPair p;
  Status made = MakeNicPair(&p, "host-a", "host-b", "127.0.0.1", "0.0.0.0");
  ASSERT_TRUE(made.ok()) << made.ToString();
  const std::string nic = p.nic;
  auto hp = ParseHostPortList(p.addr_b);
  ASSERT_TRUE(hp.ok());
  // Loopback listed first: a peer on another host must not be dialed there.
  const std::string offered = FormatHostPortList({"127.0.0.1", nic}, (*hp)[0].port);
  const LogLevel saved = CurrentLogLevel();
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  Status sa, sb;
  std::vector<std::unique_ptr<Endpoint>> eps_a;  // kept open: the sockets are looked at below
  std::thread ta([&] {
    auto eps = p.a->Connect({PeerInfo{1, "host-b", 0, offered}}, Deadline::AfterMs(10000));
    sa = eps.ok() ? Status() : eps.status();
    if (eps.ok()) eps_a = std::move(*eps);
  });
  auto eps = p.b->Connect({PeerInfo{0, "host-a", 0, p.addr_a}}, Deadline::AfterMs(10000));
  sb = eps.ok() ? Status() : eps.status();
  ta.join();
  std::string log = ::testing::internal::GetCapturedStderr();
  SetLogLevel(saved);
  ASSERT_TRUE(sa.ok()) << sa.ToString();
  ASSERT_TRUE(sb.ok()) << sb.ToString();
  EXPECT_NE(log.find("reached rank 1 at " + nic + ":"), std::string::npos) << log;
  EXPECT_EQ(log.find("127.0.0.1:" + std::to_string((*hp)[0].port)), std::string::npos) << log;
  // Not a loopback pair: WEFT_TCP_CONGESTION=auto leaves the system's algorithm.
  EXPECT_EQ(CongestionOfSocketsAt((*hp)[0].port),
            std::vector<std::string>(4, SystemCongestionControl()));
}


// ---- Receives reduced as they land (PostRecvReduce) --------------------------------------------

// Elements of `dtype` from a seed, small enough that sums and products stay finite.
std::vector<uint8_t> Values(DType dtype, size_t count, int seed) {
  std::vector<uint8_t> v(count * DTypeSize(dtype));
  for (size_t i = 0; i < count; ++i) {
    const int x = static_cast<int>((i * 7 + static_cast<size_t>(seed) * 13) % 23) - 11;
    uint8_t* at = v.data() + i * DTypeSize(dtype);
    switch (dtype) {
      case DType::kFloat32: { float f = 0.25f * static_cast<float>(x) + 0.125f; std::memcpy(at, &f, 4); break; }
      case DType::kFloat64: { double d = 0.5 * x + 1e-9 * static_cast<double>(i); std::memcpy(at, &d, 8); break; }
      case DType::kInt64: { int64_t q = x * 1000003LL; std::memcpy(at, &q, 8); break; }
      case DType::kInt8: { int8_t b = static_cast<int8_t>(x); std::memcpy(at, &b, 1); break; }
      case DType::kFloat16: { uint16_t h = static_cast<uint16_t>(0x3c00 + (x & 0x1ff)); std::memcpy(at, &h, 2); break; }
      default: ADD_FAILURE() << "no values for this dtype in the test";
    }
  }
  return v;
}

struct ReduceCase {
  DType dtype;
  ReduceOp op;
  size_t count;
};

// acc = in op message, checked bit for bit against ReduceInto, with the receive posted before
// the message, after it had fully arrived, and in place (acc == in).
void CheckReducedReceives(Ranks& r, const std::vector<ReduceCase>& cases) {
  for (size_t c = 0; c < cases.size(); ++c) {
    const ReduceCase& k = cases[c];
    SCOPED_TRACE("case " + std::to_string(c) + ": " + std::to_string(k.count) + " elements");
    const auto msg = Values(k.dtype, k.count, static_cast<int>(c));
    const auto in = Values(k.dtype, k.count, static_cast<int>(c) + 5);
    std::vector<uint8_t> want(msg.size());
    if (k.count > 0) ReduceInto(k.dtype, k.op, want.data(), in.data(), msg.data(), k.count);
    for (int mode = 0; mode < 3; ++mode) {
      SCOPED_TRACE("mode " + std::to_string(mode));
      std::vector<uint8_t> acc(msg.size(), 0xee), in_place = in;
      const uint64_t tag = 100 + c * 3 + mode;
      RequestPtr recv, send;
      auto post_recv = [&] {
        uint8_t* dst = mode == 2 ? in_place.data() : acc.data();
        auto q = r.endpoints[1][0]->PostRecvReduce(dst, mode == 2 ? in_place.data() : in.data(),
                                                   msg.size(), tag, k.dtype, k.op);
        ASSERT_TRUE(q.ok()) << q.status().ToString();
        recv = *q;
      };
      if (mode == 1) {
        send = *r.endpoints[0][1]->PostSend(msg.data(), msg.size(), tag);
        ASSERT_TRUE(send->Wait(Soon()).ok());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // lands as unexpected
        post_recv();
      } else {
        post_recv();
        send = *r.endpoints[0][1]->PostSend(msg.data(), msg.size(), tag);
      }
      ASSERT_TRUE(recv->Wait(Soon()).ok()) << recv->status().ToString();
      ASSERT_TRUE(send->Wait(Soon()).ok());
      EXPECT_TRUE((mode == 2 ? in_place : acc) == want);
    }
  }
}

class TcpRecvReduce : public ::testing::TestWithParam<int> {};

TEST_P(TcpRecvReduce, EveryDTypeOpAndSizeMatchesReduceIntoBitForBit) {
  // 16 KiB chunks: larger messages come in many chunks, over several sockets with 4.
  Ranks r = ListenAll(2, GetParam(), 16 << 10);
  ConnectAll(r);
  ASSERT_TRUE(r.endpoints[1][0]->CanRecvReduce());
  CheckReducedReceives(r, {{DType::kFloat32, ReduceOp::kSum, 0},
                           {DType::kFloat32, ReduceOp::kSum, 1},
                           {DType::kFloat32, ReduceOp::kSum, 1000},
                           {DType::kFloat32, ReduceOp::kSum, (1 << 20) + 3},
                           {DType::kFloat64, ReduceOp::kMax, 100003},
                           {DType::kInt64, ReduceOp::kProd, 40000},
                           {DType::kInt8, ReduceOp::kSum, 70001},
                           {DType::kFloat16, ReduceOp::kMin, 50001},
                           {DType::kFloat32, ReduceOp::kAvg, 300000}});
}

INSTANTIATE_TEST_SUITE_P(Counts, TcpRecvReduce, ::testing::Values(1, 4),
                         [](const auto& p) { return std::to_string(p.param) + "sockets"; });

TEST(TcpTransport, ReducedReceiveRefusesBadArgumentsAndReportsASizeMismatch) {
  Ranks r = ListenAll(2, 1, 16 << 10);
  ConnectAll(r);
  Endpoint& ep = *r.endpoints[1][0];
  std::vector<uint8_t> acc(4096), in(4096);
  auto odd = ep.PostRecvReduce(acc.data(), in.data(), 4094, 1, DType::kFloat32, ReduceOp::kSum);
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(odd.status().message().find("not whole elements of 4 bytes"), std::string::npos)
      << odd.status().message();
  auto null_in = ep.PostRecvReduce(acc.data(), nullptr, 4096, 1, DType::kFloat32, ReduceOp::kSum);
  EXPECT_EQ(null_in.status().code(), StatusCode::kInvalidArgument);
  auto bad_op =
      ep.PostRecvReduce(acc.data(), in.data(), 4096, 1, DType::kFloat32, static_cast<ReduceOp>(9));
  EXPECT_EQ(bad_op.status().code(), StatusCode::kInvalidArgument);
  // A message of another size fails the receive, naming both, and is drained.
  auto big = Values(DType::kFloat32, 100000, 1);
  auto q = ep.PostRecvReduce(acc.data(), in.data(), 4096, 2, DType::kFloat32, ReduceOp::kSum);
  ASSERT_TRUE(q.ok());
  auto send = *r.endpoints[0][1]->PostSend(big.data(), big.size(), 2);
  Status st = (*q)->Wait(Soon());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("400000"), std::string::npos) << st.message();
  EXPECT_TRUE(send->Wait(Soon()).ok());
  Exchange(r, 0, 1, {10, 40000, 0});
}

// Another transport's endpoint that does not override it says so instead of receiving.
TEST(TransportInterface, PostRecvReduceIsUnimplementedUnlessATransportProvidesIt) {
  struct Plain final : Endpoint {
    int peer() const override { return 3; }
    Result<RequestPtr> PostSend(const void*, size_t, uint64_t) override { return RequestPtr(); }
    Result<RequestPtr> PostRecv(void*, size_t, uint64_t) override { return RequestPtr(); }
    void Abort(const Status&) override {}
  } plain;
  EXPECT_FALSE(plain.CanRecvReduce());
  float acc = 0, in = 0;
  auto q = plain.PostRecvReduce(&acc, &in, 4, 0, DType::kFloat32, ReduceOp::kSum);
  EXPECT_EQ(q.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(q.status().message().find("rank 3"), std::string::npos) << q.status().message();
}

// A hand-driven "rank 0" on one raw socket to a real rank 1: the stream comes in pieces of odd
// byte counts, so recv() cuts elements in two (the carried bytes), in the staged path (small
// payloads) and the bounce-buffer path (large ones); a message partly arrived before its receive
// is posted; and a chunk not of whole elements is refused as a broken stream.
class RawRank0 {
 public:
  explicit RawRank0(int chunk) : r_(ListenAll(2, 1, static_cast<size_t>(chunk))) {
    auto server = AddressOf(r_, 1);
    EXPECT_TRUE(server.ok());
    std::thread t([&] {
      auto eps = r_.transports[1]->Connect({r_.infos[0]}, Deadline::AfterMs(10000));
      ASSERT_TRUE(eps.ok()) << eps.status().ToString();
      ep_ = std::move((*eps)[0]);
    });
    auto fd = ConnectTcp(*server, Deadline::AfterMs(5000));
    EXPECT_TRUE(fd.ok());
    if (fd.ok()) {
      EXPECT_TRUE(ClientHandshake(fd->get(), kSecret, HelloFor(r_.job, 0, 2, 0, 1),
                                  Deadline::AfterMs(5000)).ok());
      uint8_t ack = 1;
      EXPECT_TRUE(ReadFull(fd->get(), &ack, 1, Deadline::AfterMs(5000)).ok());
      EXPECT_EQ(ack, 0);
      fd_ = std::move(*fd);
    }
    t.join();
  }
  Endpoint& rank1() { return *ep_; }
  // The next chunk header rank 1 sent, with its payload read and dropped.
  ChunkHeader ReadChunk() {
    ChunkHeader h{};
    EXPECT_TRUE(ReadFull(fd_.get(), &h, sizeof(h), Deadline::AfterMs(5000)).ok());
    std::vector<char> payload(h.length);
    EXPECT_TRUE(ReadFull(fd_.get(), payload.data(), payload.size(), Deadline::AfterMs(5000)).ok());
    return h;
  }
  // One chunk of message `seq`: the header, then payload[from, to) in pieces of `piece` bytes with
  // a pause after each, so each arrives in a recv() of its own.
  void Chunk(uint64_t seq, uint64_t tag, const std::vector<uint8_t>& msg, size_t from, size_t to,
             size_t piece) {
    ChunkHeader h{kChunkMagic, static_cast<uint32_t>(to - from), seq, tag, msg.size(), from};
    ASSERT_TRUE(WriteFull(fd_.get(), &h, sizeof(h), Deadline::AfterMs(5000)).ok());
    Payload(msg, from, to, piece);
  }
  void Payload(const std::vector<uint8_t>& msg, size_t from, size_t to, size_t piece) {
    for (size_t at = from; at < to; at += piece) {
      size_t n = std::min(piece, to - at);
      ASSERT_TRUE(WriteFull(fd_.get(), msg.data() + at, n, Deadline::AfterMs(5000)).ok());
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }

 private:
  Ranks r_;
  UniqueFd fd_;
  std::unique_ptr<Endpoint> ep_;
};

TEST(TcpTransport, ReducedReceiveCarriesElementsThatRecvCutInTwo) {
  RawRank0 raw(64 << 10);
  const DType dt = DType::kFloat64;
  // Message 0: small (staged path), 7-byte pieces. Message 1: 96 KiB in one chunk (read into the
  // bounce buffer), pieces of 4093 bytes. Message 2: two chunks, the first half sent before the
  // receive is posted (it lands in a buffer and is reduced once complete).
  const size_t counts[3] = {150, 12288, 12288};
  for (int m = 0; m < 3; ++m) {
    SCOPED_TRACE("message " + std::to_string(m));
    const auto msg = Values(dt, counts[m], m), in = Values(dt, counts[m], m + 9);
    std::vector<uint8_t> want(msg.size()), acc(msg.size(), 0xee);
    ReduceInto(dt, ReduceOp::kSum, want.data(), in.data(), msg.data(), counts[m]);
    RequestPtr q;
    if (m < 2) {
      q = *raw.rank1().PostRecvReduce(acc.data(), in.data(), msg.size(), 5, dt, ReduceOp::kSum);
      raw.Chunk(m, 5, msg, 0, msg.size(), m == 0 ? 7 : 4093);
    } else {
      const size_t half = msg.size() / 2;
      raw.Chunk(m, 5, msg, 0, half, 8191);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      q = *raw.rank1().PostRecvReduce(acc.data(), in.data(), msg.size(), 5, dt, ReduceOp::kSum);
      raw.Chunk(m, 5, msg, half, msg.size(), 5003);
    }
    ASSERT_TRUE(q->Wait(Soon()).ok()) << q->status().ToString();
    EXPECT_TRUE(acc == want);
  }
}

TEST(TcpTransport, AutoChunkIsFourMiBToAPeerWithOneSocket) {
  RawRank0 raw(/*chunk=*/0);  // WEFT_TCP_CHUNK_BYTES, unset here: auto
  std::vector<uint8_t> msg(6 << 20, 7);
  auto send = raw.rank1().PostSend(msg.data(), msg.size(), 9);
  ASSERT_TRUE(send.ok());
  ChunkHeader first = raw.ReadChunk(), second = raw.ReadChunk();
  EXPECT_EQ(first.length, 4u << 20);
  EXPECT_EQ(first.total, msg.size());
  EXPECT_EQ(second.offset, 4u << 20);
  EXPECT_EQ(second.length, 2u << 20);
  EXPECT_TRUE((*send)->Wait(Soon()).ok());
}

TEST(TcpTransportDeathTest, MalformedChunkKnobFailsCreationNamingIt) {
  ExpectKnobRefused("WEFT_TCP_CHUNK_BYTES", {"abc", "512", "2G", "-4M"}, 1,
                    "want a size from 1K to 1G");
}

TEST(TcpTransport, ReducedReceiveOfAChunkNotOfWholeElementsFailsAsABrokenStream) {
  RawRank0 raw(64 << 10);
  const auto msg = Values(DType::kFloat32, 1000, 1);
  std::vector<uint8_t> acc(msg.size()), in(msg.size());
  auto q = raw.rank1().PostRecvReduce(acc.data(), in.data(), msg.size(), 5, DType::kFloat32,
                                      ReduceOp::kSum);
  ASSERT_TRUE(q.ok());
  raw.Chunk(0, 5, msg, 0, 1002, 1002);  // ends two bytes into an element
  Status st = (*q)->Wait(Soon());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("whole elements"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace weft::transport::tcp
