// Gang placement by link class. Selection at each level (switch, host, node) is the same rule:
// one group that holds everything (the tightest such, to keep larger groups for larger jobs), or
// else the largest groups first, with the last pick a best fit for what remains. Fewer groups at a
// level means fewer ranks talking over that level's slower links.
#include "scheduler/placement.h"

#include <algorithm>
#include <map>

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

bool PlaceGang(const GangRequest& request, const std::vector<NodeSlot>& candidates,
               GangPlacement* out, std::string* why) {
  *out = GangPlacement();
  const int need = request.ranks;
  if (need <= 0) {
    *why = "no ranks requested";
    return false;
  }
  // Level 0: nodes (capacity honouring ranks_per_node).
  std::vector<Group> nodes;
  nodes.reserve(candidates.size());
  for (const NodeSlot& c : candidates) {
    int cap = c.capacity;
    if (request.ranks_per_node > 0)
      cap = cap >= request.ranks_per_node ? request.ranks_per_node : 0;
    nodes.push_back(Group{cap, c.node->register_seq, {}});
  }
  // Level 1: hosts; level 2: switches. Keyed by id, ordered by first registration.
  std::vector<Group> hosts, switches;
  std::map<std::string, size_t> host_of, switch_of;
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return candidates[a].node->register_seq < candidates[b].node->register_seq;
  });
  std::map<size_t, std::string> host_switch;  // host index -> its switch (first node's)
  for (size_t i : order) {
    const Node& n = *candidates[i].node;
    // Hosts are keyed by switch too: one host id on two switches is a misconfiguration we keep
    // apart rather than merge.
    std::string hkey = n.switch_id + '\0' + (n.host_id.empty() ? n.node_id : n.host_id);
    auto [hit, hnew] = host_of.emplace(hkey, hosts.size());
    if (hnew) hosts.push_back(Group{0, n.register_seq, {}});
    Group& h = hosts[hit->second];
    h.capacity += nodes[i].capacity;
    h.members.push_back(i);
    if (hnew) {
      auto [sit, snew] = switch_of.emplace(n.switch_id, switches.size());
      if (snew) switches.push_back(Group{0, n.register_seq, {}});
      switches[sit->second].members.push_back(hit->second);
    }
  }
  int total = 0;
  for (Group& s : switches) {
    s.capacity = 0;
    for (size_t h : s.members) s.capacity += hosts[h].capacity;
    total += s.capacity;
  }
  if (total < need) {
    *why =
        "needs " + std::to_string(need) + " ranks" +
        (request.ranks_per_node > 0 ? " (" + std::to_string(request.ranks_per_node) + " per node)"
                                    : std::string()) +
        "; " + std::to_string(total) + " fit on " + std::to_string(candidates.size()) +
        " ready nodes now";
    return false;
  }
  auto sub = [](const std::vector<Group>& all, const std::vector<size_t>& members) {
    std::vector<Group> v;
    v.reserve(members.size());
    for (size_t m : members) v.push_back(all[m]);
    return v;
  };
  int next_rank = 0;
  auto place_host = [&](const Group& h, int htake) {
    std::vector<Group> hnodes = sub(nodes, h.members);
    out->hosts_used++;
    for (auto [ni, ntake] : Select(hnodes, htake)) {
      const Node& node = *candidates[h.members[ni]].node;
      out->nodes_used++;
      for (int l = 0; l < ntake; ++l) {
        out->ranks.push_back(RankPlacement{next_rank++, node.node_id, l});
      }
    }
  };
  // Same host beats same switch: if one host holds the whole gang, use the tightest such host.
  size_t best_host = hosts.size();
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (hosts[i].capacity >= need &&
        (best_host == hosts.size() || hosts[i].capacity < hosts[best_host].capacity)) {
      best_host = i;
    }
  }
  if (best_host != hosts.size()) {
    out->switches_used = 1;
    place_host(hosts[best_host], need);
    return true;
  }
  for (auto [si, stake] : Select(switches, need)) {
    const Group& s = switches[si];
    std::vector<Group> shosts = sub(hosts, s.members);
    out->switches_used++;
    for (auto [hi, htake] : Select(shosts, stake)) place_host(shosts[hi], htake);
  }
  if (next_rank != need) {
    // ranks_per_node leaves no partial nodes, so the sums above are exact; anything else is a bug.
    *why = "internal placement error";
    out->ranks.clear();
    return false;
  }
  return true;
}

}  // namespace weft::scheduler
