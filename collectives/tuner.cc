#include "collectives/tuner.h"

namespace weft::collectives {

AllReduceAlgo ChooseAllReduce(const TunerInput& in) {
  if (in.forced == "ring") return AllReduceAlgo::kRing;
  if (in.forced == "recursive_doubling") return AllReduceAlgo::kRecursiveDoubling;
  // Below rd_max_bytes the log2(n) latency terms of recursive doubling beat the ring's 2(n-1);
  // above it the ring's (n-1)/n bytes per step win.
  if (in.bytes <= in.rd_max_bytes) return AllReduceAlgo::kRecursiveDoubling;
  return AllReduceAlgo::kRing;
}

const char* AllReduceAlgoName(AllReduceAlgo algo) {
  return algo == AllReduceAlgo::kRing ? "ring" : "recursive_doubling";
}

}  // namespace weft::collectives

namespace weft::collectives {

std::string ExplainAllReduceChoice(const TunerInput& in) {
  AllReduceAlgo a = ChooseAllReduce(in);
  std::string name = AllReduceAlgoName(a);
  if (!in.forced.empty()) return name + ": forced by WEFT_ALGO";
  std::string b = std::to_string(in.bytes) + " B";
  std::string lim = "WEFT_ALGO_RD_MAX_BYTES (" + std::to_string(in.rd_max_bytes) + ")";
  if (a == AllReduceAlgo::kRecursiveDoubling) {
    return name + ": " + b + " <= " + lim + ", so the log2(n) latency terms of recursive "
                                            "doubling beat the ring's 2(n-1)";
  }
  return name + ": " + b + " > " + lim + ", so the ring's 2(n-1)/n bytes per rank beat "
                                         "recursive doubling's log2(n) full copies";
}

}  // namespace weft::collectives
