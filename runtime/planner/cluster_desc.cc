// Cluster descriptions: JSON, link lookup and the all-reduce cost model.
#include "runtime/planner/cluster_desc.h"

#include <algorithm>
#include <set>

namespace weft::runtime::planner {

int ClusterDesc::LinkIndex(int64_t a, int64_t b) const {
  for (size_t k = 0; k < links.size(); ++k) {
    if (a / links[k].span == b / links[k].span) return static_cast<int>(k);
  }
  return static_cast<int>(links.size()) - 1;
}

CollectiveCost ClusterDesc::AllReduceCost(const std::vector<int64_t>& chips) const {
  CollectiveCost c;
  if (chips.size() < 2) return c;
  double product = 1;
  size_t inner_blocks = chips.size();  // blocks of the level below (level -1: the chips)
  for (const LinkClass& l : links) {
    std::set<int64_t> blocks;
    for (int64_t chip : chips) blocks.insert(chip / l.span);
    double n = static_cast<double>(inner_blocks) / static_cast<double>(blocks.size());
    if (n > 1) {
      product *= n;
      c.alpha_s += 2 * (n - 1) * l.alpha_s;
      c.beta_s_per_byte += 2 * (n - 1) / product * l.beta_s_per_byte;
    }
    inner_blocks = blocks.size();
    if (inner_blocks == 1) break;
  }
  return c;
}

namespace {

Result<double> Positive(const Json& j, std::string_view key, const std::string& what) {
  WEFT_ASSIGN_OR_RETURN(double v, j.GetNumber(key, what));
  if (!(v > 0)) {
    return InvalidArgumentError(what + ": \"" + std::string(key) + "\" must be positive, got " +
                                Json(v).Dump());
  }
  return v;
}

}  // namespace

Result<ClusterDesc> ClusterFromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgumentError("cluster: expected a JSON object");
  ClusterDesc c;
  c.name = json.StringOr("name", "cluster");
  std::string what = "cluster " + c.name;
  WEFT_ASSIGN_OR_RETURN(c.hosts, json.GetInt("hosts", what));
  WEFT_ASSIGN_OR_RETURN(c.chips_per_host, json.GetInt("chips_per_host", what));
  if (c.hosts < 1 || c.chips_per_host < 1 || c.chips() > (int64_t{1} << 24)) {
    return InvalidArgumentError(what + ": hosts and chips_per_host must be positive (got " +
                                std::to_string(c.hosts) + " and " +
                                std::to_string(c.chips_per_host) + ")");
  }
  const Json* chip = json.Find("chip");
  if (!chip || !chip->is_object()) return InvalidArgumentError(what + ": missing \"chip\" object");
  WEFT_ASSIGN_OR_RETURN(c.chip_flops, Positive(*chip, "flops", what + ", chip"));
  c.chip_efficiency = chip->NumberOr("efficiency", 1);
  if (!(c.chip_efficiency > 0 && c.chip_efficiency <= 1)) {
    return InvalidArgumentError(what + ", chip: \"efficiency\" must be in (0, 1]");
  }
  WEFT_ASSIGN_OR_RETURN(c.chip_memory_bytes, Positive(*chip, "memory_bytes", what + ", chip"));
  c.layer_overhead_s = chip->NumberOr("layer_overhead_us", 0) * 1e-6;
  if (!(c.layer_overhead_s >= 0)) {
    return InvalidArgumentError(what + ", chip: \"layer_overhead_us\" must be >= 0");
  }
  WEFT_ASSIGN_OR_RETURN(const Json::Array* links, json.GetArray("links", what));
  if (links->empty()) return InvalidArgumentError(what + ": no links");
  for (size_t i = 0; i < links->size(); ++i) {
    const Json& lj = (*links)[i];
    LinkClass l;
    l.name = lj.StringOr("name", "link" + std::to_string(i));
    std::string lw = what + ", link " + l.name;
    const Json* span = lj.Find("span");
    if (span && span->is_string() && span->as_string() == "host") {
      l.span = c.chips_per_host;
    } else if (span && span->is_string() && span->as_string() == "all") {
      l.span = c.chips();
    } else {
      WEFT_ASSIGN_OR_RETURN(l.span, lj.GetInt("span", lw));
    }
    WEFT_ASSIGN_OR_RETURN(double alpha_us, lj.GetNumber("alpha_us", lw));
    if (alpha_us < 0) return InvalidArgumentError(lw + ": alpha_us must be >= 0");
    WEFT_ASSIGN_OR_RETURN(double gbps, Positive(lj, "bandwidth_GBps", lw));
    l.alpha_s = alpha_us * 1e-6;
    l.beta_s_per_byte = 1.0 / (gbps * 1e9);
    int64_t prev = c.links.empty() ? 1 : c.links.back().span;
    if (l.span <= prev || l.span % prev != 0 || c.chips() % l.span != 0) {
      return InvalidArgumentError(lw + ": span " + std::to_string(l.span) +
                                  " must exceed and be a multiple of the previous span (" +
                                  std::to_string(prev) + ") and divide the chip count (" +
                                  std::to_string(c.chips()) + ")");
    }
    c.links.push_back(l);
  }
  if (c.links.back().span != c.chips()) {
    return InvalidArgumentError(what + ": the last link class must span all " +
                                std::to_string(c.chips()) + " chips, got span " +
                                std::to_string(c.links.back().span));
  }
  return c;
}

Result<ClusterDesc> LoadCluster(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(Json j, ParseJsonFile(path));
  Result<ClusterDesc> c = ClusterFromJson(j);
  if (!c.ok()) return c.status().WithContext(path);
  return c;
}

Json ClusterToJson(const ClusterDesc& c) {
  Json j = Json::MakeObject();
  j.Set("name", c.name);
  j.Set("hosts", c.hosts);
  j.Set("chips_per_host", c.chips_per_host);
  Json chip = Json::MakeObject();
  chip.Set("flops", c.chip_flops);
  chip.Set("efficiency", c.chip_efficiency);
  chip.Set("memory_bytes", c.chip_memory_bytes);
  chip.Set("layer_overhead_us", c.layer_overhead_s * 1e6);
  j.Set("chip", chip);
  Json links = Json::MakeArray();
  for (const LinkClass& l : c.links) {
    Json lj = Json::MakeObject();
    lj.Set("name", l.name);
    lj.Set("span", l.span);
    lj.Set("alpha_us", l.alpha_s * 1e6);
    lj.Set("bandwidth_GBps", 1.0 / l.beta_s_per_byte / 1e9);
    links.Push(lj);
  }
  j.Set("links", links);
  return j;
}

}  // namespace weft::runtime::planner
