#include "scheduler/partition_job_planner.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <utility>

#include "runtime/planner/model_desc.h"
#include "runtime/planner/planner.h"

namespace weft::scheduler {

namespace planner = weft::runtime::planner;

namespace {

constexpr char kModelField[] = "spec.resources.plan.model_json";

Json Link(const char* name, int64_t span, double alpha_us, double gbps) {
  Json l = Json::MakeObject();
  l.Set("name", name);
  l.Set("span", span);
  l.Set("alpha_us", alpha_us);
  l.Set("bandwidth_GBps", gbps);
  return l;
}

// Every planner error about the model is the caller's bad field, whatever code the reader gave
// (a missing file is NotFound there, but here it is a bad argument).
Result<planner::ModelDesc> ReadModel(const std::string& text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  Result<planner::ModelDesc> model = InvalidArgumentError("empty");
  if (first != std::string::npos && text[first] == '{') {
    Result<Json> j = ParseJson(text);
    model = j.ok() ? planner::ModelFromJson(*j) : Result<planner::ModelDesc>(j.status());
  } else {
    model = planner::LoadModel(text);
  }
  if (!model.ok()) {
    return InvalidArgumentError(std::string(kModelField) + ": " + model.status().message());
  }
  return model;
}

}  // namespace

Result<planner::ClusterDesc> ClusterFromNodes(const std::vector<const Node*>& nodes,
                                              const PartitionPlannerOptions& o) {
  struct Host {
    std::string switch_id;
    int64_t slots = 0;
    double memory_per_slot = 0;  // the least over its nodes; 0: unknown
  };
  std::vector<std::string> host_order, switch_order;
  std::map<std::string, Host> hosts;
  for (const Node* n : nodes) {
    if (n->slots <= 0) continue;
    const std::string& hid = n->host_id.empty() ? n->node_id : n->host_id;
    auto [it, fresh] = hosts.try_emplace(hid);
    if (fresh) {
      host_order.push_back(hid);
      it->second.switch_id = n->switch_id;
      if (std::find(switch_order.begin(), switch_order.end(), n->switch_id) == switch_order.end()) {
        switch_order.push_back(n->switch_id);
      }
    }
    it->second.slots += n->slots;
    if (n->memory_bytes > 0) {
      double m = static_cast<double>(n->memory_bytes) / n->slots;
      Host& h = it->second;
      h.memory_per_slot = h.memory_per_slot > 0 ? std::min(h.memory_per_slot, m) : m;
    }
  }
  if (hosts.empty()) {
    return InvalidArgumentError("cluster: no ready node with a free slot to plan for");
  }
  int64_t chips_per_host = INT64_MAX;
  double memory = 0;
  std::map<std::string, int64_t> hosts_per_switch;
  for (const auto& [id, h] : hosts) {
    chips_per_host = std::min(chips_per_host, h.slots);
    if (h.memory_per_slot > 0)
      memory = memory > 0 ? std::min(memory, h.memory_per_slot) : h.memory_per_slot;
    hosts_per_switch[h.switch_id]++;
  }
  if (memory <= 0) memory = o.default_chip_memory_bytes;
  int64_t block = 0;  // hosts per switch block: divides every switch's host count
  for (const auto& [sw, count] : hosts_per_switch) block = std::gcd(block, count);
  const int64_t n_hosts = static_cast<int64_t>(hosts.size());
  const int64_t all = n_hosts * chips_per_host;

  Json c = Json::MakeObject();
  c.Set("name", "scheduler-" + std::to_string(n_hosts) + "x" + std::to_string(chips_per_host));
  c.Set("hosts", n_hosts);
  c.Set("chips_per_host", chips_per_host);
  Json chip = Json::MakeObject();
  chip.Set("flops", o.chip_flops);
  chip.Set("efficiency", o.chip_efficiency);
  chip.Set("memory_bytes", memory);
  chip.Set("layer_overhead_us", o.layer_overhead_us);
  c.Set("chip", chip);
  Json links = Json::MakeArray();
  if (chips_per_host > 1 && chips_per_host < all) {
    links.Push(Link("host", chips_per_host, o.host_alpha_us, o.host_bandwidth_GBps));
  }
  if (n_hosts == 1) {
    links.Push(Link("host", all, o.host_alpha_us, o.host_bandwidth_GBps));
  } else if (hosts_per_switch.size() == 1) {
    links.Push(Link("switch", all, o.switch_alpha_us, o.switch_bandwidth_GBps));
  } else {
    if (block > 1) {
      links.Push(
          Link("switch", block * chips_per_host, o.switch_alpha_us, o.switch_bandwidth_GBps));
    }
    links.Push(Link("spine", all, o.spine_alpha_us, o.spine_bandwidth_GBps));
  }
  c.Set("links", links);
  Result<planner::ClusterDesc> desc = planner::ClusterFromJson(c);
  if (!desc.ok()) return desc.status().WithContext("cluster from registered nodes");
  return desc;
}

namespace {

// The plan in `plan_json` with its parsed JSON, or false when it is not a readable weft-plan/1.
bool ReadPlan(const std::string& plan_json, Json* json, planner::Plan* plan) {
  if (plan_json.empty()) return false;
  Result<Json> j = ParseJson(plan_json);
  if (!j.ok()) return false;
  Result<planner::Plan> p = planner::PlanFromJson(*j);
  if (!p.ok()) return false;
  *json = std::move(j).value();
  *plan = std::move(p).value();
  return true;
}

int GroupOf(const planner::Plan& plan) {
  return plan.config.layout == planner::Layout::kDataParallelInner ? plan.config.dp
                                                                   : plan.config.pp;
}

// "host (2), switch (1)": how many of `links` cross each class, innermost first.
std::string CountByClass(const std::vector<std::string>& links) {
  std::string out;
  for (const char* name : {"none", "host", "switch", "spine"}) {
    int n = static_cast<int>(std::count(links.begin(), links.end(), name));
    if (n == 0) continue;
    out += (out.empty() ? "" : ", ") + std::string(name) + " (" + std::to_string(n) + ")";
  }
  return out;
}

}  // namespace

int PlanPlacementGroup(const std::string& plan_json) {
  Json json;
  planner::Plan plan;
  if (!ReadPlan(plan_json, &json, &plan)) return 1;
  return std::max(1, GroupOf(plan));
}

std::string RecordPlacedLinks(const GangPlacement& placement,
                              const std::vector<const Node*>& rank_nodes, std::string* plan_json) {
  Json json;
  planner::Plan plan;
  if (!ReadPlan(*plan_json, &json, &plan)) return "";
  const int pp = plan.config.pp, dp = plan.config.dp;
  if (static_cast<int64_t>(rank_nodes.size()) != int64_t{pp} * dp) return "";
  auto link = [&](int64_t a, int64_t b) { return LinkBetween(*rank_nodes[a], *rank_nodes[b]); };
  // As the planner costs them (planner.cc MakePlacement): a cut from stage s to s+1 is as slow
  // as its slowest replica's link; an all-reduce spans the outermost class among its replicas.
  std::vector<LinkClass> stage_cut(pp, LinkClass::kHost);
  std::vector<std::string> allreduce(pp, "none");
  for (int s = 0; s < pp; ++s) {
    LinkClass ar = LinkClass::kHost;
    for (int r = 0; r < dp; ++r) {
      stage_cut[s] = std::max(stage_cut[s], link(plan.ChipOf(s, r), plan.ChipOf((s + 1) % pp, r)));
      if (r > 0) ar = std::max(ar, link(plan.ChipOf(s, 0), plan.ChipOf(s, r)));
    }
    if (dp > 1) allreduce[s] = LinkClassName(ar);
  }
  std::vector<std::string> cuts;
  for (int c = 0; c + 1 < plan.config.chunks(); ++c)
    cuts.push_back(LinkClassName(stage_cut[c % pp]));

  // What the planner predicted on the cluster it was shown.
  std::vector<std::string> differences;
  if (const Json* pred = json.Find("cut_links"); pred && pred->is_array()) {
    const Json::Array& a = pred->as_array();
    for (size_t c = 0; c < a.size() && c < cuts.size(); ++c) {
      if (a[c].is_string() && a[c].as_string() != cuts[c]) {
        differences.push_back("cut " + std::to_string(c) + ": placed " + cuts[c] + ", planned " +
                              a[c].as_string());
      }
    }
  }
  if (const Json* stages = json.Find("stages"); stages && stages->is_array()) {
    const Json::Array& a = stages->as_array();
    for (size_t s = 0; s < a.size() && s < allreduce.size(); ++s) {
      std::string planned = a[s].StringOr("allreduce_link", "");
      if (!planned.empty() && planned != allreduce[s]) {
        differences.push_back("stage " + std::to_string(s) + " all-reduce: placed " + allreduce[s] +
                              ", planned " + planned);
      }
    }
  }

  Json placed = Json::MakeObject();
  placed.Set("group_size", GroupOf(plan));
  placed.Set("aligned", placement.aligned);
  if (!placement.note.empty()) placed.Set("note", placement.note);
  Json cj = Json::MakeArray();
  for (const std::string& l : cuts) cj.Push(l);
  placed.Set("cut_links", cj);
  Json aj = Json::MakeArray();
  for (const std::string& l : allreduce) aj.Push(l);
  placed.Set("allreduce_links", aj);
  placed.Set("matches_plan", differences.empty());
  Json dj = Json::MakeArray();
  for (const std::string& d : differences) dj.Push(d);
  placed.Set("differences", dj);
  json.Set("placed", placed);
  *plan_json = json.Dump();

  std::string out = "plan traffic as placed: ";
  out += dp > 1 ? "stage all-reduces over " + CountByClass(allreduce) : "no all-reduce";
  out += cuts.empty() ? "; no pipeline cuts" : "; pipeline cuts over " + CountByClass(cuts);
  if (differences.empty()) {
    out += "; as planned";
  } else {
    out += "; differs from the plan: ";
    for (size_t i = 0; i < differences.size() && i < 3; ++i) {
      out += (i ? ", " : "") + differences[i];
    }
    if (differences.size() > 3) out += " and " + std::to_string(differences.size() - 3) + " more";
  }
  return out;
}

Result<PlanOutcome> PartitionJobPlanner::Plan(const PlanRequest& request,
                                              const std::vector<const Node*>& nodes,
                                              int max_ranks) {
  WEFT_ASSIGN_OR_RETURN(planner::ModelDesc model, ReadModel(request.model_json));
  WEFT_ASSIGN_OR_RETURN(planner::ClusterDesc cluster, ClusterFromNodes(nodes, options_));
  planner::PlanOptions po;
  po.pin_pp = request.pin_pp;
  po.pin_dp = request.pin_dp;
  po.pin_schedule = request.pin_schedule;
  po.pin_micro_batches = request.pin_micro_batches;
  po.max_chips = static_cast<int>(std::min<int64_t>(max_ranks, cluster.chips()));
  po.alternatives = 0;
  Result<planner::PlanReport> report = planner::MakePlan(model, cluster, po);
  if (!report.ok()) {
    if (report.status().code() == StatusCode::kInvalidArgument) {
      return InvalidArgumentError("spec.resources.plan: " + report.status().message());
    }
    return report.status().WithContext("spec.resources.plan");
  }
  const planner::Plan& best = report->best;
  PlanOutcome out;
  out.world_size = best.world_size();
  out.plan_json = planner::PlanToJson(best).Dump();
  char note[256];
  std::snprintf(note, sizeof(note),
                "%d stages x %d replicas (%s, %d micro-batches), est. %.3g ms/step", best.config.pp,
                best.config.dp, planner::ScheduleName(best.config.schedule),
                best.config.micro_batches, best.cost.step_s * 1e3);
  out.note = note;
  return out;
}

}  // namespace weft::scheduler
