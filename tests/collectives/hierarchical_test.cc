// Ranks spread over several "hosts" (threads given different host identities, so shared memory
// joins ranks of a host and TCP joins hosts): the tuner picks the hierarchical all-reduce, and it
// matches the serial reference for every data type, op and size, with and without the arena;
// broadcast and all-gather take their two-level paths too, on contiguous and interleaved layouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "base/reduce_kernels.h"
#include "collectives/communicator.h"
#include "comm_test_util.h"
#include "rendezvous/store.h"

namespace weft::collectives {
namespace {

using testing::Input;
using testing::Reference;

struct Layout {
  int hosts;
  int per_host;
  bool arena;
  int64_t segment_bytes = 0;  // > 0: pipelined, segments of this size (4099 floats make 4)
};

class Hierarchical : public ::testing::TestWithParam<Layout> {};

TEST_P(Hierarchical, MatchesReferenceAndIsChosen) {
  const Layout lay = GetParam();
  const int n = lay.hosts * lay.per_host;
  rendezvous::HashStore store;
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) {
    ts.emplace_back([&, r] {
      CommOptions o = testing::SmallOptions("shm");
      o.transports = {"shm", "tcp"};
      o.host_id = "host" + std::to_string(r / lay.per_host);
      o.shm_coll = lay.arena ? 1 : 0;
      o.hier_segment_bytes = lay.segment_bytes > 0 ? lay.segment_bytes : -1;
      auto c = Communicator::Create(store, r, n, o);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      Communicator& comm = **c;
      EXPECT_EQ(comm.local_size(), lay.per_host);
      EXPECT_EQ(comm.transport_of((r + 1) % n),
                (r + 1) % n / lay.per_host == r / lay.per_host ? "shm" : "tcp");
      EXPECT_EQ(comm.AllReduceAlgorithmFor(1 << 20, DType::kFloat32), "hierarchical");
      for (int di = 0; di < kNumDTypes; ++di) {
        DType d = static_cast<DType>(di);
        for (int oi = 0; oi < kNumReduceOps; ++oi) {
          ReduceOp op = static_cast<ReduceOp>(oi);
          for (int64_t count : {0, 1, 17, 4099}) {
            for (bool in_place : {false, true}) {
              auto ref = Reference(d, op, n, count);
              auto in = Input(d, op, r, count);
              std::vector<uint8_t> out(in.size(), 0xee);
              uint8_t* dst = in_place ? in.data() : out.data();
              auto w = comm.AllReduce(in.data(), dst, count, d, op);
              Status s = w.ok() ? w->Wait() : w.status();
              if (!s.ok() || std::memcmp(dst, ref.data(), ref.size()) != 0) {
                if (failures++ < 5) {
                  ADD_FAILURE() << "rank " << r << " dtype " << DTypeName(d) << " op "
                                << ReduceOpName(op) << " count " << count << " in_place "
                                << in_place << ": " << s.ToString();
                }
              }
            }
          }
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, Hierarchical,
                         ::testing::Values(Layout{2, 2, true}, Layout{3, 2, true},
                                           Layout{2, 3, true}, Layout{2, 2, false},
                                           Layout{3, 2, true, 4096}, Layout{2, 3, true, 2048}),
                         [](const auto& info) {
                           return std::to_string(info.param.hosts) + "hosts_" +
                                  std::to_string(info.param.per_host) + "each_" +
                                  (info.param.arena ? "arena" : "transports") +
                                  (info.param.segment_bytes > 0 ? "_pipelined" : "");
                         });

// Broadcast from every root, hosts laid out contiguously (host = rank / per_host) or interleaved
// (host = rank % hosts), so a root's local rank and host differ from its rank's obvious split.
struct BcastLayout {
  int hosts;
  int per_host;
  bool arena;
  bool interleaved;
};

std::string LayoutName(const ::testing::TestParamInfo<BcastLayout>& info) {
  return std::to_string(info.param.hosts) + "hosts_" + std::to_string(info.param.per_host) +
         "each_" + (info.param.arena ? "arena" : "transports") +
         (info.param.interleaved ? "_interleaved" : "");
}

// The layouts both suites run: contiguous and interleaved hosts, arena and transports.
const auto kLayouts = ::testing::Values(
    BcastLayout{2, 2, true, false}, BcastLayout{3, 2, true, true}, BcastLayout{2, 3, true, true},
    BcastLayout{3, 2, false, false}, BcastLayout{2, 3, false, true});

// Runs fn(rank, communicator) on one thread per rank of `lay`, each communicator on its rank's
// host (shared memory inside it, tcp across).
template <typename Fn>
void RunOnLayout(const BcastLayout& lay, Fn fn) {
  const int n = lay.hosts * lay.per_host;
  rendezvous::HashStore store;
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) {
    ts.emplace_back([&, r] {
      CommOptions o = testing::SmallOptions("shm");
      o.transports = {"shm", "tcp"};
      o.host_id = "host" + std::to_string(lay.interleaved ? r % lay.hosts : r / lay.per_host);
      o.shm_coll = lay.arena ? 1 : 0;
      auto c = Communicator::Create(store, r, n, o);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      fn(r, **c);
    });
  }
  for (auto& t : ts) t.join();
}

class HierarchicalBroadcast : public ::testing::TestWithParam<BcastLayout> {};

TEST_P(HierarchicalBroadcast, EveryRootMatches) {
  const BcastLayout lay = GetParam();
  const int n = lay.hosts * lay.per_host;
  std::atomic<int> failures{0};
  RunOnLayout(lay, [&](int r, Communicator& comm) {
    EXPECT_EQ(comm.local_size(), lay.per_host);  // the hierarchy exists: broadcasts use it
    for (int root = 0; root < n; ++root) {
      for (int64_t count : {0, 1, 17, 4099}) {
        for (bool in_place : {false, true}) {
          std::vector<int32_t> want(static_cast<size_t>(count));
          for (int64_t i = 0; i < count; ++i) want[i] = static_cast<int32_t>(root * 100003 + i);
          std::vector<int32_t> in = r == root ? want : std::vector<int32_t>(count, -1);
          std::vector<int32_t> out(static_cast<size_t>(count), -2);
          int32_t* dst = in_place || r != root ? in.data() : out.data();
          auto w = comm.Broadcast(in.data(), dst, count, DType::kInt32, root);
          Status s = w.ok() ? w->Wait() : w.status();
          if (!s.ok() || std::memcmp(dst, want.data(), want.size() * 4) != 0 ||
              (r == root && !in_place && in != want)) {
            if (failures++ < 5) {
              ADD_FAILURE() << "rank " << r << " root " << root << " count " << count
                            << " in_place " << in_place << ": " << s.ToString();
            }
          }
        }
      }
    }
  });
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierarchicalBroadcast, kLayouts, LayoutName);

// All-gather over the same layouts: every rank's block lands at its rank's place, whatever host
// and local rank it has (interleaved layouts put the ranks of a host far apart).
class HierarchicalAllGather : public ::testing::TestWithParam<BcastLayout> {};

TEST_P(HierarchicalAllGather, EveryBlockInPlace) {
  const BcastLayout lay = GetParam();
  const int n = lay.hosts * lay.per_host;
  std::atomic<int> failures{0};
  RunOnLayout(lay, [&](int r, Communicator& comm) {
    EXPECT_EQ(comm.AllGatherAlgorithmFor(1000, DType::kFloat32), "hierarchical");
    // 4099 int32 = 16 KiB per block: several 512-B arena chunks, blocks straddling chunks.
    for (int64_t count : {0, 1, 17, 4099}) {
      for (bool in_place : {false, true}) {
        std::vector<int32_t> want(static_cast<size_t>(count * n));
        for (int64_t i = 0; i < count * n; ++i) {
          want[i] = static_cast<int32_t>((i / count) * 1000003 + i % count);
        }
        std::vector<int32_t> out(static_cast<size_t>(count * n), -2);
        std::vector<int32_t> in(want.begin() + r * count, want.begin() + (r + 1) * count);
        const int32_t* src = in.data();
        if (in_place) {
          std::copy(in.begin(), in.end(), out.begin() + r * count);
          src = out.data() + r * count;
        }
        auto w = comm.AllGather(src, out.data(), count, DType::kInt32);
        Status s = w.ok() ? w->Wait() : w.status();
        if (!s.ok() || out != want) {
          if (failures++ < 5) {
            ADD_FAILURE() << "rank " << r << " count " << count << " in_place " << in_place << ": "
                          << s.ToString();
          }
        }
      }
    }
  });
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierarchicalAllGather, kLayouts, LayoutName);

TEST(HierarchicalUneven, FallsBackToFlatAndStaysCorrect) {
  // Hosts of 2 and 1 ranks: shards would not line up, so the flat algorithms run.
  rendezvous::HashStore store;
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int r = 0; r < 3; ++r) {
    ts.emplace_back([&, r] {
      CommOptions o = testing::SmallOptions("shm");
      o.transports = {"shm", "tcp"};
      o.host_id = r < 2 ? "hostA" : "hostB";
      auto c = Communicator::Create(store, r, 3, o);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      EXPECT_NE((*c)->AllReduceAlgorithmFor(1 << 20, DType::kFloat32), "hierarchical");
      std::vector<int32_t> v(1001, r + 1);
      auto w = (*c)->AllReduce(v.data(), v.data(), 1001, DType::kInt32, ReduceOp::kSum);
      if (w.ok() && w->Wait().ok() && v[1000] == 6) ok++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 3);
}

}  // namespace
}  // namespace weft::collectives
