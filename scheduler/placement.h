// Gang placement: chooses nodes for all of a job's ranks at once (or none), packed by link class
// (same host first, then same switch), keeping a plan's heavy-traffic rank groups whole on one
// host, and numbers the ranks so that neighbours in rank order are neighbours in the topology.
// Pure functions over a snapshot; the core (scheduler_core.h) calls them under its lock. Never
// sorts by hostname: ties go to registration order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/job_types.h"

namespace weft::scheduler {

// One candidate node with how many of this job's ranks it can take now.
struct NodeSlot {
  const Node* node = nullptr;  // borrowed; must outlive the call
  int capacity = 0;            // ranks of this job that fit (slots and memory)
};

struct GangRequest {
  int ranks = 0;
  int ranks_per_node = 0;  // 0: any
  // Ranks [k·group, (k+1)·group) carry the job's heaviest traffic (a plan's stage replicas for
  // dp_inner, its pipelines for pp_inner; see PlanPlacementGroup in partition_job_planner.h):
  // each group goes whole on one host when a host can take it, else whole within one switch.
  // 1: no groups. Must divide `ranks`.
  int group = 1;
};

struct GangPlacement {
  std::vector<RankPlacement> ranks;  // rank order
  int nodes_used = 0;
  int hosts_used = 0;
  int switches_used = 0;
  // False when groups were asked for but could not all be kept whole (on one host each, or within
  // one switch each when they are larger than every host's free slots); `note` then says why and
  // how the ranks were packed instead.
  bool aligned = true;
  std::string note;
};

// The link class joining two nodes, innermost first: the same host (same host_id, or the same node
// when it has none), the same switch_id, or across switches (the spine). Names match the link
// classes ClusterFromNodes (partition_job_planner.h) gives the planner.
enum class LinkClass : int { kHost = 0, kSwitch = 1, kSpine = 2 };
const char* LinkClassName(LinkClass c);  // "host", "switch", "spine"
LinkClass LinkBetween(const Node& a, const Node& b);

// How many ranks of a job needing `memory_per_rank` bytes each fit in `free_slots` slots and
// `free_memory` bytes (memory 0: no memory limit on either side).
int RanksThatFit(int free_slots, int64_t free_memory, int64_t memory_per_rank);

// Places the whole gang or returns false with `why` saying what is short. Packing: the tightest
// single host (nodes sharing host_id) that holds the gang; else the tightest single switch; else
// the fewest switches (largest first, the last a best fit); inside a switch the same rule over
// hosts, then over nodes. Ranks are numbered switch by switch, host by host, node by node,
// contiguous within a node. With request.group > 1 the same packing runs over whole groups:
// first with each host's capacity counted in whole groups (every group on one host), then, if
// that falls short, with each switch's (every group within one switch; groups then span
// consecutive hosts), and only then over single ranks as without groups (aligned = false). A
// group is always a run of consecutive ranks. O(n log n) in nodes.
bool PlaceGang(const GangRequest& request, const std::vector<NodeSlot>& candidates,
               GangPlacement* out, std::string* why);

}  // namespace weft::scheduler
