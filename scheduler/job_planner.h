// The scheduler's planning seam: how a job that asks for a plan (a model, not a rank count) gets
// its world size and partition plan, which of its ranks the placement keeps together, and what
// the placement gives the plan's traffic. The core calls a JobPlanner when one is set; the
// partition planner (runtime/planner/, library weft_planner, JSON plans) plugs in through the
// adapter in partition_job_planner.h. Without a planner set, plan requests are Unimplemented and
// jobs must give resources.ranks.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "scheduler/job_types.h"
#include "scheduler/placement.h"

namespace weft::scheduler {

struct PlanOutcome {
  int world_size = 0;     // ranks the plan uses (>= 1)
  std::string plan_json;  // the plan as the trainer and simulator read it
  std::string note;       // one line for humans ("4 stages x 2 replicas, est. 41 ms/step")
};

// Chooses a plan for `request` using at most `max_ranks` ranks on `nodes` (the ready nodes, in
// registration order; borrowed for the call). Called under the core's lock, so it must be quick
// and must not call back into the core. Thread-compatible. Returns InvalidArgument naming the bad
// field of the request ("spec.resources.plan.model_json: ..."), or ResourceExhausted when no plan
// fits.
class JobPlanner {
 public:
  virtual ~JobPlanner() = default;
  virtual Result<PlanOutcome> Plan(const PlanRequest& request,
                                   const std::vector<const Node*>& nodes, int max_ranks) = 0;
  // The size of the rank groups `plan_json` (a plan this planner returned) wants kept whole on one
  // host (GangRequest::group); 1 for none. Called under the core's lock on each scheduling pass.
  virtual int PlacementGroup(const std::string& plan_json) const { return 1; }
  // Once `plan_json`'s ranks are placed (`rank_nodes[r]`: the node of rank r, borrowed for the
  // call), records in it the link class each of the plan's transfers actually crosses and returns
  // a one-line summary for the job's events ("" when there is nothing to say).
  virtual std::string RecordPlacement(const GangPlacement& placement,
                                      const std::vector<const Node*>& rank_nodes,
                                      std::string* plan_json) const {
    return "";
  }
};

}  // namespace weft::scheduler
