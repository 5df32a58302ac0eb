#include "collectives/tuner.h"

#include <cstdio>

namespace weft::collectives {

AllReduceAlgo ChooseAllReduce(const TunerInput& in) {
  if (in.forced == "ring") return AllReduceAlgo::kRing;
  if (in.forced == "recursive_doubling") return AllReduceAlgo::kRecursiveDoubling;
  if (in.local_arena && in.forced == "shm_direct" && in.bytes <= in.shm_direct_max_bytes) {
    return AllReduceAlgo::kShmDirect;
  }
  if (in.local_arena && in.forced == "shm_chunked") return AllReduceAlgo::kShmChunked;
  if (in.hierarchical && (in.forced.empty() || in.forced == "hierarchical")) {
    return AllReduceAlgo::kHierarchical;
  }
  if (in.local_arena && in.forced.empty()) {
    return in.bytes <= in.shm_direct_max_bytes ? AllReduceAlgo::kShmDirect
                                               : AllReduceAlgo::kShmChunked;
  }
  if (in.have_link_model && in.forced.empty()) {
    return PredictRecursiveDoublingUs(in) <= PredictRingUs(in) ? AllReduceAlgo::kRecursiveDoubling
                                                               : AllReduceAlgo::kRing;
  }
  // Below rd_max_bytes the log2(n) latency terms of recursive doubling beat the ring's 2(n-1);
  // above it the ring's (n-1)/n bytes per step win.
  if (in.bytes <= in.rd_max_bytes) return AllReduceAlgo::kRecursiveDoubling;
  return AllReduceAlgo::kRing;
}

double PredictRingUs(const TunerInput& in) {
  const double n = in.world_size;
  if (n <= 1) return 0;
  // 2(n-1) steps, each moving N/n bytes.
  return 2 * (n - 1) * (in.alpha_us + in.beta_us_per_byte * static_cast<double>(in.bytes) / n);
}

double PredictRecursiveDoublingUs(const TunerInput& in) {
  int p = 1, steps = 0;
  while (p * 2 <= in.world_size) {
    p *= 2;
    ++steps;
  }
  if (p < in.world_size) steps += 2;  // the fold-in and fold-out of the ranks beyond p
  return steps * (in.alpha_us + in.beta_us_per_byte * static_cast<double>(in.bytes));
}

const char* AllReduceAlgoName(AllReduceAlgo algo) {
  switch (algo) {
    case AllReduceAlgo::kRing: return "ring";
    case AllReduceAlgo::kRecursiveDoubling: return "recursive_doubling";
    case AllReduceAlgo::kShmDirect: return "shm_direct";
    case AllReduceAlgo::kShmChunked: return "shm_chunked";
    case AllReduceAlgo::kHierarchical: return "hierarchical";
  }
  return "?";
}

}  // namespace weft::collectives

namespace weft::collectives {

std::string ExplainAllReduceChoice(const TunerInput& in) {
  AllReduceAlgo a = ChooseAllReduce(in);
  std::string name = AllReduceAlgoName(a);
  if (!in.forced.empty() && in.forced == name) return name + ": forced by WEFT_ALGO";
  if (!in.forced.empty()) {
    return name + ": WEFT_ALGO=" + std::string(in.forced) +
           " does not apply here (no local arena, or the message is too large for it)";
  }
  if (a == AllReduceAlgo::kHierarchical) {
    return name + ": ranks span hosts evenly: reduce-scatter inside each host over shared "
                  "memory, all-reduce each 1/L shard across hosts, all-gather inside each host, "
                  "so only N/L bytes per rank cross the slow links";
  }
  if (a == AllReduceAlgo::kShmDirect) {
    return name + ": all ranks share a host and " + std::to_string(in.bytes) +
           " B <= WEFT_SHM_COLL_DIRECT_MAX_BYTES (" + std::to_string(in.shm_direct_max_bytes) +
           "): each rank reduces every slot of the shared arena, no messages";
  }
  if (a == AllReduceAlgo::kShmChunked) {
    return name + ": all ranks share a host and " + std::to_string(in.bytes) +
           " B > WEFT_SHM_COLL_DIRECT_MAX_BYTES: chunked reduce-scatter/all-gather through the "
           "shared arena, reduction fused with the transfer";
  }
  std::string b = std::to_string(in.bytes) + " B";
  if (in.have_link_model) {
    char buf[160];
    std::snprintf(buf, sizeof(buf),
                  ": predicted from the measured links (alpha %.2f us, %.3f GB/s): recursive "
                  "doubling %.1f us, ring %.1f us",
                  in.alpha_us, in.beta_us_per_byte > 0 ? 1e-3 / in.beta_us_per_byte : 0.0,
                  PredictRecursiveDoublingUs(in), PredictRingUs(in));
    return name + buf;
  }
  std::string lim = "WEFT_ALGO_RD_MAX_BYTES (" + std::to_string(in.rd_max_bytes) + ")";
  if (a == AllReduceAlgo::kRecursiveDoubling) {
    return name + ": " + b + " <= " + lim + ", so the log2(n) latency terms of recursive "
                                            "doubling beat the ring's 2(n-1)";
  }
  return name + ": " + b + " > " + lim + ", so the ring's 2(n-1)/n bytes per rank beat "
                                         "recursive doubling's log2(n) full copies";
}

}  // namespace weft::collectives
