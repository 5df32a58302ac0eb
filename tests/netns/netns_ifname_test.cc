// Interface choice across hosts: 2 network-namespace hosts (netns_lab.h), 2 ranks of `weft bench`
// in each (shm inside a host, tcp across), and on every host a second interface, dead0, whose
// address no other host reaches (a SYN to it goes unanswered). Ranks publish every address that
// WEFT_SOCKET_IFNAME selects, in its order; dialers try them in turn and keep the first that
// connects. Checks that with the dead interface preferred the job still runs (and says it fell
// back), that with only the dead interface every rank fails in bounded time naming the peer and
// the address, and that WEFT_TCP_IFNAME wins over WEFT_SOCKET_IFNAME for the TCP transport.
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/deadline.h"
#include "tests/netns/netns_lab.h"

namespace weft::testing {
namespace {

constexpr int kHosts = 2;
constexpr int kRanksPerHost = 2;
constexpr int kWorld = kHosts * kRanksPerHost;

std::unique_ptr<NetnsLab> MakeLab() {
  auto lab = NetnsLab::Create(kHosts);
  if (!lab.ok()) {
    ADD_FAILURE() << "cannot build the multi-host lab: " << lab.status().ToString();
    return nullptr;
  }
  for (int h = 0; h < kHosts; ++h) {
    Status s = (*lab)->AddDeadInterface(h);
    if (!s.ok()) {
      ADD_FAILURE() << "cannot add the dead interface: " << s.ToString();
      return nullptr;
    }
  }
  return std::move(*lab);
}

// Rank r = kRanksPerHost * host + local runs a small all-reduce; rank 0 serves the store at its
// weft0 address. `env` comes on top.
std::vector<BackgroundProcess> StartRanks(const NetnsLab& lab, int init_timeout_ms,
                                          std::map<std::string, std::string> env) {
  env.emplace("WEFT_INIT_TIMEOUT_MS", std::to_string(init_timeout_ms));
  env.emplace("WEFT_LOG_LEVEL", "info");
  return StartWeftRanks(lab, kRanksPerHost,
                        {"bench", "allreduce", "-b", "8", "-e", "64K", "-f", "64", "-n", "2", "-w",
                         "1", "-c", "1", "-d", "int32"},
                        env);
}

// The tcp peers of rank r: the ranks of the other host.
std::vector<int> RemoteRanks(int r) {
  std::vector<int> out;
  for (int p = 0; p < kWorld; ++p) {
    if (p / kRanksPerHost != r / kRanksPerHost) out.push_back(p);
  }
  return out;
}

TEST(NetnsIfname, UnreachableFirstChoiceFallsBackToOneThatConnects) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  // dead0 comes after weft0 in interface order; the spec puts it first.
  auto ranks = StartRanks(*lab, 30000, {{"WEFT_SOCKET_IFNAME", "dead,weft"}});
  RanksOutcome f = WaitForRanks(ranks, 40000);
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_EQ(f.code[r], 0) << "rank " << r << "\n" << f.out[r];
  }
  EXPECT_NE(f.out[0].find("4 ranks, transport shm,tcp"), std::string::npos) << f.out[0];
  EXPECT_NE(f.out[0].find("# Out of bounds values : 0 OK"), std::string::npos) << f.out[0];
  // Shows the fallback as it happened (rank 0's lines about its tcp peers).
  for (size_t at = 0, end; (end = f.out[0].find('\n', at)) != std::string::npos; at = end + 1) {
    std::string line = f.out[0].substr(at, end - at);
    if (line.find("trying the next address") != std::string::npos ||
        line.find("reached rank") != std::string::npos) {
      std::printf("%s\n", line.c_str());
    }
  }
  // Every rank of host 0 dials both ranks of host 1: the dead address first, then weft0's.
  for (int r = 0; r < kRanksPerHost; ++r) {
    for (int p : RemoteRanks(r)) {
      const std::string peer = "rank " + std::to_string(p);
      const std::string dead = peer + " at " + lab->dead_address(1) + ":";
      const std::string good = "reached " + peer + " at " + lab->host_address(1) + ":";
      size_t failed_at = f.out[r].find(dead);
      EXPECT_NE(failed_at, std::string::npos) << "rank " << r << " never tried " << dead << "\n"
                                              << f.out[r];
      EXPECT_NE(f.out[r].find("failed, trying the next address", failed_at), std::string::npos)
          << f.out[r];
      EXPECT_NE(f.out[r].find(good), std::string::npos) << "rank " << r << "\n" << f.out[r];
    }
  }
}

TEST(NetnsIfname, OnlyUnreachableAddressesFailEveryRankNamingPeerAndAddress) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  constexpr int kInitMs = 6000;
  auto t0 = Clock::now();
  auto ranks = StartRanks(*lab, kInitMs, {{"WEFT_SOCKET_IFNAME", "dead"}});
  // Bound: the init deadline (which Connect() gets) and start-up slack; no rank may hang.
  RanksOutcome f = WaitForRanks(ranks, kInitMs + 12000);
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  for (int r = 0; r < kWorld; ++r) {
    const std::string& out = f.out[r];
    ASSERT_NE(f.code[r], -1) << "rank " << r << " still runs " << took << " s after start\n" << out;
    EXPECT_NE(f.code[r], 0) << "rank " << r << "\n" << out;
    EXPECT_NE(out.find("weft bench: "), std::string::npos) << "rank " << r << "\n" << out;
    EXPECT_NE(out.find("did not connect"), std::string::npos) << "rank " << r << "\n" << out;
    // The dialers (host 0) name the peer's dead address, the others their own.
    EXPECT_NE(out.find(lab->dead_address(1) + ":"), std::string::npos) << "rank " << r << "\n"
                                                                       << out;
    // ConnectFailure's details: "(rank 2: ...; rank 3: ...)", one per peer of the other host.
    for (int p : RemoteRanks(r)) {
      EXPECT_NE(out.find("rank " + std::to_string(p) + ": "), std::string::npos)
          << "rank " << r << " does not name rank " << p << "\n"
          << out;
    }
    std::printf(
        "rank %d: exit %d: %s", r, f.code[r],
        out.substr(out.rfind("weft bench: ") == std::string::npos ? 0 : out.rfind("weft bench: "))
            .c_str());
  }
  std::printf("all ranks failed within %.1f s (init deadline %.1f s)\n", took, kInitMs / 1000.0);
}

TEST(NetnsIfname, TcpIfnameWinsOverSocketIfnameForTheTransport) {
  auto lab = MakeLab();
  ASSERT_TRUE(lab);
  auto ranks =
      StartRanks(*lab, 30000, {{"WEFT_SOCKET_IFNAME", "dead"}, {"WEFT_TCP_IFNAME", "weft"}});
  RanksOutcome f = WaitForRanks(ranks, 40000);
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_EQ(f.code[r], 0) << "rank " << r << "\n" << f.out[r];
    EXPECT_EQ(f.out[r].find(lab->dead_address(1)), std::string::npos)
        << "rank " << r << " saw the dead address\n"
        << f.out[r];
  }
  EXPECT_NE(f.out[0].find("# Out of bounds values : 0 OK"), std::string::npos) << f.out[0];
}

}  // namespace
}  // namespace weft::testing
