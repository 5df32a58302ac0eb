// Every collective x data type x reduce op x element count (0, 1, odd, larger than a chunk) x
// world size (1, 2, 3, 4, 8) x in-place/out-of-place x transport, checked against a serial
// reference. Ranks are threads; transports are real (shared memory, TCP over loopback).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <sstream>

#include "base/reduce_kernels.h"
#include "collectives/communicator.h"
#include "comm_test_util.h"
#include "transport/transport.h"

namespace weft::collectives {
namespace {

using testing::Input;
using testing::Reference;
using testing::RunRanks;
using testing::SmallOptions;

constexpr int64_t kCounts[] = {0, 1, 17, 4099};

std::string Label(const char* what, DType d, int op, int64_t count, bool in_place, int rank) {
  std::ostringstream s;
  s << what << " dtype=" << DTypeName(d) << " op=" << op << " count=" << count
    << " in_place=" << in_place << " rank=" << rank;
  return s.str();
}

struct Param {
  std::string transport;
  int world;
};

class CollectivesMatrix : public ::testing::TestWithParam<Param> {};

TEST_P(CollectivesMatrix, AllCollectivesMatchTheReference) {
  const int n = GetParam().world;
  // Three communicators run every all-reduce over the transports (the arena off: ring, recursive
  // doubling, Rabenseifner), one takes the tuner's choice, which on one host is the
  // shared-memory arena.
  CommOptions ring = SmallOptions(GetParam().transport);
  ring.algorithm = "ring";
  ring.shm_coll = 0;
  CommOptions rd = ring;
  rd.algorithm = "recursive_doubling";
  CommOptions tuned = ring;  // the tuner's choice: the shared-memory arena where it applies
  tuned.algorithm = "";
  tuned.shm_coll = 1;
  tuned.shm_streaming_min_bytes = 64;  // the arena's streaming-store outputs, at every size here
  CommOptions rab = ring;
  rab.algorithm = "rabenseifner";
  std::atomic<int> failures{0};
  auto body = [&](int rank, std::vector<std::unique_ptr<Communicator>>& comms) {
    if (GetParam().transport == "shm" && n > 1) {
      // The tuned communicator must really take the intra-host arena paths.
      EXPECT_EQ(comms[2]->AllReduceAlgorithmFor(17, DType::kFloat32), "shm_direct");
      EXPECT_EQ(comms[2]->AllReduceAlgorithmFor(4099, DType::kFloat32), "shm_chunked");
    }
    auto check = [&](bool ok, const std::string& what) {
      if (!ok && failures.fetch_add(1) < 10) ADD_FAILURE() << what;
    };
    auto run = [&](Result<Work> w, const std::string& what) {
      if (!w.ok()) return check(false, what + ": " + w.status().ToString());
      Status s = w->Wait();
      check(s.ok(), what + ": " + s.ToString());
    };
    for (int di = 0; di < kNumDTypes; ++di) {
      DType d = static_cast<DType>(di);
      const size_t es = DTypeSize(d);
      for (int64_t count : kCounts) {
        for (bool in_place : {false, true}) {
          // Reductions: every op.
          for (int oi = 0; oi < kNumReduceOps; ++oi) {
            ReduceOp op = static_cast<ReduceOp>(oi);
            auto ref = Reference(d, op, n, count);
            for (auto& comm : comms) {
              auto in = Input(d, op, rank, count);
              std::vector<uint8_t> out(in.size(), 0xee);
              uint8_t* dst = in_place ? in.data() : out.data();
              run(comm->AllReduce(in.data(), dst, count, d, op),
                  Label("allreduce", d, oi, count, in_place, rank));
              check(std::memcmp(dst, ref.data(), ref.size()) == 0,
                    Label("allreduce result", d, oi, count, in_place, rank) + " algo " +
                        comm->AllReduceAlgorithmFor(count, d));
            }
            for (int ci : {0, 2}) {  // over the transports, and through the arena
              Communicator& c = *comms[ci];
              {  // reduce to a root that varies with the count
                int root = static_cast<int>(count % n);
                auto in = Input(d, op, rank, count);
                std::vector<uint8_t> out(in.size(), 0xee);
                uint8_t* dst = in_place ? in.data() : out.data();
                run(c.Reduce(in.data(), dst, count, d, op, root),
                    Label("reduce", d, oi, count, in_place, rank));
                if (rank == root) {
                  check(std::memcmp(dst, ref.data(), ref.size()) == 0,
                        Label("reduce result", d, oi, count, in_place, rank));
                }
              }
              {  // reduce-scatter: n blocks of `count`
                std::vector<uint8_t> in, full_ref = Reference(d, op, n, count * n, 1);
                in = Input(d, op, rank, count * n, 1);
                std::vector<uint8_t> out(count * es, 0xee);
                uint8_t* dst = in_place ? in.data() + rank * count * es : out.data();
                run(c.ReduceScatter(in.data(), dst, count, d, op),
                    Label("reducescatter", d, oi, count, in_place, rank));
                check(std::memcmp(dst, full_ref.data() + rank * count * es, count * es) == 0,
                      Label("reducescatter result", d, oi, count, in_place, rank));
              }
            }
          }
          for (int ci : {0, 2}) {
            Communicator& c = *comms[ci];
            const int root = static_cast<int>((count + 1) % n);
            {  // broadcast
              auto src = Input(d, ReduceOp::kSum, root, count, 2);
              std::vector<uint8_t> buf(src.size(), 0xee);
              if (rank == root && in_place) buf = src;
              const void* send = rank == root ? (in_place ? buf.data() : src.data()) : nullptr;
              run(c.Broadcast(send, buf.data(), count, d, root),
                  Label("broadcast", d, 0, count, in_place, rank));
              check(buf == src, Label("broadcast result", d, 0, count, in_place, rank));
            }
            // Rank r's block for the gathers: Input(..., r, count, 3).
            std::vector<uint8_t> gathered;
            for (int r = 0; r < n; ++r) {
              auto b = Input(d, ReduceOp::kSum, r, count, 3);
              gathered.insert(gathered.end(), b.begin(), b.end());
            }
            {  // all-gather
              auto mine = Input(d, ReduceOp::kSum, rank, count, 3);
              std::vector<uint8_t> out(gathered.size(), 0xee);
              const void* send = mine.data();
              if (in_place) {
                std::memcpy(out.data() + rank * count * es, mine.data(), mine.size());
                send = out.data() + rank * count * es;
              }
              run(c.AllGather(send, out.data(), count, d),
                  Label("allgather", d, 0, count, in_place, rank));
              check(out == gathered, Label("allgather result", d, 0, count, in_place, rank));
            }
            {  // gather
              auto mine = Input(d, ReduceOp::kSum, rank, count, 3);
              std::vector<uint8_t> out(gathered.size(), 0xee);
              const void* send = mine.data();
              if (in_place && rank == root) {
                std::memcpy(out.data() + rank * count * es, mine.data(), mine.size());
                send = out.data() + rank * count * es;
              }
              run(c.Gather(send, rank == root ? out.data() : nullptr, count, d, root),
                  Label("gather", d, 0, count, in_place, rank));
              if (rank == root)
                check(out == gathered, Label("gather result", d, 0, count, in_place, rank));
            }
            {  // scatter
              std::vector<uint8_t> src = rank == root ? gathered : std::vector<uint8_t>();
              std::vector<uint8_t> out(count * es, 0xee);
              void* dst = out.data();
              if (in_place && rank == root) dst = src.data() + rank * count * es;
              run(c.Scatter(rank == root ? src.data() : nullptr, dst, count, d, root),
                  Label("scatter", d, 0, count, in_place, rank));
              auto want = Input(d, ReduceOp::kSum, rank, count, 3);
              check(std::memcmp(dst, want.data(), want.size()) == 0,
                    Label("scatter result", d, 0, count, in_place, rank));
            }
            {  // all-to-all: block p of rank r's input is Input(.., r * n + p, count, 4)
              std::vector<uint8_t> in, want;
              for (int p = 0; p < n; ++p) {
                auto b = Input(d, ReduceOp::kSum, rank * n + p, count, 4);
                in.insert(in.end(), b.begin(), b.end());
                auto w = Input(d, ReduceOp::kSum, p * n + rank, count, 4);
                want.insert(want.end(), w.begin(), w.end());
              }
              std::vector<uint8_t> out(in.size(), 0xee);
              uint8_t* dst = in_place ? in.data() : out.data();
              run(c.AllToAll(in.data(), dst, count, d),
                  Label("alltoall", d, 0, count, in_place, rank));
              check(std::memcmp(dst, want.data(), want.size()) == 0,
                    Label("alltoall result", d, 0, count, in_place, rank));
            }
          }
        }
      }
    }
    run(comms[0]->Barrier(), "barrier");
    run(comms[1]->Barrier(), "barrier");
    run(comms[2]->Barrier(), "barrier");
    EXPECT_TRUE(comms[0]->GetAsyncError().ok());
  };
  RunRanks(n, {ring, rd, tuned, rab}, body);
  EXPECT_EQ(failures.load(), 0);
}

std::vector<Param> AllParams() {
  std::vector<Param> out;
  for (const auto& t : transport::AvailableTransports()) {
    for (int n : {1, 2, 3, 4, 8}) out.push_back({t, n});
  }
  return out;
}

TEST(AllGatherChoice, RecursiveDoublingOnPowersOfTwoUpToItsLimitElseTheRing) {
  // 4 MiB gathered (WEFT_ALLGATHER_RD_MAX_BYTES' default) is the last size for recursive
  // doubling; one element more per block goes to the ring; both gather the same bytes.
  constexpr int64_t kAtLimit = (4 << 20) / 4 / 4;
  CommOptions tuned = SmallOptions("tcp");
  CommOptions ring = tuned;
  ring.algorithm = "ring";
  std::atomic<int> failures{0};
  RunRanks(4, {tuned, ring}, [&](int rank, std::vector<std::unique_ptr<Communicator>>& comms) {
    EXPECT_EQ(comms[0]->AllGatherAlgorithmFor(kAtLimit, DType::kFloat32), "recursive_doubling");
    EXPECT_EQ(comms[0]->AllGatherAlgorithmFor(kAtLimit + 1, DType::kFloat32), "ring");
    EXPECT_EQ(comms[1]->AllGatherAlgorithmFor(16, DType::kFloat32), "ring");
    for (int64_t count : {kAtLimit, kAtLimit + 1}) {
      for (auto& c : comms) {
        auto mine = Input(DType::kFloat32, ReduceOp::kSum, rank, count, 3);
        std::vector<uint8_t> out(mine.size() * 4, 0xee), want;
        for (int r = 0; r < 4; ++r) {
          auto b = Input(DType::kFloat32, ReduceOp::kSum, r, count, 3);
          want.insert(want.end(), b.begin(), b.end());
        }
        auto w = c->AllGather(mine.data(), out.data(), count, DType::kFloat32);
        ASSERT_TRUE(w.ok()) << w.status().ToString();
        ASSERT_TRUE(w->Wait().ok());
        if (out != want && failures.fetch_add(1) < 5) {
          ADD_FAILURE() << "rank " << rank << " count " << count << " differs";
        }
      }
    }
  });
  EXPECT_EQ(failures.load(), 0);
  RunRanks(3, {tuned}, [&](int, std::vector<std::unique_ptr<Communicator>>& comms) {
    EXPECT_EQ(comms[0]->AllGatherAlgorithmFor(16, DType::kFloat32), "ring");
  });
}

TEST(ArenaSlots, LargeOperationsCorrectWithEitherSlotCopy) {
  // From 1 MiB the arena fills its slots with ordinary or streaming stores, whichever it measures
  // faster, trying the other one operation in eight or in 32: over 40 operations of each kind
  // both run, at sizes that end in a partial chunk, with outputs streamed too
  // (shm_streaming_min_bytes) and broadcasts and all-gathers through the slots (no single copy).
  constexpr int kRanks = 3;
  constexpr int64_t kCount = (1 << 20) / 4 + 4099;
  CommOptions o;
  o.transports = {"shm"};
  o.shm_coll = 1;
  o.timeout_ms = 60000;
  o.shm_streaming_min_bytes = 1 << 20;
  o.shm_single_copy_min_bytes = size_t{1} << 40;
  std::atomic<int> failures{0};
  auto check = [&](bool ok, int rank, const char* what, int i) {
    if (!ok && failures.fetch_add(1) < 5) {
      ADD_FAILURE() << what << ": rank " << rank << " operation " << i << " differs";
    }
  };
  RunRanks(kRanks, {o}, [&](int rank, std::vector<std::unique_ptr<Communicator>>& comms) {
    Communicator& c = *comms[0];
    ASSERT_EQ(c.AllReduceAlgorithmFor(kCount, DType::kFloat32), "shm_chunked");
    for (int i = 0; i < 40; ++i) {
      const ReduceOp op = i % 2 == 0 ? ReduceOp::kSum : ReduceOp::kMax;
      auto in = Input(DType::kFloat32, op, rank + i, kCount);
      std::vector<uint8_t> out(in.size(), 0xee);
      auto w = c.AllReduce(in.data(), out.data(), kCount, DType::kFloat32, op);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      ASSERT_TRUE(w->Wait().ok());
      // The reference over seeds i .. i + kRanks - 1, in rank order (Input's seed is the rank).
      std::vector<uint8_t> want = Input(DType::kFloat32, op, i, kCount);
      for (int r = 1; r < kRanks; ++r) {
        auto other = Input(DType::kFloat32, op, r + i, kCount);
        ReduceInto(DType::kFloat32, op, want.data(), want.data(), other.data(), kCount);
      }
      check(out == want, rank, "all-reduce", i);
    }
    for (int i = 0; i < 40; ++i) {
      const int root = i % kRanks;
      auto data = Input(DType::kFloat32, ReduceOp::kSum, 100 + i, kCount);
      std::vector<uint8_t> buf = rank == root ? data : std::vector<uint8_t>(data.size(), 0xee);
      auto w = c.Broadcast(buf.data(), buf.data(), kCount, DType::kFloat32, root);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      ASSERT_TRUE(w->Wait().ok());
      check(buf == data, rank, "broadcast", i);
    }
    constexpr int64_t kBlock = 350 * 1024 / 4 + 17;
    for (int i = 0; i < 40; ++i) {
      auto mine = Input(DType::kFloat32, ReduceOp::kSum, 200 + rank + i, kBlock);
      std::vector<uint8_t> out(mine.size() * kRanks, 0xee);
      auto w = c.AllGather(mine.data(), out.data(), kBlock, DType::kFloat32);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      ASSERT_TRUE(w->Wait().ok());
      std::vector<uint8_t> want;
      for (int r = 0; r < kRanks; ++r) {
        auto b = Input(DType::kFloat32, ReduceOp::kSum, 200 + r + i, kBlock);
        want.insert(want.end(), b.begin(), b.end());
      }
      check(out == want, rank, "all-gather", i);
    }
  });
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Built, CollectivesMatrix, ::testing::ValuesIn(AllParams()),
                         [](const auto& info) {
                           return info.param.transport + "_" + std::to_string(info.param.world) +
                                  "ranks";
                         });

}  // namespace
}  // namespace weft::collectives
