// Rank metrics (collectives/metrics.h) against real collectives, ranks as threads over real
// transports: latency counts rise by exactly the number of operations under the algorithm and
// transport that ran them, bytes match each algorithm's message schedule, errors are counted by
// code, nothing is recorded while off, and the /metrics server (WEFT_METRICS_PORT=0, set below
// unless the environment sets it) serves the same text. The registry is per process, so every check
// is a difference taken while all ranks stand at a thread barrier.
#include <gtest/gtest.h>

#include <barrier>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/metrics.h"
#include "comm_test_util.h"
#include "rendezvous/store.h"
#include "tests/util/prometheus_test_util.h"

namespace weft::collectives {
namespace {

// Before any communicator reads it: the first one created serves /metrics on an ephemeral port.
const bool kMetricsPortSet = setenv("WEFT_METRICS_PORT", "0", /*overwrite=*/0) == 0;

using metrics::Algo;
using metrics::Op;
using metrics::PeerClass;

// Runs fn(rank, comm, sync) on n threads, each with a communicator made from options(rank).
void RunWorld(int n, const std::function<CommOptions(int)>& options,
              const std::function<void(int, Communicator&, std::barrier<>&)>& fn) {
  rendezvous::HashStore store;
  std::barrier<> sync(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto c = Communicator::Create(store, r, n, options(r));
      if (!c.ok()) {
        ADD_FAILURE() << "rank " << r << ": " << c.status().ToString();
        sync.arrive_and_drop();
        return;
      }
      fn(r, **c, sync);
    });
  }
  for (auto& t : threads) t.join();
}

void Check(Result<Work> w) {
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  Status s = w->Wait();
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Ranks on hosts of their own, joined by TCP: every byte goes to a remote peer.
CommOptions RemoteTcp(int rank, const std::string& algorithm) {
  CommOptions o = testing::SmallOptions("tcp");
  o.algorithm = algorithm;
  o.host_id = "metrics-host-" + std::to_string(rank);
  return o;
}

struct TransportCase {
  std::string algorithm;
  Algo algo;
  int n;
};

class TransportMetrics : public ::testing::TestWithParam<TransportCase> {};

TEST_P(TransportMetrics, OpsAndBytesMatchTheSchedule) {
  const TransportCase tc = GetParam();
  const int n = tc.n, kOps = 5;
  const int64_t count = n * 300;  // float32, divisible by n: equal ring blocks
  const uint64_t bytes = static_cast<uint64_t>(count) * 4;
  metrics::SetEnabled(true);
  uint64_t ops0 = 0, sent0 = 0, local0 = 0, sends0 = 0, recvs0 = 0;
  double sum0 = 0;
  RunWorld(
      n, [&](int r) { return RemoteTcp(r, tc.algorithm); },
      [&](int rank, Communicator& c, std::barrier<>& sync) {
        std::vector<float> in(count, 1.0f + rank), out(count);
        sync.arrive_and_wait();
        if (rank == 0) {
          ops0 = metrics::LatencyCount(Op::kAllReduce, tc.algo, "tcp");
          sum0 = metrics::LatencySumSeconds(Op::kAllReduce, tc.algo, "tcp");
          sent0 = metrics::SentBytes("tcp", PeerClass::kRemote);
          local0 = metrics::SentBytes("tcp", PeerClass::kSameHost);
          sends0 = metrics::LatencyCount(Op::kSend, Algo::kDirect, "tcp");
          recvs0 = metrics::LatencyCount(Op::kRecv, Algo::kDirect, "tcp");
        }
        sync.arrive_and_wait();
        for (int i = 0; i < kOps; ++i) {
          Check(c.AllReduce(in.data(), out.data(), count, DType::kFloat32, ReduceOp::kSum));
        }
        // One user message of 100 bytes, rank 0 to rank 1.
        char msg[100] = {0};
        if (rank == 0) Check(c.Send(msg, 100, DType::kUint8, 1, 7));
        if (rank == 1) Check(c.Recv(msg, 100, DType::kUint8, 0, 7));
        sync.arrive_and_wait();
        if (rank != 0) return;
        EXPECT_EQ(metrics::LatencyCount(Op::kAllReduce, tc.algo, "tcp") - ops0,
                  static_cast<uint64_t>(n * kOps));
        EXPECT_GT(metrics::LatencySumSeconds(Op::kAllReduce, tc.algo, "tcp"), sum0);
        // Per rank and operation: the ring sends 2(n-1) blocks of N/n, Rabenseifner (n a power
        // of two) as many bytes in 2 log2(n) steps; recursive doubling its whole vector log2(n)
        // times.
        int log2n = 0;
        while ((1 << (log2n + 1)) <= n) ++log2n;
        const uint64_t per_rank = tc.algo == Algo::kRecursiveDoubling ? log2n * bytes
                                                                      : 2 * (n - 1) * bytes / n;
        EXPECT_EQ(metrics::SentBytes("tcp", PeerClass::kRemote) - sent0, n * kOps * per_rank + 100);
        EXPECT_EQ(metrics::SentBytes("tcp", PeerClass::kSameHost), local0);
        EXPECT_EQ(metrics::LatencyCount(Op::kSend, Algo::kDirect, "tcp") - sends0, 1u);
        EXPECT_EQ(metrics::LatencyCount(Op::kRecv, Algo::kDirect, "tcp") - recvs0, 1u);
      });
}

INSTANTIATE_TEST_SUITE_P(
    Algorithms, TransportMetrics,
    ::testing::Values(TransportCase{"ring", Algo::kRing, 2}, TransportCase{"ring", Algo::kRing, 4},
                      TransportCase{"recursive_doubling", Algo::kRecursiveDoubling, 2},
                      TransportCase{"recursive_doubling", Algo::kRecursiveDoubling, 4},
                      TransportCase{"rabenseifner", Algo::kRabenseifner, 4},
                      TransportCase{"rabenseifner", Algo::kRabenseifner, 8}),
    [](const auto& info) { return info.param.algorithm + "_" + std::to_string(info.param.n); });

TEST(ArenaMetrics, ArenaAlgorithmsCountWhatTheyWrite) {
  const int n = 3, kOps = 4;
  metrics::SetEnabled(true);
  // Slots of 1 KiB: 64 floats go to shm_direct, 1000 floats to shm_chunked (4 chunks).
  const int64_t small = 64, large = 1000;
  const size_t bcast = 3000;  // three slots' worth from root 1
  uint64_t direct0 = 0, chunked0 = 0, bcast0 = 0, arena0 = 0, shm0 = 0;
  RunWorld(
      n, [](int) { return testing::SmallOptions("shm"); },
      [&](int rank, Communicator& c, std::barrier<>& sync) {
        ASSERT_EQ(c.AllReduceAlgorithmFor(small, DType::kFloat32), "shm_direct");
        ASSERT_EQ(c.AllReduceAlgorithmFor(large, DType::kFloat32), "shm_chunked");
        std::vector<float> in(large, 1.0f), out(large);
        std::vector<uint8_t> b(bcast, static_cast<uint8_t>(rank));
        sync.arrive_and_wait();
        if (rank == 0) {
          direct0 = metrics::LatencyCount(Op::kAllReduce, Algo::kShmDirect, "arena");
          chunked0 = metrics::LatencyCount(Op::kAllReduce, Algo::kShmChunked, "arena");
          bcast0 = metrics::LatencyCount(Op::kBroadcast, Algo::kShm, "arena");
          arena0 = metrics::SentBytes("arena", PeerClass::kSameHost);
          shm0 = metrics::SentBytes("shm", PeerClass::kSameHost);
        }
        sync.arrive_and_wait();
        for (int i = 0; i < kOps; ++i) {
          Check(c.AllReduce(in.data(), out.data(), small, DType::kFloat32, ReduceOp::kSum));
        }
        Check(c.AllReduce(in.data(), out.data(), large, DType::kFloat32, ReduceOp::kSum));
        Check(c.Broadcast(b.data(), b.data(), static_cast<int64_t>(bcast), DType::kUint8, 1));
        sync.arrive_and_wait();
        if (rank != 0) return;
        EXPECT_EQ(metrics::LatencyCount(Op::kAllReduce, Algo::kShmDirect, "arena") - direct0,
                  static_cast<uint64_t>(n * kOps));
        EXPECT_EQ(metrics::LatencyCount(Op::kAllReduce, Algo::kShmChunked, "arena") - chunked0,
                  static_cast<uint64_t>(n));
        EXPECT_EQ(metrics::LatencyCount(Op::kBroadcast, Algo::kShm, "arena") - bcast0,
                  static_cast<uint64_t>(n));
        // shm_direct: each rank writes its vector once. shm_chunked: each rank writes its input
        // but the part it reduces itself ((n-1)/n of it, n-1 inputs' worth in all) and,
        // together, the ranks write every result element once. Broadcast: the root writes the
        // message once.
        const uint64_t expected = n * kOps * small * 4 + n * large * 4 + bcast;
        EXPECT_EQ(metrics::SentBytes("arena", PeerClass::kSameHost) - arena0, expected);
        // The arena moved everything: nothing went through the shm transport.
        EXPECT_EQ(metrics::SentBytes("shm", PeerClass::kSameHost), shm0);
      });
}

TEST(ErrorMetrics, FailedOperationsAreCountedByCode) {
  metrics::SetEnabled(true);
  const uint64_t deadline0 = metrics::Errors(Op::kAllReduce, StatusCode::kDeadlineExceeded);
  const uint64_t aborted0 = metrics::Errors(Op::kBarrier, StatusCode::kAborted);
  uint64_t ok0 = 0;
  RunWorld(
      2,
      [](int r) {
        CommOptions o = RemoteTcp(r, "");
        o.timeout_ms = 300;
        return o;
      },
      [&](int rank, Communicator& c, std::barrier<>& sync) {
        if (rank == 0) ok0 = metrics::LatencyCount(Op::kAllReduce, Algo::kRecursiveDoubling, "tcp");
        sync.arrive_and_wait();
        if (rank == 0) {
          // Rank 1 never joins: the operation times out, and the next is refused.
          float x = 1;
          auto w = c.AllReduce(&x, &x, 1, DType::kFloat32, ReduceOp::kSum);
          ASSERT_TRUE(w.ok());
          EXPECT_EQ(w->Wait().code(), StatusCode::kDeadlineExceeded);
          EXPECT_EQ(metrics::Errors(Op::kAllReduce, StatusCode::kDeadlineExceeded) - deadline0, 1u);
          auto again = c.AllReduce(&x, &x, 1, DType::kFloat32, ReduceOp::kSum);
          ASSERT_TRUE(again.ok());
          EXPECT_FALSE(again->Wait().ok());
          EXPECT_EQ(metrics::Errors(Op::kAllReduce, StatusCode::kDeadlineExceeded) - deadline0, 2u);
          EXPECT_EQ(metrics::LatencyCount(Op::kAllReduce, Algo::kRecursiveDoubling, "tcp"), ok0);
        }
        sync.arrive_and_wait();
      });
  // An aborted communicator's operations count as ABORTED.
  RunWorld(
      1, [](int) { return testing::SmallOptions("tcp"); },
      [&](int, Communicator& c, std::barrier<>&) {
        c.Abort();
        auto w = c.Barrier();
        ASSERT_TRUE(w.ok());
        EXPECT_EQ(w->Wait().code(), StatusCode::kAborted);
      });
  EXPECT_EQ(metrics::Errors(Op::kBarrier, StatusCode::kAborted) - aborted0, 1u);
}

TEST(DisabledMetrics, RecordNothing) {
  metrics::SetEnabled(false);
  const std::string before = metrics::RenderText();
  RunWorld(
      2, [](int r) { return RemoteTcp(r, "ring"); },
      [&](int, Communicator& c, std::barrier<>& sync) {
        std::vector<float> v(64, 1.0f);
        for (int i = 0; i < 3; ++i) {
          Check(c.AllReduce(v.data(), v.data(), 64, DType::kFloat32, ReduceOp::kSum));
        }
        Check(c.Barrier());
        sync.arrive_and_wait();
      });
  EXPECT_EQ(metrics::RenderText(), before);
  metrics::SetEnabled(true);
}

TEST(MetricsText, ServerServesTheRegistry) {
  // ctest sets WEFT_METRICS_PORT=0: the first communicator started a server on an ephemeral port.
  metrics::SetEnabled(true);
  RunWorld(
      2, [](int r) { return RemoteTcp(r, "ring"); },
      [&](int, Communicator& c, std::barrier<>&) {
        std::vector<float> v(64, 1.0f);
        Check(c.AllReduce(v.data(), v.data(), 64, DType::kFloat32, ReduceOp::kSum));
      });
  const std::string text = metrics::RenderText();
  EXPECT_NE(text.find("# TYPE weft_collective_latency_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("weft_collective_latency_seconds_bucket{op=\"allreduce\",algorithm=\"ring\","
                      "transport=\"tcp\",rank=\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(",world_size=\""), std::string::npos) << text;
  EXPECT_NE(text.find(",le=\"2.5e-07\"} "), std::string::npos) << text;
  EXPECT_NE(text.find("le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(text.find("weft_transport_sent_bytes_total{transport=\"tcp\",peer_class=\"remote\","),
            std::string::npos);
  EXPECT_EQ(text.find("unspecified"), std::string::npos) << "an operation issued without algorithm";
  ASSERT_TRUE(kMetricsPortSet);
  const int port = metrics::ServerPort();
  ASSERT_GT(port, 0) << "WEFT_METRICS_PORT=0 should have started a server";
  auto served = ::weft::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(served.ok()) << served.status().ToString();
  EXPECT_NE(served->find("weft_collective_latency_seconds_count{op=\"allreduce\""),
            std::string::npos)
      << *served;
  EXPECT_EQ(::weft::testing::HttpGet(port, "/nope").status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace weft::collectives
