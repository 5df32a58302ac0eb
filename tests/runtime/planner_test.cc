// The partition planner: exact against exhaustive search on small random cases, pins, link-aware
// layouts, memory limits, speed at 175B scale on 1,024 chips, and the data files in the repo.
#include "runtime/planner/planner.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

namespace weft::runtime::planner {
namespace {

std::string RepoPath(const std::string& rel) { return std::string(WEFT_SOURCE_DIR) + "/" + rel; }

ModelDesc RandomModel(std::mt19937& rng, int layers, int64_t batch) {
  std::uniform_real_distribution<double> u(0.2, 3.0);
  ModelDesc m;
  m.name = "random";
  m.global_batch = batch;
  m.state_bytes_per_param_byte = 2;
  for (int i = 0; i < layers; ++i) {
    LayerDesc l;
    l.name = "l" + std::to_string(i);
    l.fwd_flops = 1e9 * u(rng);
    l.bwd_flops = 2 * l.fwd_flops * u(rng);
    l.param_bytes = 1e8 * u(rng) * u(rng);
    l.activation_bytes = 1e6 * u(rng) * u(rng);
    l.stash_bytes = 2 * l.activation_bytes;
    m.layers.push_back(l);
  }
  return m;
}

ClusterDesc SmallCluster(int hosts, int per_host, double memory, double overhead_s) {
  ClusterDesc c;
  c.name = "small";
  c.hosts = hosts;
  c.chips_per_host = per_host;
  c.chip_flops = 1e12;
  c.chip_efficiency = 0.5;
  c.chip_memory_bytes = memory;
  c.layer_overhead_s = overhead_s;
  if (per_host > 1) c.links.push_back({"fast", per_host, 2e-6, 1 / 100e9});
  if (hosts > 1 || per_host == 1) c.links.push_back({"slow", c.chips(), 20e-6, 1 / 5e9});
  return c;
}

// Every configuration × every way of cutting the layers into contiguous chunks.
double ExhaustiveBest(const ModelDesc& m, const ClusterDesc& c, const PlanOptions& o,
                      int64_t* evaluated) {
  auto configs = CandidateConfigs(m, c, o);
  EXPECT_TRUE(configs.ok()) << configs.status().ToString();
  double best = INFINITY;
  const int L = static_cast<int>(m.layers.size());
  for (const PlanConfig& cfg : *configs) {
    const int C = cfg.chunks();
    std::vector<int> b(C + 1, 0);
    b[C] = L;
    std::function<void(int)> rec = [&](int k) {
      if (k == C) {
        auto p = EvaluatePlan(m, c, cfg, b);
        if (p.ok()) {
          best = std::min(best, p->cost.step_s);
          ++*evaluated;
        } else {
          EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted) << p.status().ToString();
        }
        return;
      }
      for (int x = b[k - 1] + 1; x <= L - (C - k); ++x) {
        b[k] = x;
        rec(k + 1);
      }
    };
    if (C == 1)
      rec(1);
    else
      rec(1);
  }
  return best;
}

TEST(PlannerTest, FindsTheExhaustiveOptimumOnSmallCases) {
  std::mt19937 rng(12345);
  int cases = 0, infeasible = 0;
  for (int trial = 0; trial < 200; ++trial) {
    int layers = 3 + trial % 6;  // 3..8 layers
    int hosts = 1 + trial % 3, per_host = 1 + (trial / 3) % 3;
    if (hosts * per_host == 1) per_host = 2;
    int64_t batch = (trial % 2) ? 24 : 16;
    ModelDesc m = RandomModel(rng, layers, batch);
    // Memory from generous to binding, so the limit shapes some optima.
    double total = m.TotalParamBytes() * 3;
    double memory = total * (trial % 4 == 0 ? 10.0 : 0.45 + 0.1 * (trial % 5));
    ClusterDesc c = SmallCluster(hosts, per_host, memory, (trial % 3) * 1e-4);
    PlanOptions o;
    if (trial % 7 == 3) o.pin_pp = std::min(2, layers);
    if (trial % 11 == 5) o.pin_dp = 2;
    if (o.pin_dp && int64_t{std::max(1, o.pin_pp)} * o.pin_dp > c.chips()) o.pin_dp = 0;
    int64_t evaluated = 0;
    double exhaustive = ExhaustiveBest(m, c, o, &evaluated);
    auto r = MakePlan(m, c, o);
    if (!std::isfinite(exhaustive)) {
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
      ++infeasible;
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_NEAR(r->best.cost.step_s, exhaustive, 1e-12 * exhaustive)
        << "trial " << trial << ": planner " << r->best.cost.step_s << " vs exhaustive "
        << exhaustive << " over " << evaluated << " partitions\n"
        << ExplainPlan(*r);
    auto again = EvaluatePlan(m, c, r->best.config, r->best.boundaries);
    ASSERT_TRUE(again.ok());
    EXPECT_DOUBLE_EQ(again->cost.step_s, r->best.cost.step_s);
    for (const Plan& a : r->alternatives) EXPECT_GE(a.cost.step_s, r->best.cost.step_s);
    ++cases;
  }
  std::printf("exhaustive comparison: %d feasible cases, %d infeasible\n", cases, infeasible);
  EXPECT_GE(cases, 120);
}

TEST(PlannerTest, HonoursPins) {
  std::mt19937 rng(7);
  ModelDesc m = RandomModel(rng, 8, 32);
  ClusterDesc c = SmallCluster(2, 4, 1e12, 0);
  PlanOptions o;
  o.pin_stage_layers = {1, 4, 3};
  auto r = MakePlan(m, c, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->best.config.pp, 3);
  EXPECT_EQ(r->best.boundaries, (std::vector<int>{0, 1, 5, 8}));
  o = PlanOptions();
  o.pin_pp = 4;
  o.pin_dp = 2;
  o.pin_schedule = "gpipe";
  o.pin_micro_batches = 8;
  r = MakePlan(m, c, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->best.config.pp, 4);
  EXPECT_EQ(r->best.config.dp, 2);
  EXPECT_EQ(r->best.config.schedule, ScheduleKind::kGPipe);
  EXPECT_EQ(r->best.config.micro_batches, 8);
  for (const Plan& a : r->alternatives) {
    EXPECT_EQ(a.config.pp, 4);
    EXPECT_EQ(a.config.dp, 2);
  }
  // Bad pins are named.
  o = PlanOptions();
  o.pin_stage_layers = {3, 3};
  EXPECT_NE(MakePlan(m, c, o).status().message().find("stages hold 6 layers, the model has 8"),
            std::string::npos);
  o = PlanOptions();
  o.pin_pp = 9;
  EXPECT_EQ(MakePlan(m, c, o).status().code(), StatusCode::kInvalidArgument);
  o = PlanOptions();
  o.pin_dp = 3;
  EXPECT_NE(MakePlan(m, c, o).status().message().find("does not divide the global batch"),
            std::string::npos);
  o = PlanOptions();
  o.pin_pp = 2;
  o.pin_dp = 8;
  EXPECT_NE(MakePlan(m, c, o).status().message().find("needs more than the 8 chips"),
            std::string::npos);
}

// Heavy gradients and light activations: the all-reduce belongs on the fast link and the pipeline
// cut on the thin one; the other way round for light gradients and heavy activations.
TEST(PlannerTest, PutsHeavyTrafficOnFastLinks) {
  ClusterDesc c = SmallCluster(2, 2, 1e12, 0);
  c.links[1].beta_s_per_byte = 1 / 1e8;  // a thin inter-host link
  PlanOptions o;
  o.pin_pp = 2;
  o.pin_dp = 2;
  ModelDesc heavy_params;
  heavy_params.name = "heavy-params";
  heavy_params.global_batch = 64;
  for (int i = 0; i < 4; ++i) heavy_params.layers.push_back({"l", 1e8, 2e8, 4e8, 1e3, 1e3});
  auto r = MakePlan(heavy_params, c, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->best.config.layout, Layout::kDataParallelInner) << ExplainPlan(*r);
  EXPECT_EQ(r->best.allreduce_links[0], "fast");
  EXPECT_EQ(r->best.cut_links[0], "slow");

  ModelDesc heavy_acts = heavy_params;
  heavy_acts.name = "heavy-activations";
  for (LayerDesc& l : heavy_acts.layers) {
    l.param_bytes = 1e4;
    l.activation_bytes = 4e6;
  }
  r = MakePlan(heavy_acts, c, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->best.config.layout, Layout::kPipelineInner) << ExplainPlan(*r);
  EXPECT_EQ(r->best.cut_links[0], "fast");
  EXPECT_EQ(r->best.allreduce_links[0], "slow");
}

TEST(PlannerTest, UnevenLayersGetUnevenStagesAndMemoryLimitsBind) {
  ModelDesc m;
  m.name = "uneven";
  m.global_batch = 8;
  double w[] = {8, 1, 1, 1, 1, 1, 1, 1, 1};  // one heavy layer then eight light ones
  for (double x : w) m.layers.push_back({"l", x * 1e9, 2 * x * 1e9, 1e6, 1e3, 1e3});
  ClusterDesc c = SmallCluster(1, 2, 1e12, 0);
  PlanOptions o;
  o.pin_pp = 2;
  o.pin_dp = 1;
  auto r = MakePlan(m, c, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->best.boundaries, (std::vector<int>{0, 1, 9})) << ExplainPlan(*r);
  // Only 2 layers' state fits per chip: no two-stage plan exists.
  c.chip_memory_bytes = 2.5e6 * 3;
  r = MakePlan(m, c, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("fits"), std::string::npos);
}

TEST(PlannerTest, Gpt175BOn1024ChipsPlansInUnderASecond) {
  auto m = LoadModel(RepoPath("models/gpt3-175b.json"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto c = LoadCluster(RepoPath("clusters/dgx-a100-1024.json"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(m->layers.size(), 98u);
  EXPECT_EQ(c->chips(), 1024);
  auto t0 = std::chrono::steady_clock::now();
  auto r = MakePlan(*m, *c, PlanOptions());
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::printf("175B on 1024 chips: planned in %.1f ms (%lld configurations, %lld solved)\n%s", ms,
              static_cast<long long>(r->configs_total), static_cast<long long>(r->configs_solved),
              ExplainPlan(*r).substr(0, 400).c_str());
  EXPECT_LT(ms, 1000.0);
  // 175B parameters with Adam do not fit on fewer than ~35 chips' worth of pipeline stages.
  EXPECT_GE(r->best.config.pp, 35);
  EXPECT_LE(r->best.cost.max_memory_bytes, c->chip_memory_bytes);
  EXPECT_LE(int64_t{r->best.config.pp} * r->best.config.dp, 1024);
  // Replicas of a stage sit inside one leaf switch: the all-reduce never crosses the spine.
  for (const std::string& l : r->best.allreduce_links) EXPECT_NE(l, "ib-spine");
}

TEST(PlannerTest, PlanJsonRoundTripsAndRejectsBadPlans) {
  auto m = LoadModel(RepoPath("models/mlp-fmnist.json"));
  auto c = LoadCluster(RepoPath("clusters/demo-2x2.json"));
  ASSERT_TRUE(m.ok() && c.ok());
  auto r = MakePlan(*m, *c, PlanOptions());
  ASSERT_TRUE(r.ok());
  Json j = PlanToJson(r->best);
  auto back = PlanFromJson(*ParseJson(j.Dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->boundaries, r->best.boundaries);
  EXPECT_EQ(back->config.pp, r->best.config.pp);
  EXPECT_EQ(back->config.micro_batches, r->best.config.micro_batches);
  EXPECT_EQ(back->config.layout, r->best.config.layout);
  Json bad = j;
  bad.Set("boundaries", Json::Array{0, 2, 1});
  EXPECT_EQ(PlanFromJson(bad).status().code(), StatusCode::kInvalidArgument);
  bad = j;
  bad.Set("schedule", "zigzag");
  EXPECT_NE(PlanFromJson(bad).status().message().find("zigzag"), std::string::npos);
}

TEST(PlannerTest, RepoDataFilesLoadAndBadFilesAreNamed) {
  // models/mlp-fmnist.json is the trainer's default MLP.
  auto file = LoadModel(RepoPath("models/mlp-fmnist.json"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(ModelToJson(*file), ModelToJson(MlpModel(3, 256, 128)));
  for (const char* f :
       {"clusters/demo-2x2.json", "clusters/local-4.json", "clusters/dgx-a100-1024.json"}) {
    EXPECT_TRUE(LoadCluster(RepoPath(f)).ok()) << f;
  }
  auto bad = ModelFromJson(*ParseJson(R"({"global_batch": 8, "layers": [{"name": "x",
      "fwd_flops": -1, "param_bytes": 1, "activation_bytes": 1}]})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "model model, layer 0 (x): \"fwd_flops\" must be >= 0, got -1");
  auto badc = ClusterFromJson(*ParseJson(R"({"hosts": 2, "chips_per_host": 4,
      "chip": {"flops": 1e12, "memory_bytes": 1e9},
      "links": [{"name": "a", "span": 3, "alpha_us": 1, "bandwidth_GBps": 1}]})"));
  ASSERT_FALSE(badc.ok());
  EXPECT_NE(badc.status().message().find("link a: span 3"), std::string::npos);
}

}  // namespace
}  // namespace weft::runtime::planner
