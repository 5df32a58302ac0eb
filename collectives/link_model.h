// Link models: the α (latency) and β (inverse bandwidth) of each class of link a communicator
// uses, as measured by runtime/link_probe.h (`weft topo --probe`, WEFT_PROBE_LINKS=1), in the
// form the tuner's α/β cost formulas take. Plain data, header-only; sits in collectives/ so that
// the tuner can read it while the probing itself (which only needs the public API) sits above.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace weft::collectives {

// Time of one message of n bytes over a link: alpha_us + n * beta_us_per_byte.
struct LinkModel {
  double alpha_us = 0;          // one-way latency of a minimal message, microseconds
  double beta_us_per_byte = 0;  // microseconds per byte once streaming (1 / bandwidth)
  double TimeUs(size_t bytes) const {
    return alpha_us + beta_us_per_byte * static_cast<double>(bytes);
  }
  // Bandwidth in GB/s (10^9 bytes per second); 0 when not measured.
  double BandwidthGBps() const { return beta_us_per_byte > 0 ? 1e-3 / beta_us_per_byte : 0; }
};

// Which kind of link: where the two ranks are and the transport joining them.
struct LinkClass {
  bool same_host = false;
  std::string transport;  // "shm", "tcp", "ucx", "mpi", ...
  std::string Name() const { return (same_host ? "same_host/" : "cross_host/") + transport; }
  friend bool operator==(const LinkClass& a, const LinkClass& b) {
    return a.same_host == b.same_host && a.transport == b.transport;
  }
};

// One measured class: the model and how it was measured (the representative pair and sizes).
struct MeasuredLink {
  LinkClass link_class;
  LinkModel model;
  int rank_a = -1;  // the representative pair, ranks of the communicator probed
  int rank_b = -1;
  size_t small_bytes = 0;  // message size of the latency ping-pong
  size_t large_bytes = 0;  // message size of the bandwidth ping-pong
  int small_iters = 0;
  int large_iters = 0;
};

// Every class found in a communicator. Find() returns null for a class not present.
struct LinkModels {
  std::vector<MeasuredLink> links;
  const MeasuredLink* Find(const LinkClass& c) const {
    for (const auto& l : links) {
      if (l.link_class == c) return &l;
    }
    return nullptr;
  }
};

}  // namespace weft::collectives
