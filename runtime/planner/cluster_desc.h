// Cluster descriptions as data: hosts, chips per host, a chip's speed and memory, and the link
// classes joining chips (each with latency α and bandwidth, i.e. inverse bandwidth β), read from
// JSON (clusters/*.json). Part of weft_planner (depends only on weft_base).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/status.h"

namespace weft::runtime::planner {

// A class of link. Chips are numbered 0 … chips-1 host by host; a link class joins the chips of
// each aligned block of `span` consecutive chips (span = chips_per_host: the intra-host fabric;
// span = all chips: the outermost network). Two chips talk over the innermost class whose block
// holds both.
struct LinkClass {
  std::string name;
  int64_t span = 0;
  double alpha_s = 0;          // per-message latency, seconds
  double beta_s_per_byte = 0;  // inverse bandwidth per chip, seconds per byte
};

// Cost of an all-reduce as α + bytes·β (linear in the message size).
struct CollectiveCost {
  double alpha_s = 0;
  double beta_s_per_byte = 0;
  double Time(double bytes) const { return alpha_s + bytes * beta_s_per_byte; }
};

// A cluster. A value type. Links are ordered innermost first; spans strictly increase, each
// divides the next, and the last spans every chip.
struct ClusterDesc {
  std::string name;
  int64_t hosts = 0;
  int64_t chips_per_host = 0;
  double chip_flops = 0;       // peak floating-point operations per second
  double chip_efficiency = 1;  // fraction of peak the model's kernels reach
  double chip_memory_bytes = 0;
  double layer_overhead_s = 0;  // fixed cost of one layer's forward or backward on a micro-batch
  std::vector<LinkClass> links;

  int64_t chips() const { return hosts * chips_per_host; }
  double EffectiveFlops() const { return chip_flops * chip_efficiency; }
  // Index into `links` of the class joining chips a != b.
  int LinkIndex(int64_t a, int64_t b) const;
  // Hierarchical ring all-reduce over `chips` (reduce-scatter inward, all-reduce across, then
  // all-gather): Σ_k 2(n_k−1)·α_k + bytes·Σ_k 2(n_k−1)/(n_0…n_k)·β_k, where n_k is the number of
  // level-(k−1) blocks per level-k block the group touches. Zero for a single chip.
  CollectiveCost AllReduceCost(const std::vector<int64_t>& chips) const;
};

// JSON form:
//   {"name": "...", "hosts": 128, "chips_per_host": 8,
//    "chip": {"flops": 312e12, "efficiency": 0.5, "memory_bytes": 80e9, "layer_overhead_us": 0},
//    "links": [{"name": "nvlink", "span": 8, "alpha_us": 3, "bandwidth_GBps": 300}, ...]}
// ("span": "host" and "all" are accepted too). Errors name the field.
Result<ClusterDesc> ClusterFromJson(const Json& json);
Result<ClusterDesc> LoadCluster(const std::string& path);
Json ClusterToJson(const ClusterDesc& cluster);

}  // namespace weft::runtime::planner
