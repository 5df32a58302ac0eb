// The partition planner's search (the cost model and the algorithm are in planner.h).
#include "runtime/planner/planner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

namespace weft::runtime::planner {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

const char* ScheduleName(ScheduleKind s) {
  switch (s) {
    case ScheduleKind::kGPipe:
      return "gpipe";
    case ScheduleKind::kOneFOneB:
      return "1f1b";
    case ScheduleKind::kInterleaved:
      return "interleaved";
  }
  return "?";
}

Result<ScheduleKind> ParseScheduleName(const std::string& s) {
  if (s == "gpipe") return ScheduleKind::kGPipe;
  if (s == "1f1b") return ScheduleKind::kOneFOneB;
  if (s == "interleaved") return ScheduleKind::kInterleaved;
  return InvalidArgumentError("unknown schedule '" + s + "' (want gpipe, 1f1b or interleaved)");
}

const char* LayoutName(Layout l) {
  return l == Layout::kDataParallelInner ? "dp_inner" : "pp_inner";
}

namespace {

int64_t Chip(int s, int r, int p, int d, Layout layout) {
  return layout == Layout::kDataParallelInner ? int64_t{s} * d + r : int64_t{r} * p + s;
}

// Prefix sums over the model's layers (index i holds the sum of layers [0, i)).
struct Prefix {
  std::vector<double> fwd, bwd, params, stash;
  explicit Prefix(const ModelDesc& m) {
    size_t n = m.layers.size();
    fwd.assign(n + 1, 0);
    bwd.assign(n + 1, 0);
    params.assign(n + 1, 0);
    stash.assign(n + 1, 0);
    for (size_t i = 0; i < n; ++i) {
      fwd[i + 1] = fwd[i] + m.layers[i].fwd_flops;
      bwd[i + 1] = bwd[i] + m.layers[i].bwd_flops;
      params[i + 1] = params[i] + m.layers[i].param_bytes;
      stash[i + 1] = stash[i] + m.layers[i].stash_bytes;
    }
  }
};

// What depends on where the stages sit: the link after each stage (to stage s+1 mod p, the slowest
// over replicas) and each stage's all-reduce.
struct Placement {
  std::vector<int> cut_link;
  std::vector<CollectiveCost> ar;
  std::vector<int> ar_link;  // -1: no all-reduce (dp = 1)
};

Placement MakePlacement(const ClusterDesc& cl, int p, int d, Layout layout) {
  Placement pl;
  pl.cut_link.assign(p, 0);
  pl.ar.resize(p);
  pl.ar_link.assign(p, -1);
  for (int s = 0; s < p; ++s) {
    int worst = 0;
    for (int r = 0; r < d && p > 1; ++r) {
      worst = std::max(worst,
                       cl.LinkIndex(Chip(s, r, p, d, layout), Chip((s + 1) % p, r, p, d, layout)));
    }
    pl.cut_link[s] = worst;
    std::vector<int64_t> chips;
    for (int r = 0; r < d; ++r) chips.push_back(Chip(s, r, p, d, layout));
    pl.ar[s] = cl.AllReduceCost(chips);
    for (int r = 1; r < d; ++r) {
      pl.ar_link[s] = std::max(pl.ar_link[s], cl.LinkIndex(chips[0], chips[r]));
    }
  }
  return pl;
}

// The per-chunk costs of one configuration; every number the search and EvaluatePlan use comes
// from here, computed the same way, so the search's optimum is EvaluatePlan's.
class ConfigCost {
 public:
  ConfigCost(const ModelDesc& model, const ClusterDesc& cl, const Prefix& pre, const Placement& pl,
             const PlanConfig& cfg)
      : model_(model), cl_(cl), pre_(pre), pl_(pl), cfg_(cfg) {
    p_ = cfg.pp;
    v_ = cfg.virtual_stages;
    C_ = p_ * v_;
    L_ = static_cast<int>(model.layers.size());
    b_ = static_cast<double>(model.global_batch) / (double(cfg.dp) * cfg.micro_batches);
    sec_per_flop_ = b_ / cl.EffectiveFlops();
    interleaved_ = cfg.schedule == ScheduleKind::kInterleaved;
    K_ = interleaved_ ? double(cfg.micro_batches) * v_ + p_ - 1 : double(cfg.micro_batches) - 1;
    budget_ = cl.chip_memory_bytes / v_;
    inflight_.resize(p_);
    for (int s = 0; s < p_; ++s) {
      int m = cfg.micro_batches;
      inflight_[s] = cfg.schedule == ScheduleKind::kGPipe ? m : std::min(m, p_ - s);
    }
  }

  int C() const { return C_; }
  int L() const { return L_; }
  double K() const { return K_; }
  int stage(int c) const { return c % p_; }

  double Comp(int i, int j) const {
    return sec_per_flop_ * ((pre_.fwd[j] - pre_.fwd[i]) + (pre_.bwd[j] - pre_.bwd[i])) +
           2 * (j - i) * cl_.layer_overhead_s;
  }
  double Transfer(int c, int j) const {
    if (c == C_ - 1) return 0;
    const LinkClass& l = cl_.links[pl_.cut_link[stage(c)]];
    return l.alpha_s + b_ * model_.layers[j - 1].activation_bytes * l.beta_s_per_byte;
  }
  double A(int c, int i, int j) const {
    return interleaved_ ? 2 * Transfer(c, j) : Comp(i, j) + 2 * Transfer(c, j);
  }
  double Bneck(int c, int i, int j) const { return std::max(Comp(i, j), 2 * Transfer(c, j)); }
  double X(int c, int i, int j) const {
    double ar = pl_.ar[stage(c)].Time(pre_.params[j] - pre_.params[i]);
    if (cfg_.dp == 1) ar = 0;
    double hide = sec_per_flop_ * (pre_.bwd[j] - pre_.bwd[i]);
    return std::max(0.0, ar - hide);
  }
  double Memory(int c, int i, int j) const {
    return (pre_.params[j] - pre_.params[i]) * (1 + model_.state_bytes_per_param_byte) +
           inflight_[stage(c)] * b_ * (pre_.stash[j] - pre_.stash[i]);
  }
  bool Fits(int c, int i, int j) const { return Memory(c, i, j) <= budget_; }

  // Minimises Σ A over partitions into C chunks with Bneck ≤ tau, X ≤ xi and memory within the
  // budget. Returns kInf when none exists; fills `bounds` with the argmin.
  double Solve(double tau, double xi, std::vector<int>* bounds) {
    size_t stride = L_ + 1;
    f_.assign((C_ + 1) * stride, kInf);
    arg_.assign((C_ + 1) * stride, -1);
    f_[0] = 0;
    for (int c = 0; c < C_; ++c) {
      int jmin = c + 1, jmax = L_ - (C_ - 1 - c);
      for (int j = jmin; j <= jmax; ++j) {
        if (c == C_ - 1 && j != L_) continue;
        if (2 * Transfer(c, j) > tau) continue;
        double best = kInf;
        int arg = -1;
        for (int i = j - 1; i >= c; --i) {
          // Compute and memory only grow as the chunk grows to the left.
          if (Comp(i, j) > tau || !Fits(c, i, j)) break;
          double prev = f_[c * stride + i];
          if (prev == kInf || X(c, i, j) > xi) continue;
          double v = prev + A(c, i, j);
          if (v < best) {
            best = v;
            arg = i;
          }
        }
        f_[(c + 1) * stride + j] = best;
        arg_[(c + 1) * stride + j] = arg;
      }
    }
    double total = f_[C_ * stride + L_];
    if (total == kInf) return kInf;
    if (bounds) {
      bounds->assign(C_ + 1, 0);
      int j = L_;
      for (int c = C_; c > 0; --c) {
        (*bounds)[c] = j;
        j = arg_[c * stride + j];
      }
      (*bounds)[0] = 0;
    }
    return total;
  }

 private:
  const ModelDesc& model_;
  const ClusterDesc& cl_;
  const Prefix& pre_;
  const Placement& pl_;
  PlanConfig cfg_;
  int p_, v_, C_, L_;
  double b_, sec_per_flop_, K_, budget_;
  bool interleaved_;
  std::vector<int> inflight_;
  std::vector<double> f_;
  std::vector<int> arg_;
};

Plan Describe(const ModelDesc& model, const ClusterDesc& cl, const Placement& pl, ConfigCost& cc,
              const PlanConfig& cfg, const std::vector<int>& bounds) {
  Plan plan;
  plan.model = model.name;
  plan.cluster = cl.name;
  plan.config = cfg;
  plan.global_batch = model.global_batch;
  plan.micro_batch_size = model.global_batch / (int64_t{cfg.dp} * cfg.micro_batches);
  plan.boundaries = bounds;
  double sum_a = 0, max_b = 0, max_x = 0, transfer = 0, max_comp = 0;
  std::vector<double> stage_mem(cfg.pp, 0);
  for (int c = 0; c < cc.C(); ++c) {
    int i = bounds[c], j = bounds[c + 1];
    sum_a += cc.A(c, i, j);
    max_b = std::max(max_b, cc.Bneck(c, i, j));
    max_x = std::max(max_x, cc.X(c, i, j));
    transfer += 2 * cc.Transfer(c, j);
    max_comp = std::max(max_comp, cc.Comp(i, j));
    stage_mem[cc.stage(c)] += cc.Memory(c, i, j);
    if (c + 1 < cc.C()) plan.cut_links.push_back(cl.links[pl.cut_link[cc.stage(c)]].name);
  }
  for (int s = 0; s < cfg.pp; ++s) {
    plan.allreduce_links.push_back(pl.ar_link[s] < 0 ? "none" : cl.links[pl.ar_link[s]].name);
  }
  PlanCost& k = plan.cost;
  k.step_s = sum_a + cc.K() * max_b + max_x;
  k.steady_s = double(cfg.micro_batches) * cfg.virtual_stages * max_b;
  k.allreduce_exposed_s = max_x;
  k.fill_s = k.step_s - k.steady_s - max_x;
  k.transfer_s = transfer;
  k.max_stage_s = max_comp;
  k.max_memory_bytes = *std::max_element(stage_mem.begin(), stage_mem.end());
  k.bubble_fraction =
      k.step_s > 0 ? 1 - double(cfg.micro_batches) * cfg.virtual_stages * max_comp / k.step_s : 0;
  return plan;
}

Status CheckModelCluster(const ModelDesc& model, const ClusterDesc& cl) {
  if (model.layers.empty()) return InvalidArgumentError("model " + model.name + " has no layers");
  if (model.global_batch <= 0) return InvalidArgumentError("model global_batch must be positive");
  if (cl.links.empty() || cl.chips() < 1) {
    return InvalidArgumentError("cluster " + cl.name + " has no chips or links");
  }
  return Status();
}

}  // namespace

int64_t Plan::ChipOf(int stage, int replica) const {
  return Chip(stage, replica, config.pp, config.dp, config.layout);
}

bool Plan::StageReplicaOf(int64_t chip, int* stage, int* replica) const {
  int p = config.pp, d = config.dp;
  if (chip < 0 || chip >= int64_t{p} * d) return false;
  if (config.layout == Layout::kDataParallelInner) {
    *stage = static_cast<int>(chip / d);
    *replica = static_cast<int>(chip % d);
  } else {
    *stage = static_cast<int>(chip % p);
    *replica = static_cast<int>(chip / p);
  }
  return true;
}

Result<std::vector<PlanConfig>> CandidateConfigs(const ModelDesc& model, const ClusterDesc& cl,
                                                 const PlanOptions& o) {
  WEFT_RETURN_IF_ERROR(CheckModelCluster(model, cl));
  const int L = static_cast<int>(model.layers.size());
  int64_t N = cl.chips();
  if (o.max_chips > 0) N = std::min<int64_t>(N, o.max_chips);
  if (o.exact_chips > 0) {
    if (o.exact_chips > cl.chips()) {
      return InvalidArgumentError("the job has " + std::to_string(o.exact_chips) +
                                  " ranks but cluster " + cl.name + " only " +
                                  std::to_string(cl.chips()) + " chips");
    }
    N = o.exact_chips;
  }
  const int64_t B = model.global_batch;
  if (o.pin_pp < 0 || o.pin_dp < 0 || o.pin_micro_batches < 0) {
    return InvalidArgumentError("pins must be positive");
  }
  if (!o.pin_stage_layers.empty()) {
    int64_t sum = 0;
    for (int n : o.pin_stage_layers) {
      if (n < 1) return InvalidArgumentError("--pin-stages: every stage needs at least one layer");
      sum += n;
    }
    if (sum != L) {
      return InvalidArgumentError("--pin-stages: stages hold " + std::to_string(sum) +
                                  " layers, the model has " + std::to_string(L));
    }
    if (o.pin_pp > 0 && o.pin_pp != static_cast<int>(o.pin_stage_layers.size())) {
      return InvalidArgumentError("--pin-stages gives " +
                                  std::to_string(o.pin_stage_layers.size()) +
                                  " stages but --pp is " + std::to_string(o.pin_pp));
    }
  }
  // 1F1B before GPipe: equal in time, 1F1B needs less memory and wins ties.
  std::vector<ScheduleKind> schedules = {ScheduleKind::kOneFOneB, ScheduleKind::kGPipe,
                                         ScheduleKind::kInterleaved};
  if (!o.pin_schedule.empty()) {
    WEFT_ASSIGN_OR_RETURN(ScheduleKind s, ParseScheduleName(o.pin_schedule));
    schedules = {s};
  }
  int pp_lo = 1, pp_hi = static_cast<int>(std::min<int64_t>(L, N));
  if (!o.pin_stage_layers.empty()) pp_lo = pp_hi = static_cast<int>(o.pin_stage_layers.size());
  if (o.pin_pp > 0) pp_lo = pp_hi = o.pin_pp;
  if (pp_hi > L || pp_hi > N) {
    return InvalidArgumentError("pipeline depth " + std::to_string(pp_hi) + " exceeds the " +
                                std::to_string(L) + " layers or " + std::to_string(N) + " chips");
  }
  if (o.pin_dp > 0 && int64_t{pp_lo} * o.pin_dp > N) {
    return InvalidArgumentError("pp " + std::to_string(pp_lo) + " × dp " +
                                std::to_string(o.pin_dp) + " needs more than the " +
                                std::to_string(N) + " chips");
  }
  if (o.pin_dp > 0 && B % o.pin_dp != 0) {
    return InvalidArgumentError("dp " + std::to_string(o.pin_dp) +
                                " does not divide the global batch " + std::to_string(B));
  }
  std::vector<PlanConfig> out;
  for (int p = pp_lo; p <= pp_hi; ++p) {
    std::vector<int> dps;
    if (o.pin_dp > 0) {
      dps.push_back(o.pin_dp);
    } else {
      for (int64_t d = 1; d * p <= N; ++d) {
        if (B % d == 0) dps.push_back(static_cast<int>(d));
      }
    }
    for (int d : dps) {
      if (int64_t{p} * d > N || (o.exact_chips > 0 && int64_t{p} * d != N)) continue;
      std::vector<Layout> layouts = {Layout::kDataParallelInner};
      if (p > 1 && d > 1) layouts.push_back(Layout::kPipelineInner);
      for (Layout layout : layouts) {
        for (ScheduleKind s : schedules) {
          std::vector<int> vs = {1};
          if (s == ScheduleKind::kInterleaved) {
            vs.clear();
            if (p < 2 || !o.pin_stage_layers.empty()) continue;
            for (int v : {2, 4}) {
              if (p * v <= L) vs.push_back(v);
            }
          }
          for (int v : vs) {
            for (int64_t m = 1; m <= B / d; ++m) {
              if ((B / d) % m != 0) continue;
              if (o.pin_micro_batches > 0 && m != o.pin_micro_batches) continue;
              if (s == ScheduleKind::kInterleaved && m % p != 0) continue;
              PlanConfig c;
              c.pp = p;
              c.dp = d;
              c.layout = layout;
              c.schedule = s;
              c.virtual_stages = v;
              c.micro_batches = static_cast<int>(m);
              out.push_back(c);
            }
          }
        }
      }
    }
  }
  if (out.empty()) {
    return InvalidArgumentError(
        "no configuration satisfies the pins (micro-batches must divide "
        "the per-replica batch; interleaved needs m a multiple of pp)");
  }
  return out;
}

Result<Plan> EvaluatePlan(const ModelDesc& model, const ClusterDesc& cl, const PlanConfig& cfg,
                          const std::vector<int>& bounds) {
  WEFT_RETURN_IF_ERROR(CheckModelCluster(model, cl));
  const int L = static_cast<int>(model.layers.size());
  if (cfg.pp < 1 || cfg.dp < 1 || cfg.micro_batches < 1 || cfg.virtual_stages < 1 ||
      int64_t{cfg.pp} * cfg.dp > cl.chips()) {
    return InvalidArgumentError("bad configuration pp " + std::to_string(cfg.pp) + " dp " +
                                std::to_string(cfg.dp) + " for " + std::to_string(cl.chips()) +
                                " chips");
  }
  if (static_cast<int>(bounds.size()) != cfg.chunks() + 1 || bounds.front() != 0 ||
      bounds.back() != L) {
    return InvalidArgumentError("boundaries must list " + std::to_string(cfg.chunks() + 1) +
                                " layer indices from 0 to " + std::to_string(L));
  }
  for (size_t c = 0; c + 1 < bounds.size(); ++c) {
    if (bounds[c] >= bounds[c + 1])
      return InvalidArgumentError("chunk " + std::to_string(c) + " is empty");
  }
  Prefix pre(model);
  Placement pl = MakePlacement(cl, cfg.pp, cfg.dp, cfg.layout);
  ConfigCost cc(model, cl, pre, pl, cfg);
  for (int c = 0; c < cc.C(); ++c) {
    if (!cc.Fits(c, bounds[c], bounds[c + 1])) {
      return ResourceExhaustedError(
          "chunk " + std::to_string(c) + " (layers " + std::to_string(bounds[c]) + ".." +
          std::to_string(bounds[c + 1] - 1) + ") needs " +
          std::to_string(cc.Memory(c, bounds[c], bounds[c + 1]) / 1e9) + " GB per chip");
    }
  }
  return Describe(model, cl, pl, cc, cfg, bounds);
}

Result<PlanReport> MakePlan(const ModelDesc& model, const ClusterDesc& cl, const PlanOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  WEFT_ASSIGN_OR_RETURN(std::vector<PlanConfig> configs, CandidateConfigs(model, cl, o));
  const int L = static_cast<int>(model.layers.size());
  Prefix pre(model);
  const double total_flops = model.TotalFlopsPerSample();
  const double total_state = pre.params[L] * (1 + model.state_bytes_per_param_byte);

  // A lower bound per configuration (all compute, perfectly balanced, free links), to solve the
  // promising ones first and skip those that cannot reach the current top list.
  std::vector<std::pair<double, size_t>> order;
  for (size_t k = 0; k < configs.size(); ++k) {
    const PlanConfig& c = configs[k];
    if (total_state / c.pp > cl.chip_memory_bytes) continue;  // cannot fit even if balanced
    double b = double(model.global_batch) / (double(c.dp) * c.micro_batches);
    double t = b * total_flops / cl.EffectiveFlops() + 2 * L * cl.layer_overhead_s;
    double lb = c.schedule == ScheduleKind::kInterleaved
                    ? (double(c.micro_batches) * c.virtual_stages + c.pp - 1) * t / c.chunks()
                    : t + (c.micro_batches - 1) * t / c.pp;
    order.emplace_back(lb, k);
  }
  std::stable_sort(order.begin(), order.end());

  struct Key {
    int pp, dp, layout, v;
    auto operator<=>(const Key&) const = default;
  };
  std::map<Key, Plan> best_per_key;
  const size_t keep = static_cast<size_t>(std::max(1, o.alternatives + 1));
  auto kth_best = [&]() {
    if (best_per_key.size() < keep) return kInf;
    std::vector<double> v;
    for (auto& [k, p] : best_per_key) v.push_back(p.cost.step_s);
    std::nth_element(v.begin(), v.begin() + (keep - 1), v.end());
    return v[keep - 1];
  };
  double bound = kInf;
  std::map<std::tuple<int, int, int>, std::unique_ptr<Placement>> placements;
  PlanReport report;
  report.configs_total = static_cast<int64_t>(configs.size());
  std::vector<int> bounds;

  for (const auto& [lb, k] : order) {
    if (lb >= bound) break;
    const PlanConfig& cfg = configs[k];
    // GPipe and 1F1B share a key: they cost the same time and 1F1B needs less memory.
    Key key{cfg.pp, cfg.dp, int(cfg.layout), cfg.virtual_stages};
    auto it = best_per_key.find(key);
    // Ties on time are still solved, since a tie with less memory replaces the key's plan.
    double cfg_bound = std::min(bound, it == best_per_key.end() ? kInf : it->second.cost.step_s);
    if (lb > cfg_bound || (lb == cfg_bound && it == best_per_key.end())) continue;
    auto& pl = placements[{cfg.pp, cfg.dp, int(cfg.layout)}];
    if (!pl) pl = std::make_unique<Placement>(MakePlacement(cl, cfg.pp, cfg.dp, cfg.layout));
    ConfigCost cc(model, cl, pre, *pl, cfg);
    ++report.configs_solved;

    std::vector<int> best_bounds;
    double best_j = cfg_bound;
    if (!o.pin_stage_layers.empty()) {
      std::vector<int> b = {0};
      for (int n : o.pin_stage_layers) b.push_back(b.back() + n);
      bool fits = true;
      for (int c = 0; c < cc.C(); ++c) fits = fits && cc.Fits(c, b[c], b[c + 1]);
      if (fits) {
        Plan p = Describe(model, cl, *pl, cc, cfg, b);
        if (p.cost.step_s < best_j) {
          best_j = p.cost.step_s;
          best_bounds = b;
        }
      }
    } else {
      // Candidate thresholds: every chunk's compute and every cut's transfer time. Transfers and
      // all-reduces depend on the chunk only through its link class and all-reduce cost, so one
      // representative chunk per distinct class stands for all.
      std::vector<double> taus, xis = {0};
      const int C = cc.C();
      std::vector<int> cut_reps, ar_reps;
      for (int c = 0; c + 1 < C; ++c) {
        bool seen = false;
        for (int r : cut_reps)
          seen = seen || pl->cut_link[cc.stage(r)] == pl->cut_link[cc.stage(c)];
        if (!seen) cut_reps.push_back(c);
      }
      for (int c = 0; c < C && cfg.dp > 1; ++c) {
        bool seen = false;
        for (int r : ar_reps) {
          const CollectiveCost &a = pl->ar[cc.stage(r)], &b = pl->ar[cc.stage(c)];
          seen = seen || (a.alpha_s == b.alpha_s && a.beta_s_per_byte == b.beta_s_per_byte);
        }
        if (!seen) ar_reps.push_back(c);
      }
      for (int j = 1; j <= L; ++j) {
        for (int i = j - 1; i >= 0 && j - i <= L - C + 1; --i) {
          taus.push_back(cc.Comp(i, j));
          for (int c : ar_reps) {
            double x = cc.X(c, i, j);
            if (x > 0) xis.push_back(x);
          }
        }
        for (int c : cut_reps) taus.push_back(2 * cc.Transfer(c, j));
      }
      std::sort(taus.begin(), taus.end());
      taus.erase(std::unique(taus.begin(), taus.end()), taus.end());
      std::sort(xis.begin(), xis.end());
      xis.erase(std::unique(xis.begin(), xis.end()), xis.end());
      const double K = cc.K();
      if (K == 0) taus = {kInf};
      // Smallest feasible tau (feasibility only grows with tau).
      if (cc.Solve(taus.back(), kInf, nullptr) == kInf) continue;  // nothing fits in memory
      size_t lo = 0, hi = taus.size() - 1;
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cc.Solve(taus[mid], kInf, nullptr) < kInf)
          hi = mid;
        else
          lo = mid + 1;
      }
      const size_t first = lo;
      const double a_lb = cc.Solve(kInf, kInf, nullptr);
      std::vector<int> cand;
      for (size_t t = first; t < taus.size(); ++t) {
        double tau = taus[t];
        if (a_lb + K * tau >= best_j) break;
        double a_tau = cc.Solve(tau, kInf, nullptr);
        if (a_tau == kInf || a_tau + K * tau >= best_j) continue;
        for (double xi : xis) {
          if (a_tau + K * tau + xi >= best_j) break;
          double a = cc.Solve(tau, xi, &cand);
          if (a == kInf) continue;
          // Re-cost the partition itself: its real maxima may sit below the thresholds.
          double sum_a = 0, mb = 0, mx = 0;
          for (int c = 0; c < C; ++c) {
            sum_a += cc.A(c, cand[c], cand[c + 1]);
            mb = std::max(mb, cc.Bneck(c, cand[c], cand[c + 1]));
            mx = std::max(mx, cc.X(c, cand[c], cand[c + 1]));
          }
          double j = sum_a + K * mb + mx;
          if (j < best_j) {
            best_j = j;
            best_bounds = cand;
          }
          if (a <= a_tau) break;  // a larger xi cannot lower the sum further
        }
      }
    }
    if (best_bounds.empty()) continue;
    Plan p = Describe(model, cl, *pl, cc, cfg, best_bounds);
    if (it == best_per_key.end() || p.cost.step_s < it->second.cost.step_s ||
        (p.cost.step_s == it->second.cost.step_s &&
         p.cost.max_memory_bytes < it->second.cost.max_memory_bytes)) {
      best_per_key[key] = std::move(p);
    }
    bound = kth_best();
  }
  if (best_per_key.empty()) {
    return ResourceExhaustedError("no partition of " + model.name + " fits in the " +
                                  std::to_string(cl.chip_memory_bytes / 1e9) +
                                  " GB of a chip on cluster " + cl.name + " with the given pins");
  }
  std::vector<Plan> all;
  for (auto& [k, p] : best_per_key) all.push_back(std::move(p));
  // Ties go to the simpler plan: fewer stages, then less memory.
  std::stable_sort(all.begin(), all.end(), [](const Plan& a, const Plan& b) {
    if (a.cost.step_s != b.cost.step_s) return a.cost.step_s < b.cost.step_s;
    if (a.config.pp != b.config.pp) return a.config.pp < b.config.pp;
    return a.cost.max_memory_bytes < b.cost.max_memory_bytes;
  });
  report.best = all[0];
  for (size_t i = 1; i < all.size() && static_cast<int>(i) <= o.alternatives; ++i) {
    report.alternatives.push_back(all[i]);
  }
  report.search_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace weft::runtime::planner
