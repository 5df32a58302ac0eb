// The JobPlanner (job_planner.h) backed by the partition planner (runtime/planner/, weft_planner):
// reads the job's model, describes the scheduler's ready nodes as a planner cluster, and returns
// the plan; tells the placement which ranks to keep together and records what links the placed
// plan's traffic crosses. Sits in weft_scheduler_core; depends on weft_planner and base only.
#pragma once

#include <string>
#include <vector>

#include "base/json.h"
#include "base/status.h"
#include "runtime/planner/cluster_desc.h"
#include "scheduler/job_planner.h"
#include "scheduler/placement.h"

namespace weft::scheduler {

// What the scheduler does not learn from its agents, with defaults sized for the commodity
// machines weft runs on (the CPU figures of clusters/local-4.json, Ethernet between hosts).
// Link classes, innermost first, each as latency α and per-chip bandwidth (β = 1/bandwidth):
//   host   (same host: shared memory)          α 25 µs,  2 GB/s
//   switch (same switch_id: one Ethernet hop)  α 50 µs,  1.25 GB/s (10 GbE)
//   spine  (across switches)                   α 100 µs, 0.5 GB/s
struct PartitionPlannerOptions {
  double chip_flops = 2e10;  // one slot's peak FLOP/s
  double chip_efficiency = 0.5;
  double layer_overhead_us = 40;
  double default_chip_memory_bytes = 4e9;  // when a node reports no memory
  double host_alpha_us = 25, host_bandwidth_GBps = 2;
  double switch_alpha_us = 50, switch_bandwidth_GBps = 1.25;
  double spine_alpha_us = 100, spine_bandwidth_GBps = 0.5;
};

// Describes `nodes` (ready nodes, registration order) as a planner cluster. Nodes sharing a
// host_id are one host (its slots are its chips); hosts are numbered switch by switch (switches
// in order of first registration), matching the placement's rank order. The planner needs the
// same chip count on every host, so each host counts as the fewest chips any host has; the
// switch class spans the largest host count dividing every switch's hosts (dropped when that is
// 1, so cross-host traffic is then costed as spine). InvalidArgument when no node has a slot.
Result<runtime::planner::ClusterDesc> ClusterFromNodes(const std::vector<const Node*>& nodes,
                                                       const PartitionPlannerOptions& options);

// The rank groups a weft-plan/1 plan carries its inner traffic in, as consecutive ranks: a
// stage's replicas (dp, layout dp_inner: rank = stage·dp + replica; their gradient all-reduce) or
// a pipeline's stages (pp, layout pp_inner: rank = replica·pp + stage; its activation transfers).
// 1 for an empty or unreadable plan.
int PlanPlacementGroup(const std::string& plan_json);

// Re-evaluates a weft-plan/1 plan on the nodes its ranks were placed on (`rank_nodes[r]`: rank r's
// node, borrowed): the link class (placement.h LinkBetween) each chunk boundary's transfers cross
// (the slowest over replicas, as the planner costs them) and each stage's all-reduce spans ("none"
// for one replica). Adds them to *plan_json as
//   "placed": {"group_size", "aligned", "note"?, "cut_links", "allreduce_links",
//              "matches_plan", "differences": ["cut 1: placed switch, planned host", ...]}
// (replacing an earlier attempt's) and returns a summary such as "plan traffic as placed: stage
// all-reduces over host (4); pipeline cuts over host (2), switch (1); as planned". A plan it cannot
// read, or a placement of another size, is left alone and gives "".
std::string RecordPlacedLinks(const GangPlacement& placement,
                              const std::vector<const Node*>& rank_nodes, std::string* plan_json);

// Stateless apart from its options: thread-compatible and safe to share across calls. Plan
// returns InvalidArgument naming spec.resources.plan.<field> for a bad model or pin,
// ResourceExhausted when nothing fits in the chips' memory.
class PartitionJobPlanner : public JobPlanner {
 public:
  explicit PartitionJobPlanner(PartitionPlannerOptions options = {}) : options_(options) {}
  Result<PlanOutcome> Plan(const PlanRequest& request, const std::vector<const Node*>& nodes,
                           int max_ranks) override;
  int PlacementGroup(const std::string& plan_json) const override {
    return PlanPlacementGroup(plan_json);
  }
  std::string RecordPlacement(const GangPlacement& placement,
                              const std::vector<const Node*>& rank_nodes,
                              std::string* plan_json) const override {
    return RecordPlacedLinks(placement, rank_nodes, plan_json);
  }

 private:
  PartitionPlannerOptions options_;
};

}  // namespace weft::scheduler
