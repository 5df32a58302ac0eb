// Gang placement: chooses nodes for all of a job's ranks at once (or none), packed by link class
// (same host first, then same switch), and numbers the ranks so that neighbours in rank order are
// neighbours in the topology. Pure functions over a snapshot; the core (scheduler_core.h) calls
// them under its lock. Never sorts by hostname: ties go to registration order.
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
};

struct GangPlacement {
  std::vector<RankPlacement> ranks;  // rank order
  int nodes_used = 0;
  int hosts_used = 0;
  int switches_used = 0;
};

// How many ranks of a job needing `memory_per_rank` bytes each fit in `free_slots` slots and
// `free_memory` bytes (memory 0: no memory limit on either side).
int RanksThatFit(int free_slots, int64_t free_memory, int64_t memory_per_rank);

// Places the whole gang or returns false with `why` saying what is short. Packing: the tightest
// single host (nodes sharing host_id) that holds the gang; else the tightest single switch; else
// the fewest switches (largest first, the last a best fit); inside a switch the same rule over
// hosts, then over nodes. Ranks are numbered
// switch by switch, host by host, node by node, contiguous within a node. O(n log n) in nodes.
bool PlaceGang(const GangRequest& request, const std::vector<NodeSlot>& candidates,
               GangPlacement* out, std::string* why);

}  // namespace weft::scheduler
