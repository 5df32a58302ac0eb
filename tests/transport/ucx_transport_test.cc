// UCX-specific transport tests, beyond the shared conformance suite, each run over UCX's tcp
// transport and over its shared-memory transports (UCX_TLS=tcp and posix,cma,self): FIFO matching
// across the inline and the separate-data paths, size mismatches on both paths, a wrong job
// secret, a peer process SIGKILLed mid-receive (named within seconds, through UCX's own error
// report and through the same-host pidfd), idle CPU use of a connected transport, small sends
// completing inside PostSend, many threads waiting at once while the worker passes between
// spinning waiters, sleeping waiters and the progress thread, ranks that disagree on
// WEFT_UCX_INLINE_BYTES, and control messages forged by a UCP worker outside the job.
//
// The killed-peer tests re-execute this binary as the peer (WEFT_UCX_TEST_CHILD), so the child
// starts UCX in a fresh process instead of inheriting a forked copy of the parent's.
#include "transport/ucx/ucx_transport.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "transport/ucx/ucx_wire.h"

namespace weft::transport::ucx {
namespace {

constexpr char kSecret[] = "ucx-test-secret";

std::string NewJobId() {
  static std::atomic<int> counter{0};
  return "ucxtest" + std::to_string(getpid()) + "x" + std::to_string(counter++);
}

TransportConfig Config(int rank, int n, const std::string& job, const std::string& secret,
                       const std::string& host) {
  TransportConfig c;
  c.rank = rank;
  c.world_size = n;
  c.host_id = host;
  c.secret = secret;
  c.job_id = job;
  return c;
}

std::vector<uint8_t> Pattern(size_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  return v;
}

Deadline Soon() { return Deadline::AfterMs(20000); }

// Ranks as threads of this process. Endpoints are destroyed before transports.
struct Ranks {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<std::vector<std::unique_ptr<Endpoint>>> endpoints;  // [rank][peer]
  std::vector<Status> connect_status;
  ~Ranks() {
    endpoints.clear();
    transports.clear();
  }
};

// `inline_by_rank`, when given, sets each rank's inline limit (else `inline_bytes` for all);
// `on_connected(rank)` runs on a rank's connecting thread as soon as its Connect() returns.
void MakeRanks(Ranks& r, int n, const std::string& tls, std::vector<std::string> secrets = {},
               size_t inline_bytes = 0, std::vector<size_t> inline_by_rank = {},
               const std::function<void(int)>& on_connected = nullptr) {
  std::string job = NewJobId();
  std::vector<PeerInfo> infos;
  UcxTransportOptions options;
  options.tls = tls;
  options.inline_bytes = inline_bytes;
  for (int i = 0; i < n; ++i) {
    if (!inline_by_rank.empty()) options.inline_bytes = inline_by_rank[i];
    std::string secret = secrets.empty() ? kSecret : secrets[i];
    auto t = CreateUcxTransport(Config(i, n, job, secret, "ucx-test-host"), options);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    auto addr = (*t)->Listen();
    ASSERT_TRUE(addr.ok()) << addr.status().ToString();
    ASSERT_FALSE(addr->empty());
    infos.push_back(PeerInfo{i, "ucx-test-host", static_cast<int>(getpid()), *addr});
    r.transports.push_back(std::move(*t));
  }
  r.endpoints.resize(n);
  r.connect_status.resize(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      std::vector<PeerInfo> peers;
      for (int p = 0; p < n; ++p) {
        if (p != i) peers.push_back(infos[p]);
      }
      auto eps = r.transports[i]->Connect(peers, Deadline::AfterMs(5000));
      if (!eps.ok()) {
        r.connect_status[i] = eps.status();
        return;
      }
      r.endpoints[i].resize(n);
      for (size_t k = 0; k < peers.size(); ++k) {
        r.endpoints[i][peers[k].rank] = std::move((*eps)[k]);
      }
      if (on_connected) on_connected(i);
    });
  }
  for (auto& t : threads) t.join();
}

class UcxTransportTest : public ::testing::TestWithParam<std::string> {};

TEST_P(UcxTransportTest, FifoAcrossInlineAndDataPaths) {
  Ranks r;
  // A small inline limit so both paths interleave within one tag.
  MakeRanks(r, 2, GetParam(), {}, /*inline_bytes=*/1024);
  ASSERT_TRUE(r.connect_status[0].ok()) << r.connect_status[0].ToString();
  ASSERT_TRUE(r.connect_status[1].ok()) << r.connect_status[1].ToString();
  constexpr int kMsgs = 40;
  std::vector<std::vector<uint8_t>> out, in(kMsgs);
  for (int i = 0; i < kMsgs; ++i) out.push_back(Pattern((i % 3 == 0) ? i * 10 : 1000 + i * 7919, i));
  std::vector<RequestPtr> reqs;
  // Half the receives are posted before the sends, half after (unexpected path).
  for (int i = 0; i < kMsgs / 2; ++i) {
    in[i].resize(out[i].size());
    auto q = r.endpoints[1][0]->PostRecv(in[i].data(), in[i].size(), 5 + (i % 2));
    ASSERT_TRUE(q.ok());
    reqs.push_back(*q);
  }
  for (int i = 0; i < kMsgs; ++i) {
    auto q = r.endpoints[0][1]->PostSend(out[i].data(), out[i].size(), 5 + (i % 2));
    ASSERT_TRUE(q.ok());
    reqs.push_back(*q);
  }
  for (int i = kMsgs / 2; i < kMsgs; ++i) {
    in[i].resize(out[i].size());
    auto q = r.endpoints[1][0]->PostRecv(in[i].data(), in[i].size(), 5 + (i % 2));
    ASSERT_TRUE(q.ok());
    reqs.push_back(*q);
  }
  for (auto& q : reqs) {
    Status st = q->Wait(Soon());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  for (int i = 0; i < kMsgs; ++i) EXPECT_EQ(in[i], out[i]) << "message " << i;
  auto stats = GetUcxStats(*r.transports[0]);
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->inline_sends, 0u);
  EXPECT_GT(stats->data_sends, 0u);
  EXPECT_EQ(GetUcxStats(*r.transports[1])->dropped_ctrl, 0u);
}

TEST_P(UcxTransportTest, SmallSendsCompleteInsidePostSend) {
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  // Ping-pong never fills UCP's send resources, so every 8-byte send goes eager-short: complete
  // on return, no request left for anyone to progress.
  constexpr int kRounds = 100;
  for (int i = 0; i < kRounds; ++i) {
    uint64_t ping = i, got = ~uint64_t{0};
    auto q = r.endpoints[1][0]->PostRecv(&got, sizeof(got), 3);
    auto s = r.endpoints[0][1]->PostSend(&ping, sizeof(ping), 3);
    ASSERT_TRUE(q.ok() && s.ok());
    ASSERT_TRUE((*q)->Wait(Soon()).ok());
    ASSERT_EQ(got, ping);
    uint64_t back = ~uint64_t{0};
    auto q2 = r.endpoints[0][1]->PostRecv(&back, sizeof(back), 4);
    auto s2 = r.endpoints[1][0]->PostSend(&got, sizeof(got), 4);
    ASSERT_TRUE(q2.ok() && s2.ok());
    ASSERT_TRUE((*q2)->Wait(Soon()).ok());
    ASSERT_EQ(back, ping);
    ASSERT_TRUE((*s)->Test() && (*s2)->Test());
  }
  for (int i = 0; i < 2; ++i) {
    auto stats = GetUcxStats(*r.transports[i]);
    ASSERT_TRUE(stats.ok());
    // All of them here; a little slack for a send that meets UCP still finishing its wireup.
    EXPECT_GE(stats->immediate_sends, static_cast<uint64_t>(kRounds - 5)) << "rank " << i;
    EXPECT_LE(stats->immediate_sends, static_cast<uint64_t>(kRounds)) << "rank " << i;
  }
}

TEST_P(UcxTransportTest, ManyConcurrentWaitersShareTheWorker) {
  Ranks r;
  MakeRanks(r, 2, GetParam(), {}, /*inline_bytes=*/256);
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  // Eight threads per rank, each its own tag, ping-ponging messages on both paths (inline and
  // separate data). Every fifth reply comes late, after the waiter's spin has given up, so the
  // worker keeps passing between spinning waiters (try-lock), sleeping ones and the progress
  // thread; a completion lost in a hand-off shows as a timeout.
  constexpr int kThreads = 8;
  constexpr int kRounds = 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, rank, t] {
        Endpoint& ep = *r.endpoints[rank][1 - rank];
        const uint64_t tag = 100 + t;
        for (int i = 0; i < kRounds; ++i) {
          const size_t size = (i % 3 == 2) ? 4096 + t : 8;
          std::vector<uint8_t> msg = Pattern(size, t * 1000 + i), in(size);
          auto exchange = [&](bool send_first) {
            RequestPtr s, q;
            auto qq = ep.PostRecv(in.data(), in.size(), tag);
            if (!qq.ok()) return false;
            q = *qq;
            if (!send_first && !q->Wait(Soon()).ok()) return false;
            if (!send_first && (i % 5 == 4)) {
              std::this_thread::sleep_for(std::chrono::microseconds(300));
            }
            auto ss = ep.PostSend(send_first ? msg.data() : in.data(), size, tag);
            if (!ss.ok()) return false;
            s = *ss;
            if (send_first && !q->Wait(Soon()).ok()) return false;
            return s->Wait(Soon()).ok() && in == msg;
          };
          // Rank 0 sends and awaits the echo; rank 1 echoes what it received.
          if (!exchange(rank == 0)) {
            ++failures;
            return;
          }
        }
      });
    }
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(UcxTransportTest, LargeSizeMismatchFailsTheReceiveOnly) {
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  // Bigger and smaller than the receive, both on the separate-data (rendezvous) path.
  for (auto [send_size, recv_size] : {std::pair<size_t, size_t>{1 << 20, 512 << 10},
                                      std::pair<size_t, size_t>{300000, 600000}}) {
    auto out = Pattern(send_size, 1);
    std::vector<uint8_t> in(recv_size);
    auto s = r.endpoints[0][1]->PostSend(out.data(), out.size(), 9);
    auto q = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 9);
    ASSERT_TRUE(s.ok() && q.ok());
    Status st = (*q)->Wait(Soon());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
    (*s)->Wait(Soon()).IgnoreError();
    // The pair stays usable, and the dropped message does not resurface.
    auto ok_out = Pattern(2 << 20, 2);
    std::vector<uint8_t> ok_in(ok_out.size());
    auto s2 = r.endpoints[0][1]->PostSend(ok_out.data(), ok_out.size(), 9);
    auto q2 = r.endpoints[1][0]->PostRecv(ok_in.data(), ok_in.size(), 9);
    ASSERT_TRUE(s2.ok() && q2.ok());
    ASSERT_TRUE((*q2)->Wait(Soon()).ok());
    ASSERT_TRUE((*s2)->Wait(Soon()).ok());
    EXPECT_EQ(ok_in, ok_out);
  }
}

TEST_P(UcxTransportTest, OrderlyShutdownEndsThePeersUnmatchedReceivesAtOnce) {
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  uint64_t never = 0, early = 0, sent = 0x5eed;
  auto pending = r.endpoints[1][0]->PostRecv(&never, sizeof(never), 7);
  ASSERT_TRUE(pending.ok());
  auto s = r.endpoints[0][1]->PostSend(&sent, sizeof(sent), 8);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Wait(Soon()).ok());
  // Rank 0 tears down in order: its endpoints go, saying goodbye.
  r.endpoints[0].clear();
  auto t0 = std::chrono::steady_clock::now();
  Status st = (*pending)->Wait(Soon());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 0 closed its transport"), std::string::npos) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5))
      << "the receive should end when the goodbye arrives, not at its deadline";
  // What it sent before still arrives; nothing after can.
  auto q = r.endpoints[1][0]->PostRecv(&early, sizeof(early), 8);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  ASSERT_TRUE((*q)->Wait(Soon()).ok());
  EXPECT_EQ(early, sent);
  auto late = r.endpoints[1][0]->PostRecv(&never, sizeof(never), 9);
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.status().message().find("closed its transport"), std::string::npos)
      << late.status().ToString();
  auto back = r.endpoints[1][0]->PostSend(&sent, sizeof(sent), 9);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), StatusCode::kUnavailable) << back.status().ToString();
}

TEST_P(UcxTransportTest, WrongSecretIsRefused) {
  Ranks r;
  MakeRanks(r, 2, GetParam(), {"the-right-secret", "a-wrong-secret"});
  for (int i = 0; i < 2; ++i) {
    const Status& st = r.connect_status[i];
    EXPECT_EQ(st.code(), StatusCode::kUnauthenticated) << st.ToString();
    EXPECT_NE(st.message().find("rank " + std::to_string(1 - i)), std::string::npos)
        << st.message();
  }
}

TEST_P(UcxTransportTest, IdleTransportUsesLittleCpu) {
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  // Receives pending on both sides, as a communicator keeps them (failure notices).
  char a[8], b[8];
  auto q0 = r.endpoints[0][1]->PostRecv(a, sizeof(a), 77);
  auto q1 = r.endpoints[1][0]->PostRecv(b, sizeof(b), 77);
  ASSERT_TRUE(q0.ok() && q1.ok());
  auto cpu = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  double before = cpu();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  double used = cpu() - before;
  EXPECT_LT(used, 0.1) << "two idle ucx transports used " << used << " s of CPU in 1 s";
  // Still alive afterwards.
  char x[8] = "wake-up";
  auto s = r.endpoints[0][1]->PostSend(x, sizeof(x), 77);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*q1)->Wait(Soon()).ok());
  EXPECT_EQ(std::memcmp(b, x, sizeof(x)), 0);
}

TEST_P(UcxTransportTest, InlineLimitsNeedNotAgree) {
  // A control message carries its inline payload whatever its size, so a receiver with a small
  // limit takes a large inline message from a sender with a large one, and the other way round.
  Ranks r;
  MakeRanks(r, 2, GetParam(), {}, 0, /*inline_by_rank=*/{8000, 64});
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  for (size_t size : {size_t{8}, size_t{200}, size_t{4000}, size_t{7999}}) {
    std::vector<uint8_t> out0 = Pattern(size, 1), out1 = Pattern(size, 2);
    std::vector<uint8_t> in0(size), in1(size);
    auto q1 = r.endpoints[1][0]->PostRecv(in1.data(), size, 9);
    auto q0 = r.endpoints[0][1]->PostRecv(in0.data(), size, 9);
    auto s0 = r.endpoints[0][1]->PostSend(out0.data(), size, 9);
    auto s1 = r.endpoints[1][0]->PostSend(out1.data(), size, 9);
    ASSERT_TRUE(q0.ok() && q1.ok() && s0.ok() && s1.ok());
    for (RequestPtr* q : {&*q0, &*q1, &*s0, &*s1}) {
      Status st = (*q)->Wait(Soon());
      ASSERT_TRUE(st.ok()) << size << " bytes: " << st.ToString();
    }
    EXPECT_EQ(in1, out0) << size << " bytes, rank 0 -> 1";
    EXPECT_EQ(in0, out1) << size << " bytes, rank 1 -> 0";
  }
  auto st0 = GetUcxStats(*r.transports[0]);
  auto st1 = GetUcxStats(*r.transports[1]);
  ASSERT_TRUE(st0.ok() && st1.ok());
  EXPECT_EQ(st0->data_sends, 0u);    // all four inline at rank 0
  EXPECT_EQ(st1->inline_sends, 1u);  // only the 8-byte one at rank 1
  EXPECT_EQ(st0->dropped_ctrl + st1->dropped_ctrl, 0u);
}

TEST_P(UcxTransportTest, MessagesSentTheMomentConnectReturnsArrive) {
  // Rank 0 sends as soon as its Connect() returns, while rank 1 may still be finishing its half
  // of the handshake: such a control message can reach rank 1 before rank 0's proof has been
  // checked there, and is held (early_ctrl) until it has, then delivered in order.
  uint64_t early = 0;
  for (int round = 0; round < 20; ++round) {
    Ranks r;
    std::vector<uint64_t> out = {11, 22, 33};
    std::vector<RequestPtr> sends;
    MakeRanks(r, 2, GetParam(), {}, 0, {}, [&](int rank) {
      if (rank != 0) return;
      for (uint64_t& v : out) {
        auto s = r.endpoints[0][1]->PostSend(&v, sizeof(v), 4);
        ASSERT_TRUE(s.ok()) << s.status().ToString();
        sends.push_back(*s);
      }
    });
    ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
    for (uint64_t want : out) {
      uint64_t got = 0;
      auto q = r.endpoints[1][0]->PostRecv(&got, sizeof(got), 4);
      ASSERT_TRUE(q.ok());
      Status st = (*q)->Wait(Soon());
      ASSERT_TRUE(st.ok()) << "round " << round << ": " << st.ToString();
      EXPECT_EQ(got, want) << "round " << round;
    }
    for (auto& s : sends) ASSERT_TRUE(s->Wait(Soon()).ok());
    EXPECT_EQ(GetUcxStats(*r.transports[1])->dropped_ctrl, 0u);
    early += GetUcxStats(*r.transports[1])->early_ctrl;
  }
  std::printf("control messages held for the handshake: %llu of 60\n",
              static_cast<unsigned long long>(early));
}

TEST_P(UcxTransportTest, AutomaticInlineLimitFollowsTheTransport) {
  // WEFT_UCX_INLINE_BYTES=auto: 16 KiB to a same-host peer goes inline over tcp (a separate
  // message would cost UCP a rendezvous there) and as a separate data message over shared memory.
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  std::vector<uint8_t> out = Pattern(16 << 10, 3), in(16 << 10);
  auto q = r.endpoints[1][0]->PostRecv(in.data(), in.size(), 6);
  auto s = r.endpoints[0][1]->PostSend(out.data(), out.size(), 6);
  ASSERT_TRUE(q.ok() && s.ok());
  ASSERT_TRUE((*q)->Wait(Soon()).ok());
  ASSERT_TRUE((*s)->Wait(Soon()).ok());
  EXPECT_EQ(in, out);
  auto st = GetUcxStats(*r.transports[0]);
  ASSERT_TRUE(st.ok());
  const bool over_tcp = GetParam() == "tcp";
  EXPECT_EQ(st->inline_sends, over_tcp ? 1u : 0u);
  EXPECT_EQ(st->data_sends, over_tcp ? 0u : 1u);
}

TEST_P(UcxTransportTest, ExchangeAnswersInTheCallLateAndEarly) {
  // Endpoint::Exchange, the step of recursive doubling: both ranks send and receive under one
  // tag. Inline messages take the fused path (receive record on the caller's stack, answered
  // inside the call; 0-200 bytes with the short header, 700 with the full one); rounds where one
  // rank comes late make the other hand its receive back as a request; rounds where one rank
  // comes early find the answer already waiting; 4000 bytes (above the inline limit) take the
  // general path (posted receive and send). Every byte is checked.
  Ranks r;
  MakeRanks(r, 2, GetParam(), {}, /*inline_bytes=*/1024);
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  constexpr int kRounds = 60;
  const size_t sizes[] = {0, 8, 200, 700, 4000};
  std::atomic<int> failures{0};
  auto rank_main = [&](int me) {
    const int other = 1 - me;
    for (int round = 0; round < kRounds; ++round) {
      const size_t size = sizes[round % 5];
      std::vector<uint8_t> out = Pattern(size, me * 1000 + round), in(size, 0xee);
      // Rounds 8k+1: rank 1 comes 20 ms late (rank 0's 50 us spin gives up, even if rank 0 was
      // itself held up a few ms waking from the round before); 8k+5: rank 0 does.
      if ((round % 8 == 1 && me == 1) || (round % 8 == 5 && me == 0)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      auto x = r.endpoints[me][other]->Exchange(out.data(), in.data(), size, 100 + round);
      if (!x.ok()) {
        ADD_FAILURE() << "rank " << me << " round " << round << ": " << x.status().ToString();
        ++failures;
        return;
      }
      for (RequestPtr* q : {&x->recv, &x->send}) {
        if (!*q) continue;
        Status st = (*q)->Wait(Soon());
        if (!st.ok()) {
          ADD_FAILURE() << "rank " << me << " round " << round << ": " << st.ToString();
          ++failures;
          return;
        }
      }
      if (in != Pattern(size, other * 1000 + round)) {
        ADD_FAILURE() << "rank " << me << " round " << round << " (" << size
                      << " bytes): wrong data";
        ++failures;
      }
    }
  };
  std::thread t1(rank_main, 1);
  rank_main(0);
  t1.join();
  ASSERT_EQ(failures.load(), 0);
  for (int i = 0; i < 2; ++i) {
    auto st = GetUcxStats(*r.transports[i]);
    ASSERT_TRUE(st.ok());
    // Each rank waits for a late peer in 8 of the 60 rounds, 6 of them inline (20 ms, beyond the
    // 50 us spin).
    EXPECT_GE(st->exchanges_late, 6u) << "rank " << i;
    EXPECT_GT(st->exchanges_in_call, 0u) << "rank " << i;
    EXPECT_EQ(st->dropped_ctrl, 0u) << "rank " << i;
  }
}

TEST_P(UcxTransportTest, ExchangeWithAPeerThatLeavesFailsNamingIt) {
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  // Rank 1 never answers: it shuts its transport down 20 ms into rank 0's exchange.
  std::thread leaver([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    r.endpoints[1].clear();
    r.transports[1].reset();
  });
  uint64_t out = 7, in = 0;
  const auto t0 = Clock::now();
  auto x = r.endpoints[0][1]->Exchange(&out, &in, sizeof(out), 5);
  Status st = x.status();
  if (x.ok()) {
    ASSERT_TRUE(x->recv) << "answered, though rank 1 never sent";
    st = x->recv->Wait(Deadline::AfterMs(10000));
  }
  leaver.join();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
}

TEST(UcxWire, WidenSeqRestoresTheFullSequenceNumber) {
  EXPECT_EQ(WidenSeq(0, 0), 0u);
  EXPECT_EQ(WidenSeq(5, 7), 7u);  // ahead (a message that overtook)
  EXPECT_EQ(WidenSeq(5, 3), 3u);  // behind (a repeat)
  EXPECT_EQ(WidenSeq(0xffffffffull, 0), 0x100000000ull);  // across a wrap of the low 32 bits
  EXPECT_EQ(WidenSeq(0x100000002ull, 0xffffffffu), 0xffffffffull);
  EXPECT_EQ(WidenSeq(0x7ffffffff0ull, 0xfffffff5u), 0x7ffffffff5ull);
}

// A UCP worker outside the job that has learned a rank's worker address.
class Forger {
 public:
  explicit Forger(const std::string& tls) {
    ucp_config_t* config = nullptr;
    EXPECT_EQ(ucp_config_read(nullptr, nullptr, &config), UCS_OK);
    EXPECT_EQ(ucp_config_modify(config, "TLS", tls.c_str()), UCS_OK);
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_TAG;
    EXPECT_EQ(ucp_init(&params, config, &context_), UCS_OK);
    ucp_config_release(config);
    ucp_worker_params_t wp{};
    EXPECT_EQ(ucp_worker_create(context_, &wp, &worker_), UCS_OK);
  }
  ~Forger() {
    if (ep_ != nullptr) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      Finish(ucp_ep_close_nbx(ep_, &param));
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  void Connect(const std::string& hex_address) {
    address_.resize(hex_address.size() / 2);
    for (size_t i = 0; i < address_.size(); ++i) {
      address_[i] = static_cast<char>(std::stoi(hex_address.substr(2 * i, 2), nullptr, 16));
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address = reinterpret_cast<const ucp_address_t*>(address_.data());
    ASSERT_EQ(ucp_ep_create(worker_, &ep, &ep_), UCS_OK);
  }
  // One control message: `header_length` bytes of `hdr` as the AM header, `payload` as data.
  void Send(const CtrlHeader& hdr, size_t header_length, const std::string& payload) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    Finish(ucp_am_send_nbx(ep_, kCtrlAmId, &hdr, header_length, payload.data(), payload.size(),
                           &param));
  }
  // One short control message: `data` whole as its AM data (a ShortCtrlHeader and the payload).
  void SendShort(const std::string& data) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    Finish(ucp_am_send_nbx(ep_, kShortCtrlAmId, nullptr, 0, data.data(), data.size(), &param));
  }

 private:
  void Finish(ucs_status_ptr_t r) {
    if (!UCS_PTR_IS_PTR(r)) return;
    Deadline end = Deadline::AfterMs(5000);
    while (ucp_request_check_status(r) == UCS_INPROGRESS && !end.Expired()) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(r);
  }
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  std::string address_;
};

TEST_P(UcxTransportTest, ForgedControlMessagesAreDropped) {
  // Anyone who learns a worker address can send it active messages; only the authenticated
  // peer's token gets a message matched. Each forgery is dropped and counted, and the genuine
  // message that follows still lands in the receive the forgeries aimed at.
  Ranks r;
  MakeRanks(r, 2, GetParam());
  ASSERT_TRUE(r.connect_status[0].ok() && r.connect_status[1].ok());
  uint64_t got = 0;
  auto q = r.endpoints[1][0]->PostRecv(&got, sizeof(got), 21);
  ASSERT_TRUE(q.ok());
  auto addr = r.transports[1]->Listen();  // the address it published
  ASSERT_TRUE(addr.ok());
  {
    Forger forger(GetParam());
    forger.Connect(*addr);
    const std::string fake(8, '\x66');
    CtrlHeader hdr{kCtrlMagic, kInline, /*token=*/0x1234, /*seq=*/0, /*tag=*/21, /*size=*/8,
                   /*src=*/0, 0};
    forger.Send(hdr, sizeof(hdr), fake);  // rank 0's name, a guessed token
    CtrlHeader stranger = hdr;
    stranger.src = 5;
    forger.Send(stranger, sizeof(stranger), fake);  // a rank that is not in the job
    forger.Send(hdr, 12, fake);                     // a truncated header
    // The same in the short form of small messages.
    ShortCtrlHeader sh{/*token=*/0x1234, /*tag=*/21, /*src=*/0, /*seq32=*/0};
    std::string short_msg(reinterpret_cast<const char*>(&sh), sizeof(sh));
    forger.SendShort(short_msg + fake);
    sh.src = 5;
    forger.SendShort(std::string(reinterpret_cast<const char*>(&sh), sizeof(sh)) + fake);
    forger.SendShort(short_msg.substr(0, 20));
    Deadline end = Deadline::AfterMs(10000);
    while (GetUcxStats(*r.transports[1])->dropped_ctrl < 6 && !end.Expired()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(GetUcxStats(*r.transports[1])->dropped_ctrl, 6u);
  }
  EXPECT_FALSE((*q)->Test()) << "a forged message completed the receive";
  const uint64_t genuine = 0x600DF00D;
  auto s = r.endpoints[0][1]->PostSend(&genuine, sizeof(genuine), 21);
  ASSERT_TRUE(s.ok());
  Status st = (*q)->Wait(Soon());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, genuine);
}

// ---- A peer in another process, SIGKILLed ----

// The child: rank 1 of 2. Reads its setup from the environment, publishes its address on a pipe,
// connects, sends one message and waits to be killed.
int ChildMain() {
  const char* tls = std::getenv("WEFT_UCX_TEST_TLS");
  const char* host = std::getenv("WEFT_UCX_TEST_HOST");
  const char* job = std::getenv("WEFT_UCX_TEST_JOB");
  const char* parent_addr = std::getenv("WEFT_UCX_TEST_PARENT_ADDR");
  const int out_fd = std::atoi(std::getenv("WEFT_UCX_TEST_FD"));
  UcxTransportOptions options;
  options.tls = tls;
  auto t = CreateUcxTransport(Config(1, 2, job, kSecret, host), options);
  if (!t.ok()) return 2;
  auto addr = (*t)->Listen();
  if (!addr.ok()) return 3;
  std::string line = *addr + "\n";
  if (write(out_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 4;
  close(out_fd);
  PeerInfo parent{0, "parent-host", static_cast<int>(getppid()), parent_addr};
  auto eps = (*t)->Connect({parent}, Deadline::AfterMs(10000));
  if (!eps.ok()) return 5;
  char msg[4] = "hi!";
  auto s = (*eps)[0]->PostSend(msg, sizeof(msg), 1);
  if (!s.ok() || !(*s)->Wait(Deadline::AfterMs(10000)).ok()) return 6;
  while (true) pause();
}

// Parent side: rank 0. `same_host` decides whether the child counts as on this host (pidfd
// liveness, UCP's default error mode) or on another one (UCP_ERR_HANDLING_MODE_PEER).
void KillPeerMidReceive(const std::string& tls, bool same_host) {
  const std::string job = NewJobId();
  UcxTransportOptions options;
  options.tls = tls;
  auto t = CreateUcxTransport(Config(0, 2, job, kSecret, "parent-host"), options);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto addr = (*t)->Listen();
  ASSERT_TRUE(addr.ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    setenv("WEFT_UCX_TEST_CHILD", "1", 1);
    setenv("WEFT_UCX_TEST_TLS", tls.c_str(), 1);
    setenv("WEFT_UCX_TEST_HOST", same_host ? "parent-host" : "child-host", 1);
    setenv("WEFT_UCX_TEST_JOB", job.c_str(), 1);
    setenv("WEFT_UCX_TEST_PARENT_ADDR", addr->c_str(), 1);
    setenv("WEFT_UCX_TEST_FD", std::to_string(fds[1]).c_str(), 1);
    execl("/proc/self/exe", "ucx_transport_test", nullptr);
    _exit(127);
  }
  close(fds[1]);
  // Whatever fails below, the child does not outlive the test.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reaper{pid};
  std::string child_addr;
  char c;
  while (read(fds[0], &c, 1) == 1 && c != '\n') child_addr.push_back(c);
  close(fds[0]);
  ASSERT_FALSE(child_addr.empty()) << "the child did not publish an address";
  PeerInfo child{1, same_host ? "parent-host" : "child-host", pid, child_addr};
  auto eps = (*t)->Connect({child}, Deadline::AfterMs(10000));
  ASSERT_TRUE(eps.ok()) << eps.status().ToString();
  char hello[4] = {};
  auto r1 = (*eps)[0]->PostRecv(hello, sizeof(hello), 1);
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE((*r1)->Wait(Soon()).ok());
  EXPECT_STREQ(hello, "hi!");
  std::vector<uint8_t> never(1 << 20);
  auto r2 = (*eps)[0]->PostRecv(never.data(), never.size(), 2);
  ASSERT_TRUE(r2.ok());
  auto t0 = Clock::now();
  kill(pid, SIGKILL);
  Status st = (*r2)->Wait(Deadline::AfterMs(10000));
  auto took = Clock::now() - t0;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("ucx"), std::string::npos) << st.message();
  EXPECT_LT(took, std::chrono::seconds(5));
  // Later requests fail at once with the same error.
  auto s = (*eps)[0]->PostSend(hello, sizeof(hello), 3);
  EXPECT_FALSE(s.ok() && (*s)->Wait(Deadline::AfterMs(2000)).ok());
}

TEST_P(UcxTransportTest, KilledSameHostPeerIsNamed) { KillPeerMidReceive(GetParam(), true); }

TEST(UcxTransportTcpOnly, KilledRemotePeerIsNamedThroughUcxErrorHandling) {
  // Across hosts the endpoint uses UCP_ERR_HANDLING_MODE_PEER and UCX reports the failure.
  KillPeerMidReceive("tcp", false);
}

INSTANTIATE_TEST_SUITE_P(Tls, UcxTransportTest, ::testing::Values("tcp", "posix,cma,self"),
                         [](const auto& info) {
                           return info.param == "tcp" ? std::string("tcp") : std::string("shm");
                         });

}  // namespace
}  // namespace weft::transport::ucx

int main(int argc, char** argv) {
  if (std::getenv("WEFT_UCX_TEST_CHILD") != nullptr) return weft::transport::ucx::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
