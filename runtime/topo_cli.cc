#include "runtime/topo_cli.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "base/env.h"
#include "base/json.h"
#include "collectives/communicator.h"
#include "collectives/link_probe.h"

namespace weft::runtime {
namespace {

using collectives::Communicator;

constexpr const char* kUsage =
    "usage: weft topo [--probe] [--json] [--probe-bytes BYTES] [--probe-iters N]\n"
    "  run on every rank (weft run -n 4 -- weft topo); rank 0 prints hosts, ranks, the transport\n"
    "  of every pair and, with --probe (or WEFT_PROBE_LINKS=1), alpha/beta per link class\n";

constexpr size_t kRecordBytes = 256;

struct RankRecord {
  int pid = 0;
  int numa = -1;
  int cpu = -1;
  std::string hostname;
};

std::string EncodeRecord() {
  unsigned cpu = 0, node = 0;
  bool ok = syscall(SYS_getcpu, &cpu, &node, nullptr) == 0;
  char name[128] = {0};
  gethostname(name, sizeof(name) - 1);
  return std::to_string(getpid()) + "|" + (ok ? std::to_string(node) : "-1") + "|" +
         (ok ? std::to_string(cpu) : "-1") + "|" + name;
}

RankRecord DecodeRecord(const char* p) {
  std::string s(p, strnlen(p, kRecordBytes));
  RankRecord r;
  size_t a = s.find('|'), b = s.find('|', a + 1), c = s.find('|', b + 1);
  if (c == std::string::npos) return r;
  r.pid = std::atoi(s.substr(0, a).c_str());
  r.numa = std::atoi(s.substr(a + 1, b - a - 1).c_str());
  r.cpu = std::atoi(s.substr(b + 1, c - b - 1).c_str());
  r.hostname = s.substr(c + 1);
  return r;
}

std::string Join(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

int TopoCommand(const std::vector<std::string>& args) {
  bool probe = collectives::ProbeLinksRequested(), json = false;
  collectives::ProbeOptions po;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    int64_t v = 0;
    if (a == "--probe") {
      probe = true;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--probe-bytes" && i + 1 < args.size() && ParseBytes(args[i + 1], &v) &&
               v > 8) {
      po.large_bytes = static_cast<size_t>(v);
      ++i;
    } else if (a == "--probe-iters" && i + 1 < args.size() && ParseInt(args[i + 1], &v) && v > 0) {
      po.small_iters = static_cast<int>(v);
      po.large_iters = std::max<int>(1, static_cast<int>(v) / 20);
      ++i;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "weft topo: bad argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  auto made = Communicator::FromEnvironment();
  if (!made.ok()) {
    std::fprintf(stderr, "weft topo: %s\n", made.status().ToString().c_str());
    return 1;
  }
  Communicator& comm = **made;
  const int n = comm.world_size();

  std::vector<char> mine(kRecordBytes, 0), all(kRecordBytes * n, 0);
  std::string rec = EncodeRecord().substr(0, kRecordBytes - 1);
  std::memcpy(mine.data(), rec.data(), rec.size());
  auto g = comm.AllGather(mine.data(), all.data(), kRecordBytes, DType::kUint8);
  Status st = g.ok() ? g->Wait() : g.status();
  if (!st.ok()) {
    std::fprintf(stderr, "weft topo: gathering rank records: %s\n", st.ToString().c_str());
    return 1;
  }
  auto transports = collectives::TransportMatrix(comm);
  if (!transports.ok()) {
    std::fprintf(stderr, "weft topo: %s\n", transports.status().ToString().c_str());
    return 1;
  }
  collectives::LinkModels links;
  if (probe) {
    auto m = collectives::ProbeLinks(comm, *transports, po);
    if (!m.ok()) {
      std::fprintf(stderr, "weft topo: link probe: %s\n", m.status().ToString().c_str());
      return 1;
    }
    links = std::move(*m);
  }
  if (comm.rank() != 0) return 0;

  // Hosts in order of their lowest rank.
  std::vector<std::string> host_ids;
  std::map<std::string, int> host_index;
  std::vector<std::vector<int>> host_ranks;
  std::vector<int> host_of(n), local_rank(n);
  for (int r = 0; r < n; ++r) {
    std::string h = comm.host_of(r);
    auto [it, added] = host_index.emplace(h, static_cast<int>(host_ids.size()));
    if (added) {
      host_ids.push_back(h);
      host_ranks.emplace_back();
    }
    host_of[r] = it->second;
    local_rank[r] = static_cast<int>(host_ranks[it->second].size());
    host_ranks[it->second].push_back(r);
  }
  std::vector<RankRecord> recs(n);
  for (int r = 0; r < n; ++r) recs[r] = DecodeRecord(all.data() + kRecordBytes * r);

  if (json) {
    Json out = Json::MakeObject();
    out.Set("world_size", n);
    Json hosts = Json::MakeArray();
    for (size_t h = 0; h < host_ids.size(); ++h) {
      Json o = Json::MakeObject();
      o.Set("index", static_cast<int>(h));
      o.Set("host_id", host_ids[h]);
      o.Set("hostname", recs[host_ranks[h][0]].hostname);
      Json rs = Json::MakeArray();
      for (int r : host_ranks[h]) rs.Push(r);
      o.Set("ranks", std::move(rs));
      hosts.Push(std::move(o));
    }
    out.Set("hosts", std::move(hosts));
    Json ranks = Json::MakeArray();
    for (int r = 0; r < n; ++r) {
      Json o = Json::MakeObject();
      o.Set("rank", r);
      o.Set("host", host_of[r]);
      o.Set("local_rank", local_rank[r]);
      o.Set("local_size", static_cast<int>(host_ranks[host_of[r]].size()));
      o.Set("pid", recs[r].pid);
      o.Set("numa_node", recs[r].numa);
      o.Set("cpu", recs[r].cpu);
      ranks.Push(std::move(o));
    }
    out.Set("ranks", std::move(ranks));
    Json matrix = Json::MakeArray();
    for (int a = 0; a < n; ++a) {
      Json row = Json::MakeArray();
      for (int b = 0; b < n; ++b) row.Push((*transports)[a][b]);
      matrix.Push(std::move(row));
    }
    out.Set("transports", std::move(matrix));
    if (probe) {
      Json ls = Json::MakeArray();
      for (const auto& l : links.links) {
        Json o = Json::MakeObject();
        o.Set("class", l.link_class.Name());
        o.Set("same_host", l.link_class.same_host);
        o.Set("transport", l.link_class.transport);
        o.Set("rank_a", l.rank_a);
        o.Set("rank_b", l.rank_b);
        o.Set("alpha_us", l.model.alpha_us);
        o.Set("beta_us_per_byte", l.model.beta_us_per_byte);
        o.Set("bandwidth_gbps", l.model.BandwidthGBps());
        o.Set("small_bytes", static_cast<int64_t>(l.small_bytes));
        o.Set("large_bytes", static_cast<int64_t>(l.large_bytes));
        o.Set("small_iters", l.small_iters);
        o.Set("large_iters", l.large_iters);
        ls.Push(std::move(o));
      }
      out.Set("links", std::move(ls));
    }
    std::printf("%s\n", out.Dump(2).c_str());
    return 0;
  }

  std::printf(
      "# weft topo: %d ranks on %zu host%s (host = boot id + IPC/net/pid namespaces, or "
      "WEFT_HOST_ID)\n#\n",
      n, host_ids.size(), host_ids.size() == 1 ? "" : "s");
  std::printf("# %4s  %-16s  %-20s  %s\n", "host", "host id", "hostname", "ranks");
  for (size_t h = 0; h < host_ids.size(); ++h) {
    std::printf("  %4zu  %-16s  %-20s  %s\n", h, host_ids[h].c_str(),
                recs[host_ranks[h][0]].hostname.c_str(), Join(host_ranks[h]).c_str());
  }
  std::printf("#\n# %4s  %4s  %-11s  %8s  %4s  %4s\n", "rank", "host", "local/size", "pid", "numa",
              "cpu");
  for (int r = 0; r < n; ++r) {
    std::string local =
        std::to_string(local_rank[r]) + "/" + std::to_string(host_ranks[host_of[r]].size());
    std::printf("  %4d  %4d  %-11s  %8d  %4d  %4d\n", r, host_of[r], local.c_str(), recs[r].pid,
                recs[r].numa, recs[r].cpu);
  }
  std::printf("#\n# transport per pair (row: from rank, column: to rank)\n#     ");
  for (int b = 0; b < n; ++b) std::printf(" %5d", b);
  std::printf("\n");
  for (int a = 0; a < n; ++a) {
    std::printf("  %4d", a);
    for (int b = 0; b < n; ++b) std::printf(" %5s", (*transports)[a][b].c_str());
    std::printf("\n");
  }
  if (probe) {
    std::printf(
        "#\n# links: ping-pong between the first pair of each class; alpha = median "
        "round trip / 2 of %zu B,\n#        beta from %zu B messages\n",
        po.small_bytes, po.large_bytes);
    std::printf("# %-18s  %5s  %10s  %12s  %10s\n", "class", "pair", "alpha(us)", "beta(us/B)",
                "bw(GB/s)");
    for (const auto& l : links.links) {
      std::string pair = std::to_string(l.rank_a) + "-" + std::to_string(l.rank_b);
      std::printf("  %-18s  %5s  %10.2f  %12.4e  %10.3f\n", l.link_class.Name().c_str(),
                  pair.c_str(), l.model.alpha_us, l.model.beta_us_per_byte,
                  l.model.BandwidthGBps());
    }
  }
  return 0;
}

}  // namespace weft::runtime
