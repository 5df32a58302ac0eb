// Tests specific to the shm transport, beyond the shared conformance suite: ranks in separate
// (forked) processes, peers that exit or are killed mid-transfer, the CMA-less streaming path,
// oversubscribed worlds, Connect errors, and a throughput print (not an assertion).
#include "transport/shm/shm_transport.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace weft::transport::shm {
namespace {

std::string NewJob() {
  static std::atomic<int> counter{0};
  return "shmtest" + std::to_string(getpid()) + "x" + std::to_string(counter++);
}

TransportConfig Config(int rank, int n, const std::string& job, size_t ring = 64 << 10,
                       size_t eager = 4 << 10) {
  TransportConfig c;
  c.rank = rank;
  c.world_size = n;
  c.host_id = "shm-test-host";
  c.secret = "shm-test-secret";
  c.job_id = job;
  c.shm_ring_bytes = ring;
  c.shm_eager_bytes = eager;
  return c;
}

std::vector<uint8_t> Pattern(size_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  return v;
}

Deadline Soon() { return Deadline::AfterMs(30000); }

// An in-process world: ranks are threads, each with its own transport.
struct World {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<std::vector<std::unique_ptr<Endpoint>>> endpoints;  // [rank][peer]
};

World MakeWorld(int n, bool cma, size_t ring = 64 << 10, size_t eager = 4 << 10) {
  std::string job = NewJob();
  World w;
  std::vector<PeerInfo> infos(n);
  for (int r = 0; r < n; ++r) {
    auto t = CreateShmTransport(Config(r, n, job, ring, eager), ShmOptions{cma});
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    auto addr = (*t)->Listen();
    EXPECT_TRUE(addr.ok()) << addr.status().ToString();
    infos[r] = PeerInfo{r, "shm-test-host", static_cast<int>(getpid()), *addr};
    w.transports.push_back(std::move(*t));
  }
  w.endpoints.resize(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<PeerInfo> peers;
      for (int p = 0; p < n; ++p) {
        if (p != r) peers.push_back(infos[p]);
      }
      auto eps = w.transports[r]->Connect(peers, Soon());
      ASSERT_TRUE(eps.ok()) << eps.status().ToString();
      w.endpoints[r].resize(n);
      for (size_t i = 0; i < peers.size(); ++i)
        w.endpoints[r][peers[i].rank] = std::move((*eps)[i]);
    });
  }
  for (auto& t : threads) t.join();
  return w;
}

// Forks a child that runs `body` and _exits with its return value (never returns into gtest).
pid_t ForkChild(const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) _exit(body());
  return pid;
}

int WaitChild(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool WriteAll(int fd, const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  return write(fd, &n, sizeof(n)) == sizeof(n) &&
         write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
}

std::string ReadAll(int fd) {
  uint32_t n = 0;
  if (read(fd, &n, sizeof(n)) != sizeof(n)) return "";
  std::string s(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, s.data() + got, n - got);
    if (r <= 0) return "";
    got += static_cast<size_t>(r);
  }
  return s;
}

// A two-process world: this process is rank 0, a forked child rank 1. The child creates its own
// transport after the fork, sends its address through a pipe, connects, runs `child_body` and
// exits with its result. The parent's endpoint to rank 1 is returned in `ep`.
struct TwoProcess {
  std::unique_ptr<Transport> transport;
  std::unique_ptr<Endpoint> ep;
  pid_t child = -1;
  int to_parent = -1;  // the parent's read end of the child's notification pipe
};

TwoProcess StartTwoProcess(bool cma, size_t ring, size_t eager,
                           const std::function<int(Endpoint&, int notify_fd)>& child_body) {
  std::string job = NewJob();
  TwoProcess tp;
  auto t = CreateShmTransport(Config(0, 2, job, ring, eager), ShmOptions{cma});
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  auto addr0 = (*t)->Listen();
  EXPECT_TRUE(addr0.ok());
  int addr_pipe[2], note_pipe[2];
  EXPECT_EQ(pipe(addr_pipe), 0);
  EXPECT_EQ(pipe(note_pipe), 0);
  const pid_t parent = getpid();
  std::string parent_addr = *addr0;
  tp.child = ForkChild([&]() -> int {
    close(addr_pipe[0]);
    close(note_pipe[0]);
    auto ct = CreateShmTransport(Config(1, 2, job, ring, eager), ShmOptions{cma});
    if (!ct.ok()) return 10;
    auto addr1 = (*ct)->Listen();
    if (!addr1.ok() || !WriteAll(addr_pipe[1], *addr1)) return 11;
    auto eps = (*ct)->Connect({PeerInfo{0, "shm-test-host", parent, parent_addr}}, Soon());
    if (!eps.ok()) {
      std::fprintf(stderr, "child connect: %s\n", eps.status().ToString().c_str());
      return 12;
    }
    return child_body(*(*eps)[0], note_pipe[1]);
  });
  close(addr_pipe[1]);
  close(note_pipe[1]);
  std::string addr1 = ReadAll(addr_pipe[0]);
  close(addr_pipe[0]);
  EXPECT_FALSE(addr1.empty());
  auto eps = (*t)->Connect({PeerInfo{1, "shm-test-host", tp.child, addr1}}, Soon());
  EXPECT_TRUE(eps.ok()) << eps.status().ToString();
  if (eps.ok()) tp.ep = std::move((*eps)[0]);
  tp.transport = std::move(*t);
  tp.to_parent = note_pipe[0];
  return tp;
}

class ShmCmaTest : public ::testing::TestWithParam<bool> {};

// The child echoes every message back; sizes cover empty, eager, streamed/single-copy and
// larger-than-ring messages, between two real processes (CMA across address spaces).
TEST_P(ShmCmaTest, CrossProcessEcho) {
  const bool cma = GetParam();
  const std::vector<size_t> sizes = {0, 1, 4096, 4097, (1 << 20) + 3, 9 << 20};
  TwoProcess tp = StartTwoProcess(cma, 64 << 10, 4 << 10, [&](Endpoint& ep, int) -> int {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<uint8_t> buf(sizes[i]);
      auto r = ep.PostRecv(buf.data(), buf.size(), i);
      if (!r.ok() || !(*r)->Wait(Soon()).ok()) return 20;
      auto s = ep.PostSend(buf.data(), buf.size(), 100 + i);
      if (!s.ok() || !(*s)->Wait(Soon()).ok()) return 21;
    }
    return 0;
  });
  ASSERT_NE(tp.ep, nullptr);
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto out = Pattern(sizes[i], static_cast<int>(i));
    std::vector<uint8_t> back(sizes[i]);
    auto s = tp.ep->PostSend(out.data(), out.size(), i);
    auto r = tp.ep->PostRecv(back.data(), back.size(), 100 + i);
    ASSERT_TRUE(s.ok() && r.ok());
    ASSERT_TRUE((*s)->Wait(Soon()).ok());
    Status st = (*r)->Wait(Soon());
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(back, out) << "size " << sizes[i];
  }
  auto stats = GetShmStats(*tp.transport);
  ASSERT_TRUE(stats.ok());
  if (cma) {
    EXPECT_EQ(stats->cma_peers, 1);
    EXPECT_GT(stats->cma_bytes, 9u << 20);
  } else {
    EXPECT_EQ(stats->cma_peers, 0);
    EXPECT_EQ(stats->cma_bytes, 0u);
    EXPECT_GT(stats->ring_payload_bytes, 9u << 20);
  }
  EXPECT_EQ(WaitChild(tp.child), 0);
  close(tp.to_parent);
}

// The child is SIGKILLed while its 64 MiB send is in flight (single-copy: waiting for the FIN;
// streamed: blocked on the full ring). The parent's receive must fail naming rank 1, promptly.
TEST_P(ShmCmaTest, PeerKilledMidTransfer) {
  const bool cma = GetParam();
  constexpr size_t kSize = 64 << 20;
  TwoProcess tp = StartTwoProcess(cma, 64 << 10, 4 << 10, [&](Endpoint& ep, int notify) -> int {
    std::vector<uint8_t> big(kSize, 7);
    auto s = ep.PostSend(big.data(), big.size(), 9);
    if (!s.ok()) return 30;
    char c = 1;
    if (write(notify, &c, 1) != 1) return 31;
    (*s)->Wait(Soon()).IgnoreError();  // killed before it completes
    return 32;
  });
  ASSERT_NE(tp.ep, nullptr);
  char c = 0;
  ASSERT_EQ(read(tp.to_parent, &c, 1), 1);
  kill(tp.child, SIGKILL);
  EXPECT_EQ(WaitChild(tp.child), 128 + SIGKILL);
  std::vector<uint8_t> in(kSize);
  auto t0 = std::chrono::steady_clock::now();
  auto r = tp.ep->PostRecv(in.data(), in.size(), 9);
  Status st = r.ok() ? (*r)->Wait(Soon()) : r.status();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("shm"), std::string::npos) << st.message();
  EXPECT_LT(took, std::chrono::seconds(2));
  // Later requests to the dead peer fail at once.
  auto r2 = tp.ep->PostRecv(in.data(), 8, 10);
  if (r2.ok()) {
    EXPECT_EQ((*r2)->Wait(Soon()).code(), StatusCode::kUnavailable);
  }
  close(tp.to_parent);
}

// Small messages stay single-frame; a size mismatch fails the receive, and a single-copy
// message's sender learns of it too (in-ring senders completed when the bytes left).
TEST_P(ShmCmaTest, SizeMismatchOnEveryPath) {
  World w = MakeWorld(2, GetParam());
  for (size_t size : {size_t{12}, size_t{1} << 20}) {
    std::vector<uint8_t> out(size, 1), in(size - 4, 0);
    auto s = w.endpoints[0][1]->PostSend(out.data(), out.size(), 5);
    auto r = w.endpoints[1][0]->PostRecv(in.data(), in.size(), 5);
    ASSERT_TRUE(s.ok() && r.ok());
    Status rs = (*r)->Wait(Soon());
    EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs.ToString();
    EXPECT_NE(rs.message().find("rank 0"), std::string::npos) << rs.message();
    Status ss = (*s)->Wait(Soon());
    bool single_copy = GetParam() && size > (4 << 10);
    if (single_copy) {
      EXPECT_EQ(ss.code(), StatusCode::kInvalidArgument) << ss.ToString();
      EXPECT_NE(ss.message().find("rank 1"), std::string::npos) << ss.message();
    } else {
      EXPECT_TRUE(ss.ok()) << ss.ToString();
    }
    // The pair stays usable.
    std::vector<uint8_t> ok_out = Pattern(size, 3), ok_in(size);
    auto s2 = w.endpoints[0][1]->PostSend(ok_out.data(), size, 6);
    auto r2 = w.endpoints[1][0]->PostRecv(ok_in.data(), size, 6);
    ASSERT_TRUE((*r2)->Wait(Soon()).ok());
    ASSERT_TRUE((*s2)->Wait(Soon()).ok());
    EXPECT_EQ(ok_in, ok_out);
  }
}

// A rank posts large sends and never waits on them (it "computes"); the receiver must still get
// everything: the send pump moves data the ring could not take at post time.
TEST_P(ShmCmaTest, SenderThatNeverWaits) {
  World w = MakeWorld(2, GetParam());
  std::vector<std::vector<uint8_t>> out;
  std::vector<RequestPtr> sends;
  for (int i = 0; i < 8; ++i) out.push_back(Pattern(300000 + i, i));
  for (int i = 0; i < 8; ++i) {
    auto s = w.endpoints[0][1]->PostSend(out[i].data(), out[i].size(), i);
    ASSERT_TRUE(s.ok());
    sends.push_back(*s);
  }
  for (int i = 7; i >= 0; --i) {
    std::vector<uint8_t> in(out[i].size());
    auto r = w.endpoints[1][0]->PostRecv(in.data(), in.size(), i);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->Wait(Soon()).ok()) << i;
    EXPECT_EQ(in, out[i]);
  }
  for (auto& s : sends) EXPECT_TRUE(s->Wait(Soon()).ok());
}

// Eight ranks on (at most) two cores, all pairs at once with eager, single-copy or streamed and
// larger-than-ring sizes: must finish quickly because waiters sleep instead of spinning.
TEST_P(ShmCmaTest, EightRanksOversubscribed) {
  constexpr int kRanks = 8;
  constexpr int kRounds = 12;
  World w = MakeWorld(kRanks, GetParam());
  std::atomic<int> failures{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      for (int round = 0; round < kRounds; ++round) {
        std::vector<std::vector<uint8_t>> in(kRanks), out(kRanks);
        std::vector<RequestPtr> reqs;
        for (int p = 0; p < kRanks; ++p) {
          if (p == r) continue;
          size_t send_size = static_cast<size_t>((round * 40503 + r * 977 + p * 31) % 150000);
          size_t recv_size = static_cast<size_t>((round * 40503 + p * 977 + r * 31) % 150000);
          out[p] = Pattern(send_size, r * 100 + p + round);
          in[p].resize(recv_size);
          auto rr = w.endpoints[r][p]->PostRecv(in[p].data(), recv_size, round);
          auto ss = w.endpoints[r][p]->PostSend(out[p].data(), send_size, round);
          if (!rr.ok() || !ss.ok()) {
            failures++;
            return;
          }
          reqs.push_back(*rr);
          reqs.push_back(*ss);
        }
        for (auto& q : reqs) {
          if (!q->Wait(Soon()).ok()) failures++;
        }
        for (int p = 0; p < kRanks; ++p) {
          if (p != r && in[p] != Pattern(in[p].size(), p * 100 + r + round)) failures++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ shm ] 8 ranks x %d all-pairs rounds (cma=%d): %.1f ms\n", kRounds, GetParam(), ms);
  EXPECT_EQ(failures.load(), 0);
}

// 64 MiB ping-pong with the default ring and eager sizes; prints GB/s, asserts only correctness.
TEST_P(ShmCmaTest, ThroughputPrint) {
  constexpr size_t kSize = 64 << 20;
  constexpr int kIters = 4;
  World w = MakeWorld(2, GetParam(), 0, 0);
  std::vector<uint8_t> a = Pattern(kSize, 1), b(kSize), c(kSize);
  std::thread peer([&] {
    for (int i = 0; i < kIters + 1; ++i) {
      auto r = w.endpoints[1][0]->PostRecv(b.data(), kSize, 1);
      ASSERT_TRUE(r.ok() && (*r)->Wait(Soon()).ok());
      auto s = w.endpoints[1][0]->PostSend(b.data(), kSize, 2);
      ASSERT_TRUE(s.ok() && (*s)->Wait(Soon()).ok());
    }
  });
  std::chrono::steady_clock::time_point t0;
  for (int i = 0; i < kIters + 1; ++i) {
    if (i == 1) t0 = std::chrono::steady_clock::now();  // iteration 0 warms up (page faults)
    auto s = w.endpoints[0][1]->PostSend(a.data(), kSize, 1);
    auto r = w.endpoints[0][1]->PostRecv(c.data(), kSize, 2);
    ASSERT_TRUE(s.ok() && r.ok());
    ASSERT_TRUE((*s)->Wait(Soon()).ok());
    ASSERT_TRUE((*r)->Wait(Soon()).ok());
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  peer.join();
  EXPECT_EQ(c, a);
  std::printf("[ shm ] 64 MiB ping-pong (cma=%d): %.2f GB/s per direction\n", GetParam(),
              2.0 * kIters * kSize / secs / 1e9);

  // Small-message latency: 8-byte ping-pong, half the mean round trip.
  constexpr int kPings = 2000;
  uint64_t x = 0, y = 0;
  std::thread ponger([&] {
    for (int i = 0; i < kPings; ++i) {
      auto r = w.endpoints[1][0]->PostRecv(&y, sizeof(y), 3);
      ASSERT_TRUE(r.ok() && (*r)->Wait(Soon()).ok());
      auto s = w.endpoints[1][0]->PostSend(&y, sizeof(y), 4);
      ASSERT_TRUE(s.ok() && (*s)->Wait(Soon()).ok());
    }
  });
  auto l0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kPings; ++i) {
    x = static_cast<uint64_t>(i);
    auto s = w.endpoints[0][1]->PostSend(&x, sizeof(x), 3);
    ASSERT_TRUE(s.ok() && (*s)->Wait(Soon()).ok());
    uint64_t back = 0;
    auto r = w.endpoints[0][1]->PostRecv(&back, sizeof(back), 4);
    ASSERT_TRUE(r.ok() && (*r)->Wait(Soon()).ok());
    ASSERT_EQ(back, x);
  }
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - l0).count();
  ponger.join();
  std::printf("[ shm ] 8-byte ping-pong (cma=%d): %.2f us one way\n", GetParam(), us / kPings / 2);
}

INSTANTIATE_TEST_SUITE_P(Cma, ShmCmaTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "cma" : "streamed"; });

// A peer that exits normally after its last send: that message is still delivered, a receive
// for more fails naming the rank, within a couple of seconds.
TEST(ShmTransport, PeerExitFailsPendingReceive) {
  TwoProcess tp = StartTwoProcess(true, 64 << 10, 4 << 10, [](Endpoint& ep, int) -> int {
    std::vector<uint8_t> msg = Pattern(100, 4);
    auto s = ep.PostSend(msg.data(), msg.size(), 1);
    if (!s.ok() || !(*s)->Wait(Soon()).ok()) return 40;
    return 0;  // exit without waiting for anything else
  });
  ASSERT_NE(tp.ep, nullptr);
  std::vector<uint8_t> in(100), more(16);
  auto r1 = tp.ep->PostRecv(in.data(), in.size(), 1);
  auto r2 = tp.ep->PostRecv(more.data(), more.size(), 2);
  ASSERT_TRUE(r1.ok() && r2.ok());
  auto t0 = std::chrono::steady_clock::now();
  Status st = (*r2)->Wait(Soon());
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  EXPECT_LT(took, std::chrono::seconds(2));
  ASSERT_TRUE((*r1)->Wait(Soon()).ok());
  EXPECT_EQ(in, Pattern(100, 4));
  EXPECT_EQ(WaitChild(tp.child), 0);
  close(tp.to_parent);
}

// Listen() publishes the segment name; once both sides connected, the names are gone from
// /dev/shm (nothing leaks if the job is killed later).
TEST(ShmTransport, SegmentsUnlinkedAfterConnect) {
  std::string job = NewJob();
  auto t0 = CreateShmTransport(Config(0, 2, job));
  auto t1 = CreateShmTransport(Config(1, 2, job));
  ASSERT_TRUE(t0.ok() && t1.ok());
  auto a0 = (*t0)->Listen();
  auto a1 = (*t1)->Listen();
  ASSERT_TRUE(a0.ok() && a1.ok());
  EXPECT_EQ(*a0, "/weft-" + job + "-0");
  int fd = shm_open(a0->c_str(), O_RDONLY, 0);
  EXPECT_GE(fd, 0);
  if (fd >= 0) close(fd);
  std::thread other([&] {
    auto eps = (*t1)->Connect({PeerInfo{0, "shm-test-host", getpid(), *a0}}, Soon());
    EXPECT_TRUE(eps.ok()) << eps.status().ToString();
  });
  auto eps = (*t0)->Connect({PeerInfo{1, "shm-test-host", getpid(), *a1}}, Soon());
  other.join();
  ASSERT_TRUE(eps.ok()) << eps.status().ToString();
  for (const std::string& name : {*a0, *a1}) {
    errno = 0;
    EXPECT_LT(shm_open(name.c_str(), O_RDONLY, 0), 0) << name;
    EXPECT_EQ(errno, ENOENT) << name;
  }
}

TEST(ShmTransport, ConnectNamesTheMissingRank) {
  std::string job = NewJob();
  auto t0 = CreateShmTransport(Config(0, 3, job));
  ASSERT_TRUE(t0.ok());
  ASSERT_TRUE((*t0)->Listen().ok());
  auto t1 = CreateShmTransport(Config(1, 3, job));
  auto a1 = (*t1)->Listen();
  ASSERT_TRUE(a1.ok());
  // Rank 2 never listens; rank 1 listens but never connects (never maps rank 0's segment).
  auto eps = (*t0)->Connect({PeerInfo{1, "shm-test-host", getpid(), *a1},
                             PeerInfo{2, "shm-test-host", getpid(), "/weft-" + job + "-2"}},
                            Deadline::AfterMs(200));
  ASSERT_FALSE(eps.ok());
  EXPECT_EQ(eps.status().code(), StatusCode::kDeadlineExceeded) << eps.status().ToString();
  EXPECT_NE(eps.status().message().find("rank(s) 2"), std::string::npos) << eps.status().message();
}

TEST(ShmTransport, ConnectRefusesAnotherJobsSecret) {
  std::string job = NewJob();
  TransportConfig c1 = Config(1, 2, job);
  c1.secret = "another-secret";
  auto t0 = CreateShmTransport(Config(0, 2, job));
  auto t1 = CreateShmTransport(c1);
  ASSERT_TRUE(t0.ok() && t1.ok());
  ASSERT_TRUE((*t0)->Listen().ok());
  auto a1 = (*t1)->Listen();
  ASSERT_TRUE(a1.ok());
  auto eps = (*t0)->Connect({PeerInfo{1, "shm-test-host", getpid(), *a1}}, Deadline::AfterMs(2000));
  ASSERT_FALSE(eps.ok());
  EXPECT_EQ(eps.status().code(), StatusCode::kPermissionDenied) << eps.status().ToString();
}

TEST(ShmTransport, BadConfigIsRejected) {
  auto bad_job = CreateShmTransport(Config(0, 2, "a/b"));
  EXPECT_EQ(bad_job.status().code(), StatusCode::kInvalidArgument);
  auto bad_rank = CreateShmTransport(Config(2, 2, "job"));
  EXPECT_EQ(bad_rank.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace weft::transport::shm
