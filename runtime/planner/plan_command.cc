// `weft plan`: reads a model and a cluster, prints the chosen plan and its alternatives, and
// writes the plan JSON the trainer runs.
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "runtime/planner/planner.h"

namespace weft::runtime::planner {

namespace {

void PlanUsage(FILE* out) {
  std::fprintf(out,
               "usage: weft plan --model FILE --cluster FILE [--pin-stages N,N,...] [--pp N]\n"
               "                 [--dp N] [--schedule gpipe|1f1b|interleaved] [--micro-batches M]\n"
               "                 [--chips N] [--alternatives K] [--json] [--out PLAN.json]\n");
}

bool ParsePositive(const std::string& s, int* out) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < 1 || v > (1 << 24)) return false;
  *out = static_cast<int>(v);
  return true;
}

}  // namespace

int PlanCommand(const std::vector<std::string>& args) {
  std::string model_path, cluster_path, out_path;
  bool json = false;
  PlanOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "weft plan: %s needs a value\n", a.c_str());
        return false;
      }
      *v = args[++i];
      return true;
    };
    auto number = [&](int* n) {
      std::string v;
      if (!value(&v)) return false;
      if (!ParsePositive(v, n)) {
        std::fprintf(stderr, "weft plan: %s must be a positive integer, got '%s'\n", a.c_str(),
                     v.c_str());
        return false;
      }
      return true;
    };
    bool ok = true;
    if (a == "--model")
      ok = value(&model_path);
    else if (a == "--cluster")
      ok = value(&cluster_path);
    else if (a == "--out")
      ok = value(&out_path);
    else if (a == "--json")
      json = true;
    else if (a == "--pp")
      ok = number(&o.pin_pp);
    else if (a == "--dp")
      ok = number(&o.pin_dp);
    else if (a == "--micro-batches")
      ok = number(&o.pin_micro_batches);
    else if (a == "--chips")
      ok = number(&o.max_chips);
    else if (a == "--alternatives")
      ok = number(&o.alternatives);
    else if (a == "--schedule")
      ok = value(&o.pin_schedule);
    else if (a == "--pin-stages") {
      std::string v;
      ok = value(&v);
      std::stringstream ss(v);
      std::string item;
      while (ok && std::getline(ss, item, ',')) {
        int n = 0;
        if (!ParsePositive(item, &n)) {
          std::fprintf(stderr, "weft plan: --pin-stages wants layer counts like 3,5,4; got '%s'\n",
                       v.c_str());
          ok = false;
        }
        o.pin_stage_layers.push_back(n);
      }
    } else if (a == "-h" || a == "--help") {
      PlanUsage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "weft plan: unknown argument '%s'\n", a.c_str());
      ok = false;
    }
    if (!ok) {
      PlanUsage(stderr);
      return 2;
    }
  }
  if (model_path.empty() || cluster_path.empty()) {
    std::fprintf(stderr, "weft plan: --model and --cluster are required\n");
    PlanUsage(stderr);
    return 2;
  }
  auto model = LoadModel(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "weft plan: %s\n", model.status().ToString().c_str());
    return 1;
  }
  auto cluster = LoadCluster(cluster_path);
  if (!cluster.ok()) {
    std::fprintf(stderr, "weft plan: %s\n", cluster.status().ToString().c_str());
    return 1;
  }
  auto report = MakePlan(*model, *cluster, o);
  if (!report.ok()) {
    std::fprintf(stderr, "weft plan: %s\n", report.status().ToString().c_str());
    return 1;
  }
  if (json) {
    Json j = PlanToJson(report->best);
    Json alts = Json::MakeArray();
    for (const Plan& a : report->alternatives) alts.Push(PlanToJson(a));
    j.Set("alternatives", alts);
    j.Set("search_ms", report->search_ms);
    std::printf("%s\n", j.Dump(2).c_str());
  } else {
    std::printf("%s", ExplainPlan(*report).c_str());
  }
  if (!out_path.empty()) {
    Status s = WriteJsonFile(out_path, PlanToJson(report->best));
    if (!s.ok()) {
      std::fprintf(stderr, "weft plan: %s\n", s.ToString().c_str());
      return 1;
    }
    if (!json) std::printf("wrote %s\n", out_path.c_str());
  }
  return 0;
}

}  // namespace weft::runtime::planner
