// Gang placement: all or nothing, packing by link class, rank order following the topology, and
// the 1,024-rank / 256-node placement time.
#include "scheduler/placement.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

namespace weft::scheduler {
namespace {

struct Cluster {
  std::vector<std::unique_ptr<Node>> nodes;
  Node& Add(const std::string& id, const std::string& sw, int slots, std::string host = "") {
    auto n = std::make_unique<Node>();
    n->node_id = id;
    n->switch_id = sw;
    n->host_id = host.empty() ? id : host;
    n->slots = slots;
    n->register_seq = static_cast<int64_t>(nodes.size()) + 1;
    nodes.push_back(std::move(n));
    return *nodes.back();
  }
  std::vector<NodeSlot> Free() const {
    std::vector<NodeSlot> v;
    for (const auto& n : nodes) {
      int cap = n->slots - n->used_slots;
      if (cap > 0) v.push_back({n.get(), cap});
    }
    return v;
  }
};

std::map<std::string, int> PerNode(const GangPlacement& p) {
  std::map<std::string, int> m;
  for (const auto& r : p.ranks) m[r.node_id]++;
  return m;
}

TEST(PlacementTest, AllOrNothing) {
  Cluster c;
  c.Add("a", "s1", 4);
  c.Add("b", "s1", 4);
  GangPlacement p;
  std::string why;
  EXPECT_FALSE(PlaceGang({9, 0}, c.Free(), &p, &why));
  EXPECT_TRUE(p.ranks.empty());
  EXPECT_NE(why.find("needs 9 ranks; 8 fit"), std::string::npos) << why;
  EXPECT_TRUE(PlaceGang({8, 0}, c.Free(), &p, &why));
  EXPECT_EQ(p.ranks.size(), 8u);
}

TEST(PlacementTest, PrefersOneHostThenOneSwitch) {
  Cluster c;
  c.Add("s1a", "s1", 2);
  c.Add("s1b", "s1", 2);
  c.Add("s2a", "s2", 4);
  c.Add("s2b", "s2", 4);
  c.Add("s3a", "s3", 8);
  GangPlacement p;
  std::string why;
  // 4 ranks: the tightest single node is s2a (4 slots), not two 2-slot nodes, not the 8-slot.
  ASSERT_TRUE(PlaceGang({4, 0}, c.Free(), &p, &why)) << why;
  EXPECT_EQ(PerNode(p), (std::map<std::string, int>{{"s2a", 4}}));
  EXPECT_EQ(p.switches_used, 1);
  // 10 ranks: no switch holds 10... s2 has 8, s3 has 8, s1 has 4: two switches, largest first,
  // remainder best-fit (s1's 4 holds the last 2 rather than splitting another 8).
  ASSERT_TRUE(PlaceGang({10, 0}, c.Free(), &p, &why)) << why;
  EXPECT_EQ(p.switches_used, 2);
  EXPECT_EQ(p.ranks.size(), 10u);
  // 6 ranks: one host (s3a, 8 slots) holds it all; same host beats same switch.
  ASSERT_TRUE(PlaceGang({6, 0}, c.Free(), &p, &why)) << why;
  EXPECT_EQ(PerNode(p), (std::map<std::string, int>{{"s3a", 6}}));
  EXPECT_EQ(p.hosts_used, 1);
}

TEST(PlacementTest, RankOrderFollowsTopologyNotNames) {
  Cluster c;
  // Names sort opposite to registration and switch grouping.
  c.Add("z-node", "sw-b", 2);
  c.Add("a-node", "sw-a", 2);
  c.Add("m-node", "sw-b", 2);
  c.Add("b-node", "sw-a", 2);
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({8, 0}, c.Free(), &p, &why)) << why;
  // Ranks are contiguous per node and per switch: the two nodes of one switch hold ranks 0-3.
  std::vector<std::string> by_rank;
  for (const auto& r : p.ranks) by_rank.push_back(r.node_id);
  std::set<std::string> first_half(by_rank.begin(), by_rank.begin() + 4);
  EXPECT_TRUE(first_half == std::set<std::string>({"z-node", "m-node"}) ||
              first_half == std::set<std::string>({"a-node", "b-node"}))
      << by_rank[0] << by_rank[2];
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(p.ranks[r].rank, r);
    EXPECT_EQ(p.ranks[r].local_rank, r % 2);
  }
  // Registration order breaks the tie, not the name: sw-b registered first.
  EXPECT_EQ(by_rank[0], "z-node");
}

TEST(PlacementTest, SameHostNodesStayTogether) {
  Cluster c;
  c.Add("n1", "s", 2, "hostA");
  c.Add("n2", "s", 2, "hostB");
  c.Add("n3", "s", 2, "hostA");
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({4, 0}, c.Free(), &p, &why)) << why;
  EXPECT_EQ(PerNode(p), (std::map<std::string, int>{{"n1", 2}, {"n3", 2}}));
  EXPECT_EQ(p.hosts_used, 1);
}

TEST(PlacementTest, RanksPerNode) {
  Cluster c;
  c.Add("a", "s", 4);
  c.Add("b", "s", 1);
  c.Add("c", "s", 2);
  c.Add("d", "s", 3);
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({6, 2}, c.Free(), &p, &why)) << why;
  for (auto [node, n] : PerNode(p)) EXPECT_EQ(n, 2) << node;
  EXPECT_EQ(PerNode(p).count("b"), 0u);
  EXPECT_FALSE(PlaceGang({8, 2}, c.Free(), &p, &why));
  EXPECT_NE(why.find("2 per node"), std::string::npos) << why;
}

TEST(PlacementTest, MemoryLimitsRanksPerNode) {
  EXPECT_EQ(RanksThatFit(8, 10, 4), 2);
  EXPECT_EQ(RanksThatFit(8, 100, 0), 8);
  EXPECT_EQ(RanksThatFit(0, 100, 1), 0);
  EXPECT_EQ(RanksThatFit(3, 100, 1), 3);
}

// 1,024 ranks on a 256-node cluster (8 switches x 32 nodes x 8 slots, partly busy).
TEST(PlacementTest, LargeGangOnSimulatedClusterIsFast) {
  Cluster c;
  for (int s = 0; s < 8; ++s) {
    for (int n = 0; n < 32; ++n) {
      Node& node =
          c.Add("sw" + std::to_string(s) + "-n" + std::to_string(n), "sw" + std::to_string(s), 8);
      node.used_slots = (n % 5 == 0) ? 4 : 0;  // some nodes half busy
    }
  }
  auto free = c.Free();
  GangPlacement p;
  std::string why;
  const int kIters = 20;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kIters; ++i) ASSERT_TRUE(PlaceGang({1024, 0}, free, &p, &why)) << why;
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      kIters;
  std::printf(
      "[bench] placement of 1024 ranks on 256 nodes (8 switches): %.3f ms per placement, "
      "%d nodes, %d switches\n",
      ms, p.nodes_used, p.switches_used);
  EXPECT_LT(ms, 100.0);
  EXPECT_EQ(p.ranks.size(), 1024u);
  // Packing: full nodes first, so at most 5 switches (each switch has 32*8 - 7*4 = 228 free).
  EXPECT_LE(p.switches_used, 5);
  std::set<std::pair<std::string, int>> seen;
  for (const auto& r : p.ranks) EXPECT_TRUE(seen.insert({r.node_id, r.local_rank}).second);
}

}  // namespace
}  // namespace weft::scheduler
