// The communicator's API around the collectives: argument checking, split, grouped
// point-to-point, unique ids, sticky errors and abort. Ranks are threads over real transports.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>

#include "collectives/communicator.h"
#include "comm_test_util.h"
#include "transport/transport.h"

namespace weft::collectives {
namespace {

using testing::RunRanks;
using testing::SmallOptions;

class CommApi : public ::testing::TestWithParam<std::string> {};

TEST_P(CommApi, BadArgumentsGetClearErrors) {
  RunRanks(3, {SmallOptions(GetParam())}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    float buf[8] = {0};
    auto expect_bad = [&](Result<Work> w, const std::string& needle) {
      ASSERT_FALSE(w.ok()) << needle;
      EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(w.status().message().find(needle), std::string::npos) << w.status().message();
      EXPECT_NE(w.status().message().find("rank " + std::to_string(rank)), std::string::npos)
          << w.status().message();
    };
    expect_bad(c.AllReduce(buf, buf, -3, DType::kFloat32, ReduceOp::kSum), "count -3 for allreduce");
    expect_bad(c.AllReduce(nullptr, buf, 4, DType::kFloat32, ReduceOp::kSum), "null sendbuf");
    expect_bad(c.AllReduce(buf, nullptr, 4, DType::kFloat32, ReduceOp::kSum), "null recvbuf");
    expect_bad(c.AllReduce(buf, buf, 4, static_cast<DType>(42), ReduceOp::kSum), "unknown data type");
    expect_bad(c.AllReduce(buf, buf, 4, DType::kFloat32, static_cast<ReduceOp>(9)), "unknown reduce op");
    expect_bad(c.AllReduce(buf, buf + 1, 4, DType::kFloat32, ReduceOp::kSum), "overlap");
    expect_bad(c.Broadcast(buf, buf, 4, DType::kFloat32, 3), "root 3 outside the group of 3");
    expect_bad(c.Reduce(buf, buf, 4, DType::kFloat32, ReduceOp::kSum, -1), "root -1");
    expect_bad(c.Gather(buf, buf, 1, DType::kFloat32, 7), "root 7");
    expect_bad(c.Scatter(buf, buf, -1, DType::kFloat32, 0), "recvcount -1");
    expect_bad(c.AllGather(buf, buf, -2, DType::kFloat32), "sendcount -2");
    expect_bad(c.ReduceScatter(buf, buf, -2, DType::kFloat32, ReduceOp::kMax), "recvcount -2");
    expect_bad(c.AllToAll(nullptr, buf, 1, DType::kInt8), "null sendbuf");
    expect_bad(c.Send(buf, 1, DType::kFloat32, 5, 0), "peer 5");
    expect_bad(c.Send(buf, 1, DType::kFloat32, rank, 0), "self");
    expect_bad(c.Recv(buf, 1, DType::kFloat32, (rank + 1) % 3, -4), "tag -4");
    // Null buffers with count 0 are fine, and the communicator is still healthy.
    auto w = c.AllReduce(nullptr, nullptr, 0, DType::kFloat32, ReduceOp::kSum);
    ASSERT_TRUE(w.ok());
    EXPECT_TRUE(w->Wait().ok());
    EXPECT_TRUE(c.GetAsyncError().ok());
  });
}

TEST_P(CommApi, SplitMakesIndependentGroups) {
  const int n = 6;
  RunRanks(n, {SmallOptions(GetParam())}, [&](int rank, auto& comms) {
    Communicator& world = *comms[0];
    // Evens and odds, ordered by descending key; rank 5 opts out.
    auto sub = world.Split(rank == 5 ? -1 : rank % 2, -rank);
    ASSERT_TRUE(sub.ok()) << sub.status().ToString();
    if (rank == 5) {
      EXPECT_EQ(*sub, nullptr);
    } else {
      Communicator& s = **sub;
      int expected_size = rank % 2 == 0 ? 3 : 2;
      ASSERT_EQ(s.world_size(), expected_size);
      // Descending key: the highest world rank is rank 0 of the split.
      std::vector<int> members = rank % 2 == 0 ? std::vector<int>{4, 2, 0} : std::vector<int>{3, 1};
      EXPECT_EQ(s.world_rank_of(s.rank()), rank);
      EXPECT_EQ(members[s.rank()], rank);
      int64_t v = rank, sum = 0;
      auto w = s.AllReduce(&v, &sum, 1, DType::kInt64, ReduceOp::kSum);
      ASSERT_TRUE(w.ok());
      ASSERT_TRUE(w->Wait().ok());
      EXPECT_EQ(sum, rank % 2 == 0 ? 6 : 4);
      // A split of a split, then the parent again: all keep working.
      auto sub2 = s.Split(0, s.rank());
      ASSERT_TRUE(sub2.ok());
      int32_t one = 1, total = 0;
      auto w2 = (*sub2)->AllReduce(&one, &total, 1, DType::kInt32, ReduceOp::kSum);
      ASSERT_TRUE(w2.ok() && w2->Wait().ok());
      EXPECT_EQ(total, expected_size);
    }
    int64_t v = 1, sum = 0;
    auto w = world.AllReduce(&v, &sum, 1, DType::kInt64, ReduceOp::kSum);
    ASSERT_TRUE(w.ok() && w->Wait().ok());
    EXPECT_EQ(sum, n);
    // A later split after one where rank 5 opted out: every rank must still agree on the ids.
    auto again = world.Split(0, rank);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    int64_t one = 1, total = 0;
    auto w3 = (*again)->AllReduce(&one, &total, 1, DType::kInt64, ReduceOp::kSum);
    ASSERT_TRUE(w3.ok());
    ASSERT_TRUE(w3->Wait(Deadline::AfterMs(20000)).ok()) << w3->status().ToString();
    EXPECT_EQ(total, n);
  });
}

TEST_P(CommApi, GroupedSendRecvInBothDirectionsDoesNotDeadlock) {
  const int n = 4;
  RunRanks(n, {SmallOptions(GetParam())}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    const int64_t count = 300000;  // large: rendezvous paths, where ungrouped pairs would block
    std::vector<float> out(count), in_left(count), in_right(count);
    std::iota(out.begin(), out.end(), static_cast<float>(rank * 1000));
    int right = (rank + 1) % n, left = (rank + n - 1) % n;
    c.GroupStart();
    auto s1 = c.Send(out.data(), count, DType::kFloat32, right, 7);
    auto s2 = c.Send(out.data(), count, DType::kFloat32, left, 8);
    auto r1 = c.Recv(in_left.data(), count, DType::kFloat32, left, 7);
    auto r2 = c.Recv(in_right.data(), count, DType::kFloat32, right, 8);
    auto g = c.GroupEnd();
    ASSERT_TRUE(s1.ok() && s2.ok() && r1.ok() && r2.ok() && g.ok());
    ASSERT_TRUE(g->Wait().ok()) << g->status().ToString();
    EXPECT_TRUE(r1->Wait().ok());
    EXPECT_EQ(in_left[5], static_cast<float>(left * 1000 + 5));
    EXPECT_EQ(in_right[count - 1], static_cast<float>(right * 1000 + count - 1));
    // Tagged messages between one pair arrive in order per tag.
    if (rank < 2) {
      int peer = 1 - rank;
      std::vector<int32_t> got(3);
      c.GroupStart();
      std::vector<Work> ws;
      for (int32_t i = 0; i < 3; ++i) {
        static thread_local int32_t vals[3];
        vals[i] = rank * 10 + i;
        ws.push_back(*c.Send(&vals[i], 1, DType::kInt32, peer, 2));
      }
      for (int i = 0; i < 3; ++i) ws.push_back(*c.Recv(&got[i], 1, DType::kInt32, peer, 2));
      ASSERT_TRUE(c.GroupEnd()->Wait().ok());
      EXPECT_EQ(got, (std::vector<int32_t>{peer * 10, peer * 10 + 1, peer * 10 + 2}));
    }
  });
}

TEST_P(CommApi, MismatchedCountsFailInsteadOfHanging) {
  CommOptions o = SmallOptions(GetParam());
  o.timeout_ms = 4000;
  o.algorithm = "recursive_doubling";
  RunRanks(2, {o}, [&](int rank, auto& comms) {
    std::vector<float> buf(200, 1.0f);
    auto t0 = Clock::now();
    auto w = comms[0]->AllReduce(buf.data(), buf.data(), rank == 0 ? 100 : 101, DType::kFloat32,
                                 ReduceOp::kSum);
    ASSERT_TRUE(w.ok());
    Status s = w->Wait();
    EXPECT_FALSE(s.ok());
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(9));
    EXPECT_NE(s.message().find("allreduce #0"), std::string::npos) << s.message();
    // Sticky: the next operation fails with the same cause.
    auto w2 = comms[0]->Barrier();
    if (w2.ok()) {
      EXPECT_FALSE(w2->Wait().ok());
    }
    EXPECT_FALSE(comms[0]->GetAsyncError().ok());
  });
}

TEST_P(CommApi, PipelinedWaitsThatTimeOutNameTheLatePeer) {
  // Ring, Rabenseifner and the broadcast wait for their pieces one by one, acting on each as it
  // lands (OpContext::WaitAt); when the operation's deadline passes, the error must still name
  // the peer it waits for, as WaitAll's does. The last rank never joins.
  struct Case {
    const char* algo;  // all-reduce algorithm, or "" for a broadcast from the absent rank
    int n;
  };
  for (const Case& k : {Case{"ring", 3}, Case{"rabenseifner", 4}, Case{"", 3}}) {
    CommOptions o = SmallOptions(GetParam());
    o.timeout_ms = 1500;
    o.shm_coll = 0;  // the transports' pipelined paths, not the arena
    if (*k.algo != 0) o.algorithm = k.algo;
    const int absent = k.n - 1;
    std::atomic<int> done{0};
    RunRanks(k.n, {o}, [&](int rank, auto& comms) {
      if (rank == absent) {
        // Stays up (so nobody sees a lost connection) until the others have timed out.
        Deadline d = Deadline::AfterMs(20000);
        while (done.load() < k.n - 1 && !d.Expired()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return;
      }
      std::vector<float> buf(4096, 1.0f);  // 16 KiB: many 512-byte pieces per step
      auto w = *k.algo != 0
                   ? comms[0]->AllReduce(buf.data(), buf.data(), 4096, DType::kFloat32,
                                         ReduceOp::kSum)
                   : comms[0]->Broadcast(buf.data(), buf.data(), 4096, DType::kFloat32, absent);
      ASSERT_TRUE(w.ok());
      Status s = w->Wait();
      done++;
      const std::string what = std::string(*k.algo != 0 ? k.algo : "broadcast") + ", rank " +
                               std::to_string(rank) + ": " + s.ToString();
      // Its own timeout, or a peer's reported to it first (the failure is shared).
      EXPECT_TRUE(s.code() == StatusCode::kDeadlineExceeded ||
                  s.code() == StatusCode::kUnavailable)
          << what;
      EXPECT_NE(s.message().find("timed out after"), std::string::npos) << what;
      EXPECT_NE(s.message().find("waiting for rank"), std::string::npos) << what;
    });
  }
}

TEST_P(CommApi, AbortWakesWaitersOnEveryRank) {
  CommOptions o = SmallOptions(GetParam());
  o.timeout_ms = 60000;
  RunRanks(3, {o}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    std::vector<float> buf(1000, 1.0f);
    auto t0 = Clock::now();
    if (rank == 2) {
      // Rank 2 never joins the all-reduce; it aborts instead.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      c.Abort();
      EXPECT_EQ(c.GetAsyncError().code(), StatusCode::kAborted);
      return;
    }
    auto w = c.AllReduce(buf.data(), buf.data(), 1000, DType::kFloat32, ReduceOp::kSum);
    ASSERT_TRUE(w.ok());
    Status s = w->Wait();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s.message();
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  });
}

TEST_P(CommApi, UniqueIdBootstrap) {
  auto id = Communicator::GetUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int r = 0; r < 3; ++r) {
    ts.emplace_back([&, r] {
      auto c = Communicator::FromUniqueId(*id, r, 3, SmallOptions(GetParam()));
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      EXPECT_EQ((*c)->local_size(), 3);
      EXPECT_EQ((*c)->transport_of((r + 1) % 3), GetParam());
      double v = r + 0.5, out = 0;
      auto w = (*c)->AllReduce(&v, &out, 1, DType::kFloat64, ReduceOp::kMax);
      if (w.ok() && w->Wait().ok() && out == 2.5) ok++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 3);
}

TEST_P(CommApi, AsyncWorkOverlapsAndCompletesInOrder) {
  RunRanks(2, {SmallOptions(GetParam())}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    std::vector<std::vector<int32_t>> bufs(20, std::vector<int32_t>(5000, rank + 1));
    std::vector<Work> ws;
    for (auto& b : bufs) ws.push_back(*c.AllReduce(b.data(), b.data(), 5000, DType::kInt32, ReduceOp::kSum));
    // Poll the last one with Test() until done (no blocking wait at all).
    auto t0 = Clock::now();
    while (!ws.back().Test()) {
      ASSERT_LT(Clock::now() - t0, std::chrono::seconds(30));
    }
    for (auto& w : ws) EXPECT_TRUE(w.Test());
    for (auto& b : bufs) EXPECT_EQ(b[4999], 3);
  });
}

TEST_P(CommApi, WorkerStartsUnwaitedWorkAfterBackingOffAndParking) {
  // The worker backs off while callers run every operation themselves and parks when nothing is
  // queued; an operation nobody waits for must still start within a couple of its polls (well
  // under the 1 s safety tick that would hide a lost wake-up).
  RunRanks(2, {SmallOptions(GetParam())}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    std::vector<int32_t> buf(64, rank + 1);
    auto unwaited = [&](const char* when) {
      std::vector<int32_t> b(64, rank + 1);
      auto w = c.AllReduce(b.data(), b.data(), 64, DType::kInt32, ReduceOp::kSum);
      ASSERT_TRUE(w.ok());
      // Watched through the output alone: Test() and Wait() would run it on this thread.
      auto t0 = Clock::now();
      while (std::atomic_ref<int32_t>(b[63]).load(std::memory_order_acquire) != 3) {
        ASSERT_LT(Clock::now() - t0, std::chrono::milliseconds(500)) << when;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      EXPECT_TRUE(w->Wait().ok()) << when;
    };
    // Callers start everything: the worker's poll backs off to its longest.
    for (int i = 0; i < 300; ++i) {
      ASSERT_TRUE(c.AllReduce(buf.data(), buf.data(), 64, DType::kInt32, ReduceOp::kSum)
                      ->Wait()
                      .ok());
    }
    unwaited("after 300 waited operations");
    // Nothing queued for a while: the worker parks; the next operation must wake it.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    unwaited("after 100 ms without operations");
  });
}

// Broadcast and all-gather among ranks of one host, single copy (every receiver pulling
// straight from the owner's buffer with process_vm_readv) forced down to 1 byte, against the
// arena's slot path: every root, in and out of place, sizes around the slot size.
TEST(SingleCopy, BroadcastAndAllGatherMatchTheSlotPath) {
  for (int n : {2, 3, 4}) {
    for (size_t min_bytes : {size_t{1}, size_t{1} << 40}) {  // single copy, then never
      CommOptions o = SmallOptions("shm");
      o.shm_single_copy_min_bytes = min_bytes;
      RunRanks(n, {o}, [&](int rank, auto& comms) {
        Communicator& c = *comms[0];
        for (int64_t count : {1, 17, 4099}) {
          for (bool in_place : {false, true}) {
            for (int root = 0; root < n; ++root) {
              std::vector<int32_t> want(count);
              for (int64_t i = 0; i < count; ++i) want[i] = static_cast<int32_t>(root * 7919 + i);
              std::vector<int32_t> in = rank == root ? want : std::vector<int32_t>(count, -1);
              std::vector<int32_t> out(count, -2);
              int32_t* dst = in_place || rank != root ? in.data() : out.data();
              auto w = c.Broadcast(in.data(), dst, count, DType::kInt32, root);
              ASSERT_TRUE(w.ok() && w->Wait().ok()) << "n " << n << " root " << root;
              ASSERT_EQ(std::vector<int32_t>(dst, dst + count), want)
                  << "broadcast n " << n << " root " << root << " count " << count;
            }
            std::vector<int32_t> all(count * n), want(count * n);
            for (int64_t i = 0; i < count * n; ++i) want[i] = static_cast<int32_t>(i * 31 + 5);
            std::vector<int32_t> mine(want.begin() + rank * count, want.begin() + (rank + 1) * count);
            const int32_t* src = mine.data();
            if (in_place) {
              std::copy(mine.begin(), mine.end(), all.begin() + rank * count);
              src = all.data() + rank * count;
            }
            auto w = c.AllGather(src, all.data(), count, DType::kInt32);
            ASSERT_TRUE(w.ok() && w->Wait().ok()) << "n " << n;
            ASSERT_EQ(all, want) << "allgather n " << n << " count " << count;
          }
        }
      });
    }
  }
}

// The arena broadcast cuts a message that would fill fewer than 8 slots into smaller pieces
// (at least 64 KiB): default slots (512 KiB for up to 4 ranks), sizes that give whole pieces,
// a ragged last piece and a single slot-sized one, every root, with an all-reduce between the
// broadcasts so that pieces and operations share the arena's sequence numbers.
TEST(ArenaBroadcast, PiecesSmallerThanASlotArriveWhole) {
  const int n = 3;
  CommOptions o = SmallOptions("shm");
  o.shm_coll_chunk_bytes = 0;  // auto: 512 KiB slots
  o.shm_single_copy_min_bytes = size_t{1} << 40;
  RunRanks(n, {o}, [&](int rank, auto& comms) {
    Communicator& c = *comms[0];
    for (size_t bytes : {size_t{300} << 10, (size_t{1} << 20) + 12, (size_t{3} << 20) + 4,
                         size_t{4} << 20}) {
      const int64_t count = static_cast<int64_t>(bytes / 4);
      for (int root = 0; root < n; ++root) {
        std::vector<int32_t> want(count);
        for (int64_t i = 0; i < count; ++i) want[i] = static_cast<int32_t>(root * 1000003 + i);
        std::vector<int32_t> buf = rank == root ? want : std::vector<int32_t>(count, -1);
        auto w = c.Broadcast(buf.data(), buf.data(), count, DType::kInt32, root);
        ASSERT_TRUE(w.ok() && w->Wait().ok()) << "root " << root << " bytes " << bytes;
        ASSERT_TRUE(buf == want) << "rank " << rank << " root " << root << " bytes " << bytes;
        std::vector<int32_t> one(5, rank + 1), sum(5);
        auto a = c.AllReduce(one.data(), sum.data(), 5, DType::kInt32, ReduceOp::kSum);
        ASSERT_TRUE(a.ok() && a->Wait().ok());
        ASSERT_EQ(sum, std::vector<int32_t>(5, n * (n + 1) / 2));
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Built, CommApi, ::testing::ValuesIn(transport::AvailableTransports()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace weft::collectives
