// The tuner: which algorithm runs a collective of a given size on a given communicator.
// WEFT_ALGO forces the all-reduce choice; otherwise small messages take recursive doubling
// (fewest latency terms) and large ones the ring (least bytes per rank).
#pragma once

#include <cstddef>
#include <string>

namespace weft::collectives {

enum class AllReduceAlgo { kRing, kRecursiveDoubling };

struct TunerInput {
  size_t bytes = 0;
  int world_size = 1;
  std::string forced;  // "", "ring", "recursive_doubling"
  size_t rd_max_bytes = 64 << 10;
};

AllReduceAlgo ChooseAllReduce(const TunerInput& in);
const char* AllReduceAlgoName(AllReduceAlgo algo);
// "recursive_doubling: 8 B <= WEFT_ALGO_RD_MAX_BYTES (65536): log2(n) latency terms win"
std::string ExplainAllReduceChoice(const TunerInput& in);

}  // namespace weft::collectives
