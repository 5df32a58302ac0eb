// Several hosts on one machine: 3 network namespaces joined by veth links and a bridge
// (netns_lab.h), 2 ranks of `weft` in each, started by hand with torchrun-style variables (rank 0
// serves the store at its namespace address). Checks host detection (a namespace is a host: the
// host identity includes the network namespace), the transport of every pair (shm inside a
// namespace, which shares IPC and /dev/shm with its sibling rank exactly as two processes on one
// host do; tcp across), every collective across the hosts, and a link pulled mid-collective.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "base/deadline.h"
#include "base/json.h"
#include "tests/netns/netns_lab.h"

namespace weft::testing {
namespace {

constexpr int kHosts = 3;
constexpr int kRanksPerHost = 2;
constexpr int kWorld = kHosts * kRanksPerHost;

std::unique_ptr<NetnsLab> MakeLab() {
  auto lab = NetnsLab::Create(kHosts);
  if (!lab.ok()) {
    ADD_FAILURE() << "cannot build the multi-host lab: " << lab.status().ToString();
    return nullptr;
  }
  return std::move(*lab);
}

// Ranks 2 * host + local on the 3 hosts, running `weft args...` (the suite checks shm inside a
// host and tcp across; the ucx cases set their own WEFT_TRANSPORT).
std::vector<BackgroundProcess> StartRanks(const NetnsLab& lab, const std::vector<std::string>& args,
                                          const std::map<std::string, std::string>& env = {}) {
  return StartWeftRanks(lab, kRanksPerHost, args, env);
}

// Waits for every rank (bounded) and returns their outputs; failures name the rank.
std::vector<std::string> WaitRanks(std::vector<BackgroundProcess>& ranks, int timeout_ms,
                                   const std::string& what) {
  RanksOutcome o = WaitForRanks(ranks, timeout_ms);
  for (size_t r = 0; r < ranks.size(); ++r) {
    const bool exited = o.code[r] != -1;
    EXPECT_TRUE(exited) << what << ": rank " << r << " still running after " << timeout_ms
                        << " ms\n"
                        << o.out[r];
    if (exited) {
      EXPECT_EQ(o.code[r], 0) << what << ": rank " << r << "\n" << o.out[r];
    }
  }
  return o.out;
}

TEST(Netns, HostsAndTransportsAcrossNamespaces) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  auto ranks =
      StartRanks(*lab, {"topo", "--json", "--probe", "--probe-iters", "40", "--probe-bytes", "1M"});
  auto out = WaitRanks(ranks, 60000, "weft topo");
  size_t start = out[0].find('{');
  ASSERT_NE(start, std::string::npos) << out[0];
  auto j = ParseJson(out[0].substr(start));
  ASSERT_TRUE(j.ok()) << j.status().ToString() << "\n" << out[0];
  std::printf("%s\n", out[0].c_str());

  const Json* hosts = j->Find("hosts");
  ASSERT_TRUE(hosts && hosts->is_array());
  ASSERT_EQ(hosts->as_array().size(), static_cast<size_t>(kHosts)) << out[0];
  for (int h = 0; h < kHosts; ++h) {
    const Json* rs = hosts->as_array()[h].Find("ranks");
    ASSERT_TRUE(rs && rs->as_array().size() == kRanksPerHost) << out[0];
    for (int l = 0; l < kRanksPerHost; ++l) {
      EXPECT_EQ(rs->as_array()[l].as_number(), h * kRanksPerHost + l);
    }
  }
  const Json* rk = j->Find("ranks");
  ASSERT_TRUE(rk && rk->as_array().size() == static_cast<size_t>(kWorld));
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(rk->as_array()[r].NumberOr("host", -1), r / kRanksPerHost);
    EXPECT_EQ(rk->as_array()[r].NumberOr("local_rank", -1), r % kRanksPerHost);
    EXPECT_EQ(rk->as_array()[r].NumberOr("local_size", -1), kRanksPerHost);
  }
  const Json* t = j->Find("transports");
  ASSERT_TRUE(t && t->as_array().size() == static_cast<size_t>(kWorld));
  for (int a = 0; a < kWorld; ++a) {
    for (int b = 0; b < kWorld; ++b) {
      std::string want = a == b ? "self" : (a / kRanksPerHost == b / kRanksPerHost ? "shm" : "tcp");
      EXPECT_EQ(t->as_array()[a].as_array()[b].as_string(), want) << "pair " << a << "-" << b;
    }
  }
  const Json* links = j->Find("links");
  ASSERT_TRUE(links && links->is_array());
  std::map<std::string, const Json*> by_class;
  for (const auto& l : links->as_array()) by_class[l.StringOr("class", "")] = &l;
  ASSERT_EQ(by_class.size(), 2u) << out[0];
  for (const char* c : {"same_host/shm", "cross_host/tcp"}) {
    ASSERT_TRUE(by_class.count(c)) << c << "\n" << out[0];
    EXPECT_GT(by_class[c]->NumberOr("alpha_us", 0), 0) << c;
    EXPECT_GT(by_class[c]->NumberOr("bandwidth_gbps", 0), 0) << c;
  }
  EXPECT_EQ(by_class["cross_host/tcp"]->NumberOr("rank_a", -1), 0);
  EXPECT_EQ(by_class["cross_host/tcp"]->NumberOr("rank_b", -1), 2);
}

TEST(Netns, EveryCollectiveAcrossHosts) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  struct Case {
    const char* coll;
    const char* algo;  // WEFT_ALGO, "" for the tuner's choice
  };
  for (const Case& c :
       {Case{"allreduce", ""}, Case{"allreduce", "ring"}, Case{"reduce", ""}, Case{"broadcast", ""},
        Case{"allgather", ""}, Case{"reducescatter", ""}, Case{"alltoall", ""}, Case{"gather", ""},
        Case{"scatter", ""}, Case{"sendrecv", ""}, Case{"barrier", ""}}) {
    std::string what = std::string(c.coll) + (*c.algo ? std::string(" WEFT_ALGO=") + c.algo : "");
    std::map<std::string, std::string> env;
    if (*c.algo) env["WEFT_ALGO"] = c.algo;
    auto ranks = StartRanks(*lab,
                            {"bench", c.coll, "-b", "8", "-e", "1M", "-f", "32", "-n", "2", "-w",
                             "1", "-c", "1", "-d", "int32"},
                            env);
    auto out = WaitRanks(ranks, 60000, what);
    EXPECT_NE(out[0].find("6 ranks, transport shm,tcp"), std::string::npos) << what << "\n"
                                                                            << out[0];
    EXPECT_NE(out[0].find("# Out of bounds values : 0 OK"), std::string::npos) << what << "\n"
                                                                               << out[0];
  }
}

#ifdef WEFT_TEST_UCX
// UCX across hosts, as on a cluster (there over InfiniBand or RoCE, here UCX's tcp transport over
// the veth links, UCX_NET_DEVICES naming the hosts' interface): shared memory inside a host, ucx
// across, every pair on the transport it should be, and the collectives correct.
TEST(Netns, UcxAcrossHosts) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  const std::map<std::string, std::string> env = {
      {"WEFT_TRANSPORT", "shm,ucx"}, {"UCX_TLS", "tcp,self"}, {"UCX_NET_DEVICES", "weft0"}};
  for (const char* coll : {"allreduce", "broadcast", "allgather", "reducescatter"}) {
    auto ranks = StartRanks(*lab,
                            {"bench", coll, "-b", "8", "-e", "4M", "-f", "64", "-n", "2", "-w",
                             "1", "-c", "1", "-d", "int32", "--explain"},
                            env);
    auto out = WaitRanks(ranks, 90000, std::string("ucx ") + coll);
    // Rank 0 (host 0) reaches rank 1 over shared memory and the other hosts' ranks over ucx.
    EXPECT_NE(out[0].find("1:shm, 2:ucx, 3:ucx, 4:ucx, 5:ucx"), std::string::npos) << coll << "\n"
                                                                                  << out[0];
    EXPECT_NE(out[0].find("# Out of bounds values : 0 OK"), std::string::npos) << coll << "\n"
                                                                               << out[0];
  }
}
#endif

// 4 MiB runs the hierarchical all-reduce in one piece; 16 MiB runs it pipelined (from twice
// WEFT_HIER_SEGMENT_BYTES, 4M), with the cross-host phase on a helper thread; with ucx, UCX
// carries the cross-host traffic.
struct LinkDownCase {
  std::string size;
  bool ucx = false;
};

class NetnsLinkDown : public ::testing::TestWithParam<LinkDownCase> {};

TEST_P(NetnsLinkDown, MidCollectiveFailsEveryRankInBoundedTime) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  constexpr int kTimeoutMs = 4000;
  const std::string size = GetParam().size;
  std::map<std::string, std::string> env = {{"WEFT_TIMEOUT_MS", std::to_string(kTimeoutMs)}};
  if (GetParam().ucx) {
    env["WEFT_TRANSPORT"] = "shm,ucx";
    env["UCX_TLS"] = "tcp,self";
    env["UCX_NET_DEVICES"] = "weft0";
  }
  auto ranks = StartRanks(
      *lab, {"bench", "allreduce", "-b", size, "-e", size, "-n", "1000000", "-w", "0", "-c", "0"},
      env);
  // Rank 0 prints the header once the communicator is up and the loop starts.
  Deadline up = Deadline::AfterMs(30000);
  while (ranks[0].Output().find("# weft bench allreduce") == std::string::npos) {
    ASSERT_FALSE(up.Expired()) << "the job did not start:\n" << ranks[0].Output();
    ASSERT_FALSE(ranks[0].WaitExit(0)) << "rank 0 exited early:\n" << ranks[0].Output();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto cut = Clock::now();
  ASSERT_TRUE(lab->SetLink(2, false).ok());  // host 2 (ranks 4, 5) loses the others
  // Every rank fails by itself: no launcher stops them. Bound: two operation timeouts + slack.
  const int bound_ms = 2 * kTimeoutMs + 8000;
  for (int r = 0; r < kWorld; ++r) {
    int left =
        bound_ms -
        static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - cut).count());
    bool exited = ranks[r].WaitExit(std::max(left, 1));
    std::string out = ranks[r].Output();
    if (!exited) {
      // Seen once in many runs (rank 4, on the cut-off host, 2026-11-28): keep what it was doing.
      std::string others;
      for (int o = r + 1; o < kWorld; ++o) {
        others += "rank " + std::to_string(o) +
                  (ranks[o].WaitExit(0) ? " exited " + std::to_string(ranks[o].exit_code())
                                        : " still running") +
                  ":\n" + ranks[o].Output() + "\n";
      }
      FAIL() << "rank " << r << " hangs " << bound_ms << " ms after the link went down:\n"
             << out << "\n"
             << StackDump(ranks[r].pid()) << "\n"
             << others;
    }
    EXPECT_NE(ranks[r].exit_code(), 0) << "rank " << r << "\n" << out;
    EXPECT_NE(out.find("weft bench: "), std::string::npos) << "rank " << r << "\n" << out;
    bool names_failure = out.find("DEADLINE_EXCEEDED") != std::string::npos ||
                         out.find("UNAVAILABLE") != std::string::npos;
    EXPECT_TRUE(names_failure) << "rank " << r << "\n" << out;
    EXPECT_NE(out.find("rank "), std::string::npos) << "rank " << r << "\n" << out;
    std::printf(
        "rank %d: exit %d after %.1f s: %s", r, ranks[r].exit_code(),
        std::chrono::duration<double>(Clock::now() - cut).count(),
        out.substr(out.rfind("weft bench: ") == std::string::npos ? 0 : out.rfind("weft bench: "))
            .c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, NetnsLinkDown,
                         ::testing::Values(LinkDownCase{"4M"}, LinkDownCase{"16M"}
#ifdef WEFT_TEST_UCX
                                           ,
                                           LinkDownCase{"4M", true}
#endif
                                           ),
                         [](const auto& info) {
                           return "allreduce_" + info.param.size + (info.param.ucx ? "_ucx" : "");
                         });

}  // namespace
}  // namespace weft::testing
