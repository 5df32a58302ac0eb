// Gang placement: all or nothing, packing by link class, rank order following the topology, rank
// groups (a plan's stage replicas or pipelines) kept whole on one host or else one switch, the
// fallback when they cannot be, and the 1,024-rank / 256-node placement time.
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

// The node of each rank, rank order.
std::vector<std::string> ByRank(const GangPlacement& p) {
  std::vector<std::string> v;
  for (size_t r = 0; r < p.ranks.size(); ++r) {
    EXPECT_EQ(p.ranks[r].rank, static_cast<int>(r));
    v.push_back(p.ranks[r].node_id);
  }
  return v;
}

// For each run of `group` consecutive ranks, the set of `key`s (host or switch) it lands on.
std::vector<std::set<std::string>> GroupSpans(const Cluster& c, const GangPlacement& p, int group,
                                              bool by_switch) {
  std::map<std::string, const Node*> node;
  for (const auto& n : c.nodes) node[n->node_id] = n.get();
  std::vector<std::set<std::string>> spans(p.ranks.size() / group);
  for (const auto& r : p.ranks) {
    const Node* n = node.at(r.node_id);
    spans[r.rank / group].insert(by_switch ? n->switch_id : n->host_id);
  }
  return spans;
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

// The case: dp_inner with 2 replicas per stage on hosts with 3, 3, 2 and 2 free slots.
// Packing ranks contiguously would put ranks 2 and 3 (one stage's replicas) on two hosts; counted
// in whole groups, every host takes one stage.
TEST(PlacementTest, GroupsStayWholeOnOneHost) {
  Cluster c;
  c.Add("a", "s", 3);
  c.Add("b", "s", 3);
  c.Add("c", "s", 2);
  c.Add("d", "s", 2);
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({8, 0, 2}, c.Free(), &p, &why)) << why;
  EXPECT_TRUE(p.aligned) << p.note;
  EXPECT_EQ(ByRank(p), (std::vector<std::string>{"a", "a", "b", "b", "c", "c", "d", "d"}));
  for (const auto& span : GroupSpans(c, p, 2, false)) EXPECT_EQ(span.size(), 1u);
  EXPECT_EQ(p.hosts_used, 4);
  // Whole groups also across the nodes of one host: two 1-slot nodes of hostA hold one group.
  Cluster m;
  m.Add("m1", "s", 1, "hostA");
  m.Add("m2", "s", 3, "hostB");
  m.Add("m3", "s", 1, "hostA");
  ASSERT_TRUE(PlaceGang({4, 0, 2}, m.Free(), &p, &why)) << why;
  EXPECT_TRUE(p.aligned) << p.note;
  for (const auto& span : GroupSpans(m, p, 2, false)) EXPECT_EQ(span.size(), 1u);
  EXPECT_EQ(PerNode(p), (std::map<std::string, int>{{"m1", 1}, {"m2", 2}, {"m3", 1}}));
}

// Without enough whole-group room on single hosts the groups stay within one switch; without
// that either, the ranks are packed as if ungrouped and the placement says so.
TEST(PlacementTest, GroupsFallBackToOneSwitchThenToUnaligned) {
  Cluster c;
  c.Add("a", "s1", 3);
  c.Add("b", "s1", 3);
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({6, 0, 2}, c.Free(), &p, &why)) << why;
  EXPECT_FALSE(p.aligned);
  EXPECT_NE(p.note.find("only 2 of 3 groups of 2 ranks fit whole on single hosts"),
            std::string::npos)
      << p.note;
  EXPECT_NE(p.note.find("within one switch"), std::string::npos) << p.note;
  EXPECT_EQ(p.ranks.size(), 6u);

  Cluster x;
  x.Add("a", "s1", 3);
  x.Add("b", "s2", 3);
  ASSERT_TRUE(PlaceGang({6, 0, 2}, x.Free(), &p, &why)) << why;
  EXPECT_FALSE(p.aligned);
  EXPECT_NE(p.note.find("placed without keeping groups whole"), std::string::npos) << p.note;
  EXPECT_EQ(PerNode(p), (std::map<std::string, int>{{"a", 3}, {"b", 3}}));
  // All or nothing still: groups never make a gang that fits fail.
  EXPECT_FALSE(PlaceGang({8, 0, 2}, x.Free(), &p, &why));
  EXPECT_TRUE(p.ranks.empty());
}

// A group larger than any host spans consecutive hosts of one switch before the next group
// starts on another switch: no group's traffic crosses the spine.
TEST(PlacementTest, GroupLargerThanAHostStaysInOneSwitch) {
  Cluster c;
  for (int s = 1; s <= 2; ++s) {
    for (int h = 1; h <= 3; ++h) {
      c.Add("s" + std::to_string(s) + "h" + std::to_string(h), "s" + std::to_string(s), 2);
    }
  }
  GangPlacement p;
  std::string why;
  ASSERT_TRUE(PlaceGang({8, 0, 4}, c.Free(), &p, &why)) << why;
  EXPECT_TRUE(p.aligned) << p.note;
  EXPECT_NE(p.note.find("exceed every host"), std::string::npos) << p.note;
  for (const auto& span : GroupSpans(c, p, 4, true)) EXPECT_EQ(span.size(), 1u);
  EXPECT_EQ(ByRank(p), (std::vector<std::string>{"s1h1", "s1h1", "s1h2", "s1h2", "s2h1", "s2h1",
                                                 "s2h2", "s2h2"}));
  EXPECT_EQ(p.switches_used, 2);
  // Groups and ranks_per_node together: groups of 3 on nodes taking exactly 2 ranks each are
  // placed in runs of 6 ranks (3 whole nodes) within a switch, never a partial node.
  Cluster r;
  r.Add("r1", "s", 4, "hostA");
  r.Add("r2", "s", 4, "hostA");
  r.Add("r3", "s", 4, "hostB");
  r.Add("r4", "s", 4, "hostB");
  ASSERT_TRUE(PlaceGang({6, 2, 3}, r.Free(), &p, &why)) << why;
  for (auto [node, n] : PerNode(p)) EXPECT_EQ(n, 2) << node;
  EXPECT_EQ(p.ranks.size(), 6u);
}

// Ties go to registration order, never the name, and the result is the same every time. Plain
// packing would split a group here (3 ranks on z, the 4th on y).
TEST(PlacementTest, GroupedPlacementFollowsRegistrationOrder) {
  Cluster c;
  c.Add("z", "s", 3);
  c.Add("y", "s", 2);
  c.Add("x", "s", 3);
  c.Add("w", "s", 2);
  GangPlacement first, again;
  std::string why;
  ASSERT_TRUE(PlaceGang({4, 0, 2}, c.Free(), &first, &why)) << why;
  EXPECT_EQ(ByRank(first), (std::vector<std::string>{"z", "z", "y", "y"}));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(PlaceGang({4, 0, 2}, c.Free(), &again, &why)) << why;
    EXPECT_EQ(ByRank(again), ByRank(first));
  }
}

TEST(PlacementTest, LinkClassesBetweenNodes) {
  Cluster c;
  Node& a = c.Add("a", "s1", 1, "h1");
  Node& b = c.Add("b", "s1", 1, "h1");
  Node& d = c.Add("d", "s1", 1, "h2");
  Node& e = c.Add("e", "s2", 1, "h1");
  EXPECT_EQ(LinkBetween(a, a), LinkClass::kHost);
  EXPECT_EQ(LinkBetween(a, b), LinkClass::kHost);
  EXPECT_EQ(LinkBetween(a, d), LinkClass::kSwitch);
  EXPECT_EQ(LinkBetween(a, e), LinkClass::kSpine);  // same host id on another switch: not merged
  EXPECT_STREQ(LinkClassName(LinkClass::kSwitch), "switch");
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
  // The same gang as 128 groups of 8 (a plan's stage replicas): whole groups only fit the idle
  // nodes, and every group lands on one.
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kIters; ++i) ASSERT_TRUE(PlaceGang({1024, 0, 8}, free, &p, &why)) << why;
  ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
       kIters;
  std::printf("[bench] the same in groups of 8: %.3f ms per placement, %d nodes, %d switches\n", ms,
              p.nodes_used, p.switches_used);
  EXPECT_LT(ms, 100.0);
  EXPECT_TRUE(p.aligned) << p.note;
  for (const auto& span : GroupSpans(c, p, 8, false)) EXPECT_EQ(span.size(), 1u);
}

}  // namespace
}  // namespace weft::scheduler
