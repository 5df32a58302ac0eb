// The mpi transport under real mpirun (the conformance suite runs ranks as threads of one process,
// which MPI cannot): the same kinds of checks, each rank playing its part, plus a communicator
// bootstrapped through MPI (no store in the environment) running collectives over the transport.
// Run by ctest as `mpirun -np 4 mpi_transport_test`; every rank runs every test in the same order.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <numeric>
#include <thread>

#include "collectives/communicator.h"
#include "rendezvous/mpi_bootstrap.h"
#include "transport/transport.h"

namespace weft::transport {
namespace {

int Rank() { return rendezvous::mpi::WorldRank(); }
int Size() { return rendezvous::mpi::WorldSize(); }

struct World {
  std::unique_ptr<Transport> transport;
  std::vector<std::unique_ptr<Endpoint>> endpoints;  // by peer rank, null for self
};

// Creates the transport on every rank (collective) and connects all pairs.
World MakeWorld() {
  static int counter = 0;
  TransportConfig c;
  c.rank = Rank();
  c.world_size = Size();
  c.job_id = "mpi-test-" + std::to_string(counter++);
  World w;
  auto t = CreateTransport("mpi", c);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return w;
  w.transport = std::move(*t);
  auto addr = w.transport->Listen();
  EXPECT_TRUE(addr.ok()) << addr.status().ToString();
  char mine[64] = {0};
  std::snprintf(mine, sizeof(mine), "%s", addr->c_str());
  std::vector<char> all(64 * Size());
  MPI_Allgather(mine, 64, MPI_CHAR, all.data(), 64, MPI_CHAR, MPI_COMM_WORLD);
  std::vector<PeerInfo> peers;
  PeerInfo self{Rank(), "h", 0, *addr};
  for (int p = 0; p < Size(); ++p) {
    if (p == Rank()) continue;
    PeerInfo info{p, "h", 0, std::string(all.data() + 64 * p)};
    EXPECT_TRUE(w.transport->CanConnect(self, info)) << info.address;
    peers.push_back(info);
  }
  auto eps = w.transport->Connect(peers, Deadline::AfterMs(20000));
  EXPECT_TRUE(eps.ok()) << eps.status().ToString();
  w.endpoints.resize(Size());
  if (eps.ok()) {
    for (size_t i = 0; i < peers.size(); ++i) w.endpoints[peers[i].rank] = std::move((*eps)[i]);
  }
  return w;
}

std::vector<uint8_t> Pattern(size_t n, int seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  return v;
}

Deadline Soon() { return Deadline::AfterMs(30000); }

void Barrier() { MPI_Barrier(MPI_COMM_WORLD); }

TEST(MpiTransport, ListedOnlyWhereUsable) {
  auto names = AvailableTransports();
  EXPECT_NE(std::find(names.begin(), names.end(), "mpi"), names.end());
  EXPECT_EQ(names.back(), "mpi") << "mpi must come last: tcp reaches every peer first";
  // A foreign address (another MPI job) is not reachable.
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  PeerInfo self{Rank(), "h", 0, ""}, foreign{0, "h", 0, "0@12345"};
  EXPECT_FALSE(w.transport->CanConnect(self, foreign));
  Barrier();
}

TEST(MpiTransport, PingPongAllSizes) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  for (size_t size : {size_t{0}, size_t{1}, size_t{7}, size_t{8192}, size_t{8193},
                      size_t{65536 + 3}, size_t{1 << 20}, size_t{9 << 20}}) {
    auto out = Pattern(size, static_cast<int>(size));
    std::vector<uint8_t> in(size, 0);
    if (Rank() == 1) {
      auto r = w.endpoints[0]->PostRecv(in.data(), size, 42);
      ASSERT_TRUE(r.ok());
      ASSERT_TRUE((*r)->Wait(Soon()).ok()) << size;
      EXPECT_EQ(in, out) << "size " << size;
      auto s = w.endpoints[0]->PostSend(in.data(), size, 43);
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE((*s)->Wait(Soon()).ok());
    } else if (Rank() == 0) {
      auto s = w.endpoints[1]->PostSend(out.data(), size, 42);
      ASSERT_TRUE(s.ok());
      auto r = w.endpoints[1]->PostRecv(in.data(), size, 43);
      ASSERT_TRUE(r.ok());
      ASSERT_TRUE((*s)->Wait(Soon()).ok()) << size;
      Status st = (*r)->Wait(Soon());
      ASSERT_TRUE(st.ok()) << st.ToString() << " size " << size;
      EXPECT_EQ(in, out) << "size " << size;
    }
  }
  Barrier();
}

TEST(MpiTransport, FifoPerTagOutOfOrderTagsAnd64BitTags) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  constexpr int kMsgs = 20;
  // Tags beyond any MPI_TAG_UB: weft's tags are 64-bit.
  const uint64_t kTags[2] = {0xfedcba9800000001ull, 0x7fffffffffffffffull};
  std::vector<std::vector<uint8_t>> out;
  for (int i = 0; i < kMsgs; ++i) out.push_back(Pattern(100 + i * 997, i));  // 100 B .. 19 KB
  if (Rank() == 0) {
    std::vector<RequestPtr> sends;
    for (int i = 0; i < kMsgs; ++i) {
      auto s = w.endpoints[1]->PostSend(out[i].data(), out[i].size(), kTags[i % 2]);
      ASSERT_TRUE(s.ok());
      sends.push_back(*s);
    }
    for (auto& s : sends) ASSERT_TRUE(s->Wait(Soon()).ok());
  } else if (Rank() == 1) {
    std::vector<std::vector<uint8_t>> in(kMsgs);
    std::vector<RequestPtr> recvs;
    for (int pass = 1; pass >= 0; --pass) {
      for (int i = 0; i < kMsgs; ++i) {
        if (i % 2 != pass) continue;
        in[i].resize(out[i].size());
        auto r = w.endpoints[0]->PostRecv(in[i].data(), in[i].size(), kTags[pass]);
        ASSERT_TRUE(r.ok());
        recvs.push_back(*r);
      }
    }
    for (auto& r : recvs) ASSERT_TRUE(r->Wait(Soon()).ok());
    for (int i = 0; i < kMsgs; ++i) EXPECT_EQ(in[i], out[i]) << "message " << i;
  }
  Barrier();
}

TEST(MpiTransport, UnexpectedMessagesAreBuffered) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  auto small = Pattern(10, 1), big = Pattern(3 << 20, 2);
  RequestPtr s1, s2;
  if (Rank() == 0) {
    s1 = *w.endpoints[1]->PostSend(small.data(), small.size(), 7);
    s2 = *w.endpoints[1]->PostSend(big.data(), big.size(), 8);
    ASSERT_TRUE(s1->Wait(Soon()).ok());  // small ones complete without a receive
  }
  Barrier();  // both sends were posted before any receive exists
  if (Rank() == 1) {
    std::vector<uint8_t> a(10), b(3 << 20);
    auto r2 = w.endpoints[0]->PostRecv(b.data(), b.size(), 8);
    auto r1 = w.endpoints[0]->PostRecv(a.data(), a.size(), 7);
    ASSERT_TRUE(r1.ok() && r2.ok());
    ASSERT_TRUE((*r2)->Wait(Soon()).ok());
    ASSERT_TRUE((*r1)->Wait(Soon()).ok());
    EXPECT_EQ(a, small);
    EXPECT_EQ(b, big);
  }
  if (Rank() == 0) {
    ASSERT_TRUE(s2->Wait(Soon()).ok());
  }
  Barrier();
}

TEST(MpiTransport, SizeMismatchFailsTheReceiveSmallAndLarge) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  for (size_t sent : {size_t{12}, size_t{100000}}) {
    std::vector<uint8_t> out(sent, 1), in(8, 0), ok_out(8, 9), ok_in(8, 0);
    if (Rank() == 0) {
      auto s = w.endpoints[1]->PostSend(out.data(), out.size(), 5);
      auto s2 = w.endpoints[1]->PostSend(ok_out.data(), 8, 6);
      ASSERT_TRUE(s.ok() && s2.ok());
      EXPECT_TRUE((*s)->Wait(Soon()).ok());  // the mismatched message is drained, not left hanging
      EXPECT_TRUE((*s2)->Wait(Soon()).ok());
    } else if (Rank() == 1) {
      auto r = w.endpoints[0]->PostRecv(in.data(), in.size(), 5);
      ASSERT_TRUE(r.ok());
      Status st = (*r)->Wait(Soon());
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
      EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
      EXPECT_NE(st.message().find("mpi"), std::string::npos) << st.message();
      auto r2 = w.endpoints[0]->PostRecv(ok_in.data(), 8, 6);
      ASSERT_TRUE((*r2)->Wait(Soon()).ok());
      EXPECT_EQ(ok_in, ok_out);
    }
  }
  Barrier();
}

TEST(MpiTransport, WaitTimesOutThenCompletes) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  std::vector<uint8_t> in(16, 0), out = Pattern(16, 3);
  if (Rank() == 1) {
    auto r = w.endpoints[0]->PostRecv(in.data(), in.size(), 11);
    ASSERT_TRUE(r.ok());
    auto t0 = Clock::now();
    Status st = (*r)->Wait(Deadline::AfterMs(100));
    EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
    EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(90));
    EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(2000));
    EXPECT_FALSE((*r)->Test());
    Barrier();
    ASSERT_TRUE((*r)->Wait(Soon()).ok());
    EXPECT_EQ(in, out);
  } else {
    Barrier();  // rank 0 sends only after rank 1 saw its wait time out
    if (Rank() == 0) {
      auto s = w.endpoints[1]->PostSend(out.data(), out.size(), 11);
      ASSERT_TRUE((*s)->Wait(Soon()).ok());
    }
  }
  Barrier();
}

TEST(MpiTransport, AbortFailsPendingAndNewRequests) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  if (Rank() == 1) {
    std::vector<uint8_t> in(16), big(1 << 20);
    auto r = w.endpoints[0]->PostRecv(in.data(), in.size(), 1);
    ASSERT_TRUE(r.ok());
    std::thread waiter([&] {
      Status st = (*r)->Wait(Soon());
      EXPECT_EQ(st.code(), StatusCode::kAborted) << st.ToString();
    });
    w.transport->Abort(AbortedError("test abort"));
    waiter.join();
    auto r2 = w.endpoints[0]->PostRecv(in.data(), in.size(), 2);
    if (r2.ok()) {
      EXPECT_FALSE((*r2)->Wait(Soon()).ok());
    }
  }
  Barrier();
}

TEST(MpiTransport, AllPairsBidirectionalStress) {
  World w = MakeWorld();
  ASSERT_TRUE(w.transport);
  const int n = Size(), r = Rank();
  int failures = 0;
  for (int round = 0; round < 30; ++round) {
    size_t size = static_cast<size_t>((round * 7919 + r * 31) % 200000);
    std::vector<std::vector<uint8_t>> in(n), out(n);
    std::vector<RequestPtr> reqs;
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      size_t recv_size = static_cast<size_t>((round * 7919 + p * 31) % 200000);
      in[p].resize(recv_size);
      out[p] = Pattern(size, r * 1000 + p * 10 + round);
      auto rr = w.endpoints[p]->PostRecv(in[p].data(), recv_size, round);
      auto ss = w.endpoints[p]->PostSend(out[p].data(), size, round);
      ASSERT_TRUE(rr.ok() && ss.ok());
      reqs.push_back(*rr);
      reqs.push_back(*ss);
    }
    for (auto& q : reqs) {
      if (!q->Wait(Soon()).ok()) failures++;
    }
    for (int p = 0; p < n; ++p) {
      if (p != r && in[p] != Pattern(in[p].size(), p * 1000 + r * 10 + round)) failures++;
    }
  }
  EXPECT_EQ(failures, 0);
  Barrier();
}

// A communicator from the environment: mpirun's variables and no store, so weft bootstraps
// through MPI; every collective then runs over the mpi transport.
TEST(MpiCommunicator, BootstrapsThroughMpiAndRunsCollectivesOverMpi) {
  collectives::CommOptions o;
  o.transports = {"mpi"};
  auto made = collectives::Communicator::FromEnvironment(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  auto& c = **made;
  const int n = c.world_size(), r = c.rank();
  EXPECT_EQ(n, Size());
  EXPECT_EQ(r, Rank());
  for (int p = 0; p < n; ++p) EXPECT_EQ(c.transport_of(p), p == r ? "self" : "mpi");
  for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{1001}, int64_t{300000}}) {
    std::vector<float> x(count), y(count);
    for (int64_t i = 0; i < count; ++i)
      x[i] = static_cast<float>(r + 1) + static_cast<float>(i % 7);
    auto w = c.AllReduce(x.data(), y.data(), count, DType::kFloat32, ReduceOp::kSum);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Wait().ok()) << w->status().ToString();
    for (int64_t i = 0; i < count; ++i) {
      float want = static_cast<float>(n * (n + 1) / 2) + static_cast<float>(n * (i % 7));
      ASSERT_EQ(y[i], want) << "allreduce count " << count << " index " << i;
    }
    std::vector<int32_t> mine(count, r), all(count * n, -1);
    auto g = c.AllGather(mine.data(), all.data(), count, DType::kInt32);
    ASSERT_TRUE(g.ok() && g->Wait().ok());
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < count; ++i) ASSERT_EQ(all[p * count + i], p);
    }
    std::vector<int64_t> b(count, r == 1 ? 77 : 0);
    auto bw = c.Broadcast(b.data(), b.data(), count, DType::kInt64, 1);
    ASSERT_TRUE(bw.ok() && bw->Wait().ok());
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(b[i], 77);
  }
  auto bar = c.Barrier();
  ASSERT_TRUE(bar.ok() && bar->Wait().ok());
}

}  // namespace
}  // namespace weft::transport

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Started by mpirun: MPI is initialised the way weft's bootstrap does it (and finalised at exit).
  auto level = weft::rendezvous::mpi::EnsureInitialized();
  if (!level.ok()) {
    std::fprintf(stderr, "%s\n", level.status().ToString().c_str());
    return 1;
  }
  if (weft::rendezvous::mpi::WorldSize() < 2) {
    std::fprintf(stderr, "mpi_transport_test needs at least 2 MPI ranks (run it under mpirun)\n");
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
