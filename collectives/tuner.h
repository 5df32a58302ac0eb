// The tuner: which algorithm runs a collective of a given size on a given communicator.
// WEFT_ALGO forces the all-reduce choice. Otherwise, ranks sharing one host with an arena use it
// (every rank reduces every slot for small messages, a chunked reduce-scatter/all-gather through
// the slots for large ones); across transports small messages take recursive doubling (fewest
// latency terms), mid-sized ones Rabenseifner (least bytes per rank in 2 log2(n) steps) and large
// ones the ring (least bytes per rank, pipelined).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace weft::collectives {

enum class AllReduceAlgo {
  kRing,
  kRecursiveDoubling,
  kRabenseifner,
  kShmDirect,
  kShmChunked,
  kHierarchical
};

struct TunerInput {
  size_t bytes = 0;
  int world_size = 1;
  // "", "ring", "recursive_doubling", "rabenseifner", "shm_direct", "shm_chunked", "hierarchical"
  // (a view of the communicator's option: building the input copies nothing, it is made per
  // operation)
  std::string_view forced;
  size_t rd_max_bytes = 64 << 10;
  // Rabenseifner above rab_min_bytes and up to rab_max_bytes, on a power-of-two number of ranks
  // above 2 (taking over from recursive doubling there); rab_max_bytes 0: never.
  size_t rab_min_bytes = 32 << 10;
  size_t rab_max_bytes = 4 << 20;
  bool local_arena = false;  // all ranks on one host with a shared-memory arena
  bool hierarchical = false;  // ranks spread evenly over several hosts
  // The slowest measured link of the communicator (largest alpha and beta); unset if not probed.
  bool have_link_model = false;
  double alpha_us = 0;
  double beta_us_per_byte = 0;
  // Tuned limit of the direct arena all-reduce (WEFT_SHM_COLL_DIRECT_MAX_BYTES), and the most it
  // can hold at all (one slot), the limit of WEFT_ALGO=shm_direct.
  size_t shm_direct_max_bytes = 16 << 10;
  size_t shm_slot_bytes = 256 << 10;
};

AllReduceAlgo ChooseAllReduce(const TunerInput& in);
// WEFT_ALGO_RAB_MAX_BYTES=auto: 8 MiB on up to 4 ranks, 4 MiB on more (see tuner.cc).
size_t DefaultRabMaxBytes(int world_size);
// WEFT_SHM_COLL_DIRECT_MAX_BYTES=auto for an arena of `ranks` ranks (see tuner.cc): (n-1) x size
// within 4 KiB where the ranks fit the cores, 16 KiB where they do not, and at most 16 KiB.
size_t DefaultShmDirectMaxBytes(int ranks, bool ranks_fit_cores);
// Whether the tuner considers Rabenseifner for this input at all.
bool UsesRabenseifner(const TunerInput& in);
// Predicted time of the transport algorithms from the link model (microseconds).
double PredictRingUs(const TunerInput& in);
double PredictRecursiveDoublingUs(const TunerInput& in);
double PredictRabenseifnerUs(const TunerInput& in);
const char* AllReduceAlgoName(AllReduceAlgo algo);
// "recursive_doubling: 8 B <= WEFT_ALGO_RD_MAX_BYTES (65536): log2(n) latency terms win"
std::string ExplainAllReduceChoice(const TunerInput& in);

}  // namespace weft::collectives
