// Plans as JSON (the form the trainer, the scheduler and the simulator share) and as text.
#include <cstdio>

#include "runtime/planner/planner.h"

namespace weft::runtime::planner {

namespace {

Json CostJson(const PlanCost& k) {
  Json j = Json::MakeObject();
  j.Set("step_s", k.step_s);
  j.Set("fill_s", k.fill_s);
  j.Set("steady_s", k.steady_s);
  j.Set("allreduce_exposed_s", k.allreduce_exposed_s);
  j.Set("transfer_s", k.transfer_s);
  j.Set("max_stage_s", k.max_stage_s);
  j.Set("max_memory_bytes", k.max_memory_bytes);
  j.Set("bubble_fraction", k.bubble_fraction);
  return j;
}

std::string Seconds(double s) {
  char buf[32];
  if (s >= 1)
    std::snprintf(buf, sizeof(buf), "%.3f s", s);
  else if (s >= 1e-3)
    std::snprintf(buf, sizeof(buf), "%.3f ms", s * 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.1f us", s * 1e6);
  return buf;
}

std::string ConfigLine(const Plan& p) {
  char buf[256];
  std::string sched = ScheduleName(p.config.schedule);
  if (p.config.virtual_stages > 1) sched += "(v=" + std::to_string(p.config.virtual_stages) + ")";
  std::snprintf(buf, sizeof(buf), "%4d %5d  %-9s %-16s %5d  %12s  %6.1f%%  %12s  %10.3f GB",
                p.config.pp, p.config.dp, LayoutName(p.config.layout), sched.c_str(),
                p.config.micro_batches, Seconds(p.cost.step_s).c_str(),
                100 * p.cost.bubble_fraction, Seconds(p.cost.allreduce_exposed_s).c_str(),
                p.cost.max_memory_bytes / 1e9);
  return buf;
}

}  // namespace

Json PlanToJson(const Plan& plan) {
  Json j = Json::MakeObject();
  j.Set("format", "weft-plan/1");
  j.Set("model", plan.model);
  j.Set("cluster", plan.cluster);
  j.Set("pp", plan.config.pp);
  j.Set("dp", plan.config.dp);
  j.Set("layout", LayoutName(plan.config.layout));
  j.Set("schedule", ScheduleName(plan.config.schedule));
  j.Set("virtual_stages", plan.config.virtual_stages);
  j.Set("micro_batches", plan.config.micro_batches);
  j.Set("global_batch", plan.global_batch);
  j.Set("micro_batch_size", plan.micro_batch_size);
  Json b = Json::MakeArray();
  for (int x : plan.boundaries) b.Push(x);
  j.Set("boundaries", b);
  Json stages = Json::MakeArray();
  for (int s = 0; s < plan.config.pp; ++s) {
    Json sj = Json::MakeObject();
    sj.Set("stage", s);
    Json chunks = Json::MakeArray();
    for (int c = s; c + 1 < static_cast<int>(plan.boundaries.size()); c += plan.config.pp) {
      chunks.Push(Json::Array{plan.boundaries[c], plan.boundaries[c + 1]});
    }
    sj.Set("layers", chunks);
    Json chips = Json::MakeArray();
    for (int r = 0; r < plan.config.dp; ++r) chips.Push(plan.ChipOf(s, r));
    sj.Set("ranks", chips);
    if (s < static_cast<int>(plan.allreduce_links.size())) {
      sj.Set("allreduce_link", plan.allreduce_links[s]);
    }
    stages.Push(sj);
  }
  j.Set("stages", stages);
  Json cuts = Json::MakeArray();
  for (const std::string& l : plan.cut_links) cuts.Push(l);
  j.Set("cut_links", cuts);
  j.Set("predicted", CostJson(plan.cost));
  return j;
}

Result<Plan> PlanFromJson(const Json& j) {
  const char* what = "plan";
  if (!j.is_object()) return InvalidArgumentError("plan: expected a JSON object");
  if (j.StringOr("format", "") != "weft-plan/1") {
    return InvalidArgumentError("plan: \"format\" must be \"weft-plan/1\"");
  }
  Plan p;
  p.model = j.StringOr("model", "");
  p.cluster = j.StringOr("cluster", "");
  WEFT_ASSIGN_OR_RETURN(int64_t pp, j.GetInt("pp", what));
  WEFT_ASSIGN_OR_RETURN(int64_t dp, j.GetInt("dp", what));
  WEFT_ASSIGN_OR_RETURN(int64_t v, j.GetInt("virtual_stages", what));
  WEFT_ASSIGN_OR_RETURN(int64_t m, j.GetInt("micro_batches", what));
  WEFT_ASSIGN_OR_RETURN(p.global_batch, j.GetInt("global_batch", what));
  WEFT_ASSIGN_OR_RETURN(std::string layout, j.GetString("layout", what));
  WEFT_ASSIGN_OR_RETURN(std::string sched, j.GetString("schedule", what));
  if (pp < 1 || dp < 1 || v < 1 || m < 1 || pp * dp > (1 << 24)) {
    return InvalidArgumentError("plan: pp, dp, virtual_stages and micro_batches must be positive");
  }
  if (p.global_batch % (dp * m) != 0) {
    return InvalidArgumentError("plan: global_batch " + std::to_string(p.global_batch) +
                                " is not divisible by dp × micro_batches");
  }
  p.config.pp = static_cast<int>(pp);
  p.config.dp = static_cast<int>(dp);
  p.config.virtual_stages = static_cast<int>(v);
  p.config.micro_batches = static_cast<int>(m);
  if (layout == "dp_inner")
    p.config.layout = Layout::kDataParallelInner;
  else if (layout == "pp_inner")
    p.config.layout = Layout::kPipelineInner;
  else
    return InvalidArgumentError("plan: unknown layout '" + layout + "'");
  WEFT_ASSIGN_OR_RETURN(p.config.schedule, ParseScheduleName(sched));
  if ((p.config.schedule == ScheduleKind::kInterleaved) != (v > 1)) {
    return InvalidArgumentError("plan: virtual_stages > 1 goes with the interleaved schedule only");
  }
  p.micro_batch_size = p.global_batch / (dp * m);
  WEFT_ASSIGN_OR_RETURN(const Json::Array* b, j.GetArray("boundaries", what));
  if (static_cast<int>(b->size()) != p.config.chunks() + 1) {
    return InvalidArgumentError("plan: \"boundaries\" must hold pp × virtual_stages + 1 entries");
  }
  for (const Json& x : *b) {
    if (!x.is_number()) return InvalidArgumentError("plan: boundaries must be numbers");
    p.boundaries.push_back(static_cast<int>(x.as_number()));
  }
  for (size_t c = 0; c + 1 < p.boundaries.size(); ++c) {
    if (p.boundaries[c] >= p.boundaries[c + 1] || p.boundaries[0] != 0) {
      return InvalidArgumentError("plan: boundaries must start at 0 and strictly increase");
    }
  }
  if (const Json* pred = j.Find("predicted")) {
    p.cost.step_s = pred->NumberOr("step_s", 0);
    p.cost.fill_s = pred->NumberOr("fill_s", 0);
    p.cost.steady_s = pred->NumberOr("steady_s", 0);
    p.cost.allreduce_exposed_s = pred->NumberOr("allreduce_exposed_s", 0);
    p.cost.transfer_s = pred->NumberOr("transfer_s", 0);
    p.cost.max_stage_s = pred->NumberOr("max_stage_s", 0);
    p.cost.max_memory_bytes = pred->NumberOr("max_memory_bytes", 0);
    p.cost.bubble_fraction = pred->NumberOr("bubble_fraction", 0);
  }
  return p;
}

std::string ExplainPlan(const PlanReport& r) {
  const Plan& b = r.best;
  std::string out;
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "plan for %s on %s: %d pipeline stage%s x %d data-parallel replica%s (%s), %s "
      "schedule%s, %d micro-batches of %lld\n",
      b.model.c_str(), b.cluster.c_str(), b.config.pp, b.config.pp == 1 ? "" : "s", b.config.dp,
      b.config.dp == 1 ? "" : "s", LayoutName(b.config.layout), ScheduleName(b.config.schedule),
      b.config.virtual_stages > 1
          ? (" with " + std::to_string(b.config.virtual_stages) + " chunks per stage").c_str()
          : "",
      b.config.micro_batches, static_cast<long long>(b.micro_batch_size));
  out += buf;
  std::snprintf(buf, sizeof(buf),
                "predicted step %s: fill/drain %s, steady %s, exposed all-reduce %s; bubble "
                "%.1f%%; peak memory %.3f GB per chip\n",
                Seconds(b.cost.step_s).c_str(), Seconds(b.cost.fill_s).c_str(),
                Seconds(b.cost.steady_s).c_str(), Seconds(b.cost.allreduce_exposed_s).c_str(),
                100 * b.cost.bubble_fraction, b.cost.max_memory_bytes / 1e9);
  out += buf;
  for (int s = 0; s < b.config.pp; ++s) {
    std::string layers;
    for (int c = s; c + 1 < static_cast<int>(b.boundaries.size()); c += b.config.pp) {
      if (!layers.empty()) layers += ", ";
      layers += std::to_string(b.boundaries[c]) + ".." + std::to_string(b.boundaries[c + 1] - 1);
    }
    std::snprintf(
        buf, sizeof(buf), "  stage %d: layers %s; ranks %lld..%s; all-reduce over %s\n", s,
        layers.c_str(), static_cast<long long>(b.ChipOf(s, 0)),
        std::to_string(b.ChipOf(s, b.config.dp - 1)).c_str(),
        s < static_cast<int>(b.allreduce_links.size()) ? b.allreduce_links[s].c_str() : "-");
    out += buf;
  }
  if (!b.cut_links.empty()) {
    out += "  pipeline cuts over:";
    for (const std::string& l : b.cut_links) out += " " + l;
    out += "\n";
  }
  out +=
      "\n  pp    dp  layout    schedule         micro          step   bubble  exposed a-r"
      "     memory\n";
  out += "* " + ConfigLine(b).substr(2) + "\n";
  for (const Plan& a : r.alternatives) out += "  " + ConfigLine(a).substr(2) + "\n";
  std::snprintf(buf, sizeof(buf), "searched %lld configurations (%lld solved) in %.1f ms\n",
                static_cast<long long>(r.configs_total), static_cast<long long>(r.configs_solved),
                r.search_ms);
  out += buf;
  return out;
}

}  // namespace weft::runtime::planner
