// The interconnect-aware partition planner: given a model (model_desc.h) and a cluster
// (cluster_desc.h), chooses pipeline depth, data-parallel width, rank layout, stage boundaries,
// micro-batch count and pipeline schedule minimising the predicted step time, and writes the
// choice as a plan (JSON) that the trainer runs. Part of weft_planner (depends only on weft_base).
//
// Cost model, for one configuration (pp = p stages, dp = d replicas, m micro-batches of
// b = global_batch/(d·m) samples, v model chunks per stage, C = p·v chunks, chunk c on stage
// c % p):
//   comp_c = b·(fwd+bwd flops of its layers) / effective chip flops
//   tc_c   = α + b·(activation bytes after its last layer)·β  over the link class that joins the
//            chips of stage c%p and stage (c+1)%p (the slowest over replicas); 0 for the last chunk
//   bneck_c = max(comp_c, 2·tc_c)   (a stage computes while its link carries the last transfer)
//   x_c    = max(0, allreduce_c − b·bwd flops_c / flops)  the data-parallel all-reduce of the
//            chunk's gradients (hierarchical ring over its replicas' chips, cluster_desc.h) that
//            the bucketed overlap with its last backward does not hide
//   step   = Σ_c a_c + K·max_c bneck_c + max_c x_c
//            with a_c = comp_c + 2·tc_c, K = m−1        for GPipe and 1F1B (fill + steady state)
//            and  a_c = 2·tc_c,          K = m·v+p−1    for interleaved 1F1B (bubble (p−1)/(v·m)).
//   Memory per chip: params·(1 + state bytes per param byte) + in-flight·b·stash ≤ chip memory
//   (in-flight micro-batches: m for GPipe, min(m, p−s) for 1F1B; interleaved: per chunk, a 1/v
//   share of the chip).
// Search: every configuration in the space (CandidateConfigs) is ordered by a lower bound and
// solved exactly: for each candidate value τ of max bneck and ξ of max x (ascending, pruned by
// bound), a dynamic program over contiguous layer ranges minimises Σ a_c subject to bneck_c ≤ τ,
// x_c ≤ ξ and the memory limit. The result is the exact optimum of the cost model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/status.h"
#include "runtime/planner/cluster_desc.h"
#include "runtime/planner/model_desc.h"

namespace weft::runtime::planner {

enum class ScheduleKind { kGPipe, kOneFOneB, kInterleaved };
// Where the replicas of a stage sit: on consecutive chips (the all-reduce stays on the inner,
// fast links and pipeline cuts cross the outer ones), or the stages of a pipeline do.
enum class Layout { kDataParallelInner, kPipelineInner };

const char* ScheduleName(ScheduleKind s);  // "gpipe", "1f1b", "interleaved"
Result<ScheduleKind> ParseScheduleName(const std::string& s);
const char* LayoutName(Layout l);  // "dp_inner", "pp_inner"

struct PlanConfig {
  int pp = 1;
  int dp = 1;
  Layout layout = Layout::kDataParallelInner;
  ScheduleKind schedule = ScheduleKind::kOneFOneB;
  int virtual_stages = 1;  // v; > 1 only for interleaved
  int micro_batches = 1;
  int chunks() const { return pp * virtual_stages; }
};

struct PlanCost {
  double step_s = 0;
  double fill_s = 0;               // pipeline fill and drain (the bubble) including transfers
  double steady_s = 0;             // m·v micro-batch slots of the slowest stage
  double allreduce_exposed_s = 0;  // data-parallel all-reduce not hidden by the backward pass
  double transfer_s = 0;           // one micro-batch's activation + gradient transfers, all cuts
  double max_stage_s = 0;          // slowest chunk, one micro-batch forward + backward
  double max_memory_bytes = 0;     // per chip
  double bubble_fraction = 0;      // idle share of the step on the slowest stage
};

// A plan: a configuration, the layer ranges of its chunks, and its predicted cost. Chip (and, in
// the trainer, rank) of stage s, replica r: s·dp + r (dp_inner) or r·pp + s (pp_inner).
struct Plan {
  std::string model;
  std::string cluster;
  PlanConfig config;
  int64_t global_batch = 0;
  int64_t micro_batch_size = 0;
  std::vector<int> boundaries;  // chunks()+1 layer indices; chunk c = [boundaries[c], [c+1])
  PlanCost cost;
  std::vector<std::string> cut_links;        // link class of each chunk boundary (chunks()-1)
  std::vector<std::string> allreduce_links;  // outermost link class of each stage's all-reduce

  int64_t ChipOf(int stage, int replica) const;
  // Inverse of ChipOf for chips in use; false for a chip outside the plan.
  bool StageReplicaOf(int64_t chip, int* stage, int* replica) const;
  int world_size() const { return config.pp * config.dp; }
};

struct PlanOptions {
  int pin_pp = 0;                     // fixed pipeline depth (0: search)
  int pin_dp = 0;                     // fixed data-parallel width (0: search)
  std::vector<int> pin_stage_layers;  // fixed layers per stage (implies pp, GPipe/1F1B)
  std::string pin_schedule;           // "", "gpipe", "1f1b", "interleaved"
  int pin_micro_batches = 0;
  int max_chips = 0;     // use at most this many chips (0: the cluster's)
  int exact_chips = 0;   // use exactly this many (pp·dp = n; the trainer's case)
  int alternatives = 5;  // how many runner-up configurations to report
};

struct PlanReport {
  Plan best;
  std::vector<Plan> alternatives;  // best plan of other (pp, dp, layout, schedule), by step time
  int64_t configs_total = 0;       // configurations in the search space
  int64_t configs_solved = 0;      // configurations not pruned by their lower bound
  double search_ms = 0;
};

// The search space: every configuration the planner considers (honouring the pins), without
// stage boundaries. Exposed for tests that search it exhaustively.
Result<std::vector<PlanConfig>> CandidateConfigs(const ModelDesc& model, const ClusterDesc& cluster,
                                                 const PlanOptions& options);
// Costs one configuration with given chunk boundaries. ResourceExhausted when a chip's memory
// is exceeded; InvalidArgument for boundaries that do not cut the model into chunks() non-empty
// contiguous ranges.
Result<Plan> EvaluatePlan(const ModelDesc& model, const ClusterDesc& cluster,
                          const PlanConfig& config, const std::vector<int>& boundaries);
// Finds the plan with the least predicted step time. InvalidArgument for bad pins,
// ResourceExhausted when nothing fits in memory.
Result<PlanReport> MakePlan(const ModelDesc& model, const ClusterDesc& cluster,
                            const PlanOptions& options);

Json PlanToJson(const Plan& plan);
Result<Plan> PlanFromJson(const Json& json);
// Human-readable: the plan, why (links of cuts and all-reduces), and the alternatives.
std::string ExplainPlan(const PlanReport& report);

// `weft plan --model M --cluster C [--pin-stages a,b,..|--pp N|--dp N] [--schedule S]
//  [--micro-batches M] [--json] [--out FILE]`; returns the exit code.
int PlanCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime::planner
