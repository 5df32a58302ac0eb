#include "collectives/link_probe.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/env.h"

namespace weft::collectives {
namespace {

WEFT_ENV_KNOB(kProbeKnob, "WEFT_PROBE_LINKS", "0",
              "1: every communicator measures alpha/beta of its link classes when created and "
              "the tuner uses them (weft topo --probe prints them)");

constexpr size_t kNameSlot = 16;
constexpr int kProbeTagBase = 0x70000;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Status WaitWork(Result<Work> w, const char* what) {
  if (!w.ok()) return w.status().WithContext(what);
  return w->Wait().WithContext(what);
}

// Round trips of `bytes` between this rank and `peer`; `lead` sends first and returns the
// measured round-trip times in microseconds.
Result<std::vector<double>> PingPong(Communicator& comm, int peer, bool lead, size_t bytes,
                                     int warmup, int iters, int tag) {
  std::vector<uint8_t> buf(std::max<size_t>(bytes, 1), static_cast<uint8_t>(comm.rank()));
  std::vector<double> rtt;
  int64_t n = static_cast<int64_t>(bytes);
  for (int i = 0; i < warmup + iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    if (lead) {
      WEFT_RETURN_IF_ERROR(
          WaitWork(comm.Send(buf.data(), n, DType::kUint8, peer, tag), "probe send"));
      WEFT_RETURN_IF_ERROR(
          WaitWork(comm.Recv(buf.data(), n, DType::kUint8, peer, tag), "probe recv"));
    } else {
      WEFT_RETURN_IF_ERROR(
          WaitWork(comm.Recv(buf.data(), n, DType::kUint8, peer, tag), "probe recv"));
      WEFT_RETURN_IF_ERROR(
          WaitWork(comm.Send(buf.data(), n, DType::kUint8, peer, tag), "probe send"));
    }
    auto t1 = std::chrono::steady_clock::now();
    if (i >= warmup) rtt.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return rtt;
}

}  // namespace

bool ProbeLinksRequested() { return kProbeKnob.GetBool(); }

Result<std::vector<std::vector<std::string>>> TransportMatrix(Communicator& comm) {
  const int n = comm.world_size();
  std::vector<char> mine(static_cast<size_t>(n) * kNameSlot, 0);
  for (int p = 0; p < n; ++p) {
    std::string t = comm.transport_of(p).substr(0, kNameSlot - 1);
    std::memcpy(mine.data() + p * kNameSlot, t.data(), t.size());
  }
  std::vector<char> all(mine.size() * n, 0);
  WEFT_RETURN_IF_ERROR(WaitWork(
      comm.AllGather(mine.data(), all.data(), static_cast<int64_t>(mine.size()), DType::kUint8),
      "gathering transports"));
  std::vector<std::vector<std::string>> out(n, std::vector<std::string>(n));
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      const char* s = all.data() + (static_cast<size_t>(a) * n + b) * kNameSlot;
      out[a][b] = std::string(s, strnlen(s, kNameSlot));
    }
  }
  return out;
}

Result<LinkModels> ProbeLinks(Communicator& comm,
                              const std::vector<std::vector<std::string>>& transports,
                              const ProbeOptions& options) {
  const int n = comm.world_size();
  if (options.small_iters < 1 || options.large_iters < 1 ||
      options.large_bytes <= options.small_bytes) {
    return InvalidArgumentError("link probe: need iterations >= 1 and large_bytes > small_bytes");
  }
  // Classes in the order of their first pair; every rank computes the same list.
  LinkModels models;
  for (int a = 0; a < n; ++a) {
    for (int b = a + 1; b < n; ++b) {
      LinkClass c{comm.host_of(a) == comm.host_of(b), transports[a][b]};
      if (models.Find(c) != nullptr) continue;
      MeasuredLink m;
      m.link_class = c;
      m.rank_a = a;
      m.rank_b = b;
      m.small_bytes = options.small_bytes;
      m.large_bytes = options.large_bytes;
      m.small_iters = options.small_iters;
      m.large_iters = options.large_iters;
      models.links.push_back(m);
    }
  }
  for (size_t i = 0; i < models.links.size(); ++i) {
    MeasuredLink& m = models.links[i];
    double result[2] = {0, 0};  // alpha_us, beta_us_per_byte, computed by rank_a
    int me = comm.rank();
    if (me == m.rank_a || me == m.rank_b) {
      bool lead = me == m.rank_a;
      int peer = lead ? m.rank_b : m.rank_a;
      int tag = kProbeTagBase + static_cast<int>(2 * i);
      WEFT_ASSIGN_OR_RETURN(
          auto small, PingPong(comm, peer, lead, options.small_bytes,
                               std::max(1, options.small_iters / 10), options.small_iters, tag));
      WEFT_ASSIGN_OR_RETURN(auto large, PingPong(comm, peer, lead, options.large_bytes, 2,
                                                 options.large_iters, tag + 1));
      double alpha = Median(small) / 2;
      double t_large = Median(large) / 2;
      double extra = static_cast<double>(options.large_bytes - options.small_bytes);
      result[0] = alpha;
      result[1] = std::max(0.0, t_large - alpha) / extra;
    }
    WEFT_RETURN_IF_ERROR(WaitWork(comm.Broadcast(result, result, 2, DType::kFloat64, m.rank_a),
                                  "sharing link measurements"));
    m.model.alpha_us = result[0];
    m.model.beta_us_per_byte = result[1];
  }
  return models;
}

}  // namespace weft::collectives
