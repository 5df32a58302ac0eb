// Gang placement by link class. Selection at each level (switch, host, node) is the same rule:
// one group that holds everything (the tightest such, to keep larger groups for larger jobs), or
// else the largest groups first, with the last pick a best fit for what remains. Fewer groups at a
// level means fewer ranks talking over that level's slower links. A job's rank groups (a plan's
// stage replicas or pipelines) are kept whole by running the same selection in units of a group
// at the level that must hold each group (host, else switch): a level's capacity is then its
// whole groups, never a sum of fragments.
#include "scheduler/placement.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace weft::scheduler {

namespace {

struct Group {
  int capacity = 0;
  int64_t order = 0;            // registration order of its first node
  std::vector<size_t> members;  // indexes into the level below
};

// Picks groups covering `need`; returns (group index, amount taken) in rank order.
std::vector<std::pair<size_t, int>> Select(const std::vector<Group>& groups, int need) {
  std::vector<std::pair<size_t, int>> picked;
  // One group holds it all: the tightest fit.
  size_t best = groups.size();
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].capacity < need) continue;
    if (best == groups.size() || groups[i].capacity < groups[best].capacity ||
        (groups[i].capacity == groups[best].capacity && groups[i].order < groups[best].order)) {
      best = i;
    }
  }
  if (best != groups.size()) {
    picked.emplace_back(best, need);
    return picked;
  }
  std::vector<size_t> idx;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].capacity > 0) idx.push_back(i);
  }
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (groups[a].capacity != groups[b].capacity) return groups[a].capacity > groups[b].capacity;
    return groups[a].order < groups[b].order;
  });
  std::vector<bool> used(groups.size(), false);
  int left = need;
  for (size_t k = 0; k < idx.size() && left > 0; ++k) {
    size_t i = idx[k];
    if (used[i]) continue;
    if (groups[i].capacity >= left) {
      // Best fit among the rest for the remainder.
      size_t fit = i;
      for (size_t m = k + 1; m < idx.size(); ++m) {
        size_t j = idx[m];
        if (!used[j] && groups[j].capacity >= left && groups[j].capacity < groups[fit].capacity) {
          fit = j;
        }
      }
      picked.emplace_back(fit, left);
      used[fit] = true;
      left = 0;
      break;
    }
    picked.emplace_back(i, groups[i].capacity);
    used[i] = true;
    left -= groups[i].capacity;
  }
  return picked;
}

}  // namespace

int RanksThatFit(int free_slots, int64_t free_memory, int64_t memory_per_rank) {
  if (free_slots <= 0) return 0;
  if (memory_per_rank <= 0) return free_slots;
  if (free_memory <= 0) return 0;
  int64_t by_mem = free_memory / memory_per_rank;
  return static_cast<int>(std::min<int64_t>(free_slots, by_mem));
}

const char* LinkClassName(LinkClass c) {
  switch (c) {
    case LinkClass::kHost:
      return "host";
    case LinkClass::kSwitch:
      return "switch";
    case LinkClass::kSpine:
      return "spine";
  }
  return "?";
}

LinkClass LinkBetween(const Node& a, const Node& b) {
  if (a.switch_id != b.switch_id) return LinkClass::kSpine;
  const std::string& ha = a.host_id.empty() ? a.node_id : a.host_id;
  const std::string& hb = b.host_id.empty() ? b.node_id : b.host_id;
  return ha == hb ? LinkClass::kHost : LinkClass::kSwitch;
}

namespace {

// The candidates as a tree of switches, hosts and nodes; capacities in ranks.
struct Topology {
  std::vector<Group> nodes, hosts, switches;
  int total = 0;
};

Topology BuildTopology(const GangRequest& request, const std::vector<NodeSlot>& candidates) {
  Topology t;
  // Level 0: nodes (capacity honouring ranks_per_node).
  t.nodes.reserve(candidates.size());
  for (const NodeSlot& c : candidates) {
    int cap = c.capacity;
    if (request.ranks_per_node > 0)
      cap = cap >= request.ranks_per_node ? request.ranks_per_node : 0;
    t.nodes.push_back(Group{cap, c.node->register_seq, {}});
  }
  // Level 1: hosts; level 2: switches. Keyed by id, ordered by first registration.
  std::map<std::string, size_t> host_of, switch_of;
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return candidates[a].node->register_seq < candidates[b].node->register_seq;
  });
  for (size_t i : order) {
    const Node& n = *candidates[i].node;
    // Hosts are keyed by switch too: one host id on two switches is a misconfiguration we keep
    // apart rather than merge.
    std::string hkey = n.switch_id + '\0' + (n.host_id.empty() ? n.node_id : n.host_id);
    auto [hit, hnew] = host_of.emplace(hkey, t.hosts.size());
    if (hnew) t.hosts.push_back(Group{0, n.register_seq, {}});
    Group& h = t.hosts[hit->second];
    h.capacity += t.nodes[i].capacity;
    h.members.push_back(i);
    if (hnew) {
      auto [sit, snew] = switch_of.emplace(n.switch_id, t.switches.size());
      if (snew) t.switches.push_back(Group{0, n.register_seq, {}});
      t.switches[sit->second].members.push_back(hit->second);
    }
  }
  for (Group& s : t.switches) {
    for (size_t h : s.members) s.capacity += t.hosts[h].capacity;
    t.total += s.capacity;
  }
  return t;
}

// The level that must hold each unit of ranks whole.
enum class Keep { kHost, kSwitch };

// Places `need` ranks as need/unit units of `unit` consecutive ranks, each unit whole on one host
// (kHost) or within one switch (kSwitch); unit 1 with kHost is plain packing. A level at or above
// the one that keeps units counts its capacity in whole units. Returns false, leaving `out`
// untouched, when the units do not fit.
bool PlaceUnits(const Topology& t, const std::vector<NodeSlot>& candidates, int need, int unit,
                Keep keep, GangPlacement* out) {
  const int need_units = need / unit;
  // Host capacities in whole units when hosts keep units; in ranks otherwise.
  const int host_scale = keep == Keep::kHost ? unit : 1;
  std::vector<Group> hosts = t.hosts;
  if (host_scale > 1) {
    for (Group& h : hosts) h.capacity /= unit;
  }
  std::vector<Group> switches = t.switches;
  int total_units = 0;
  for (Group& s : switches) {
    if (keep == Keep::kHost) {
      s.capacity = 0;
      for (size_t h : s.members) s.capacity += hosts[h].capacity;
    } else {
      s.capacity /= unit;
    }
    total_units += s.capacity;
  }
  if (total_units < need_units) return false;

  GangPlacement p;
  auto sub = [](const std::vector<Group>& all, const std::vector<size_t>& members) {
    std::vector<Group> v;
    v.reserve(members.size());
    for (size_t m : members) v.push_back(all[m]);
    return v;
  };
  int next_rank = 0;
  auto place_host = [&](const Group& h, int htake) {
    std::vector<Group> hnodes = sub(t.nodes, h.members);
    p.hosts_used++;
    for (auto [ni, ntake] : Select(hnodes, htake * host_scale)) {
      const Node& node = *candidates[h.members[ni]].node;
      p.nodes_used++;
      for (int l = 0; l < ntake; ++l) {
        p.ranks.push_back(RankPlacement{next_rank++, node.node_id, l});
      }
    }
  };
  // Same host beats same switch: if one host holds the whole gang, use the tightest such host.
  const int host_need = need / host_scale;
  size_t best_host = hosts.size();
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (hosts[i].capacity >= host_need &&
        (best_host == hosts.size() || hosts[i].capacity < hosts[best_host].capacity)) {
      best_host = i;
    }
  }
  if (best_host != hosts.size()) {
    p.switches_used = 1;
    place_host(hosts[best_host], host_need);
  } else {
    for (auto [si, stake] : Select(switches, need_units)) {
      std::vector<Group> shosts = sub(hosts, switches[si].members);
      p.switches_used++;
      const int shost_need = keep == Keep::kHost ? stake : stake * unit;
      for (auto [hi, htake] : Select(shosts, shost_need)) place_host(shosts[hi], htake);
    }
  }
  // Every pick is at most its group's capacity and the capacities cover the need, so the sums
  // above are exact; anything else is a bug.
  WEFT_CHECK(next_rank == need);
  p.aligned = out->aligned;
  p.note = std::move(out->note);
  *out = std::move(p);
  return true;
}

}  // namespace

bool PlaceGang(const GangRequest& request, const std::vector<NodeSlot>& candidates,
               GangPlacement* out, std::string* why) {
  *out = GangPlacement();
  const int need = request.ranks;
  if (need <= 0) {
    *why = "no ranks requested";
    return false;
  }
  const Topology t = BuildTopology(request, candidates);
  if (t.total < need) {
    *why =
        "needs " + std::to_string(need) + " ranks" +
        (request.ranks_per_node > 0 ? " (" + std::to_string(request.ranks_per_node) + " per node)"
                                    : std::string()) +
        "; " + std::to_string(t.total) + " fit on " + std::to_string(candidates.size()) +
        " ready nodes now";
    return false;
  }
  const int group = std::max(1, request.group);
  if (group == 1) {
    PlaceUnits(t, candidates, need, 1, Keep::kHost, out);
    return true;
  }
  // A unit is the least run of whole groups that also fills whole nodes under ranks_per_node.
  const int unit = request.ranks_per_node > 0 ? std::lcm(group, request.ranks_per_node) : group;
  const std::string groups_text =
      std::to_string(need / group) + " groups of " + std::to_string(group) + " ranks" +
      (unit != group ? " (in runs of " + std::to_string(unit) + " filling whole nodes of " +
                           std::to_string(request.ranks_per_node) + ")"
                     : std::string());
  int max_host = 0, max_switch = 0, host_units = 0, switch_units = 0;
  for (const Group& h : t.hosts) {
    max_host = std::max(max_host, h.capacity);
    host_units += h.capacity / unit;
  }
  for (const Group& s : t.switches) {
    max_switch = std::max(max_switch, s.capacity);
    switch_units += s.capacity / unit;
  }
  std::string short_of;
  if (need % unit != 0) {
    short_of = groups_text + " cannot be kept whole: " + std::to_string(need) +
               " ranks are not a multiple of " + std::to_string(unit);
  } else if (max_host >= unit) {
    if (PlaceUnits(t, candidates, need, unit, Keep::kHost, out)) return true;
    short_of = "only " + std::to_string(host_units * (unit / group)) + " of " + groups_text +
               " fit whole on single hosts now";
  } else {
    // No host takes a group: keeping each within one switch is the best there is.
    out->note = groups_text + " exceed every host's free slots (at most " +
                std::to_string(max_host) + "); each group is kept within one switch";
  }
  if (need % unit == 0 && max_switch >= unit) {
    if (!short_of.empty()) {
      out->aligned = false;
      out->note = short_of + "; each group is kept within one switch";
    }
    if (PlaceUnits(t, candidates, need, unit, Keep::kSwitch, out)) return true;
    short_of = (short_of.empty() ? groups_text + " do not fit whole on single hosts" : short_of) +
               " and only " + std::to_string(switch_units * (unit / group)) +
               " within single switches";
  } else if (short_of.empty()) {
    short_of = groups_text + " exceed every switch's free slots (at most " +
               std::to_string(max_switch) + ")";
  }
  out->aligned = false;
  out->note = short_of + "; placed without keeping groups whole";
  PlaceUnits(t, candidates, need, 1, Keep::kHost, out);
  return true;
}

}  // namespace weft::scheduler
