#include "collectives/tuner.h"

#include <algorithm>
#include <cstdio>

#include "collectives/internal/power_of_two.h"

namespace weft::collectives {

AllReduceAlgo ChooseAllReduce(const TunerInput& in) {
  if (in.forced == "ring") return AllReduceAlgo::kRing;
  if (in.forced == "recursive_doubling") return AllReduceAlgo::kRecursiveDoubling;
  if (in.forced == "rabenseifner") return AllReduceAlgo::kRabenseifner;
  if (in.local_arena && in.forced == "shm_direct" && in.bytes <= in.shm_slot_bytes) {
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
    const double rd = PredictRecursiveDoublingUs(in), ring = PredictRingUs(in);
    if (UsesRabenseifner(in) && PredictRabenseifnerUs(in) < std::min(rd, ring)) {
      return AllReduceAlgo::kRabenseifner;
    }
    return rd <= ring ? AllReduceAlgo::kRecursiveDoubling : AllReduceAlgo::kRing;
  }
  // Small vectors: the log2(n) latency terms of recursive doubling beat the ring's 2(n-1). Above
  // that the (n-1)/n bytes per step of Rabenseifner and the ring win, Rabenseifner with 2 log2(n)
  // steps to the ring's 2(n-1), from rab_min_bytes (where it takes over from recursive doubling
  // on the ranks it serves) up to rab_max_bytes.
  if (UsesRabenseifner(in) && in.bytes > in.rab_min_bytes) return AllReduceAlgo::kRabenseifner;
  if (in.bytes <= in.rd_max_bytes) return AllReduceAlgo::kRecursiveDoubling;
  return AllReduceAlgo::kRing;
}

size_t DefaultRabMaxBytes(int world_size) {
  // Measured over TCP with 4 and 8 ranks on 2 cores, Rabenseifner against the ring, alternating
  // runs in both states of this host's vCPUs: 4 ranks at 8 MiB 12.9-16.3 ms against the ring's
  // 12.8-23.5 (10 rounds, 9 to Rabenseifner, median ratio 0.68; the ring is bimodal, Rabenseifner
  // is not); at 16-64 MiB it won with the vCPUs apart (0.61-0.89) and lost with them together
  // (1.06-1.46). 8 ranks at 8 MiB it lost (1.19-1.50 together), at 4 MiB level (0.85-1.01).
  return world_size <= 4 ? size_t{8} << 20 : size_t{4} << 20;
}

size_t DefaultShmDirectMaxBytes(int ranks, bool ranks_fit_cores) {
  // The direct all-reduce has every rank read all n slots: (n-1) x size bytes from the peers'
  // caches, against the chunked one's three flag rounds and about two copies of the vector.
  // Measured (p50, 3-5 interleaved repeats, bench/results/manycore/sweep.jsonl and the notes of
  // the fourteenth session): on 16 cores the chunked path was faster from 1 KiB at 8 ranks (4 KiB
  // 3.7 against 8.3 us) and from 512 B at 16 ranks (4 KiB 5.2 against 15.1 us, 16 KiB 13.1
  // against 48.8); on 2 cores with 2 ranks from 4-8 KiB (16 KiB 6.0 against 7.5 us), with 4 ranks
  // (oversubscribed: each flag round waits for descheduled ranks) from 8 KiB (4 KiB 11.5 against
  // 10.8 us, 8 KiB 12.9 against 15.1).
  constexpr size_t kPeerBytesFit = 4 << 10, kPeerBytesOversubscribed = 16 << 10;
  constexpr size_t kMax = 16 << 10;
  if (ranks < 2) return kMax;
  const size_t peer = ranks_fit_cores ? kPeerBytesFit : kPeerBytesOversubscribed;
  return std::min(kMax, peer / static_cast<size_t>(ranks - 1));
}

bool UsesRabenseifner(const TunerInput& in) {
  // With 2 ranks it is the ring's schedule exactly, and the ring pipelines deeper. Where n is not
  // a power of two the fold moves the whole vector twice more: by the link model it then never
  // beats both the ring and recursive doubling (n = 5..7: it beats recursive doubling only where
  // N·β > 4α and the ring only where N·β < 3.4α), and measured, 3 ranks over tcp, the ring was
  // faster from 64 KiB to 16 MiB. 4 ranks: Rabenseifner 10-30% faster than the ring from 128 KiB
  // to 4 MiB (the upper limit: DefaultRabMaxBytes); against
  // recursive doubling (6 interleaved runs, medians) 8 KiB 88 vs 68 us, 16 and 32 KiB level,
  // 64 KiB 129 vs 198 us: hence rab_min_bytes 32 KiB.
  return in.world_size > 2 && internal::IsPowerOfTwo(in.world_size) &&
         in.bytes <= in.rab_max_bytes;
}

double PredictRingUs(const TunerInput& in) {
  const double n = in.world_size;
  if (n <= 1) return 0;
  // 2(n-1) steps, each moving N/n bytes.
  return 2 * (n - 1) * (in.alpha_us + in.beta_us_per_byte * static_cast<double>(in.bytes) / n);
}

double PredictRecursiveDoublingUs(const TunerInput& in) {
  const internal::PowerOfTwoGroup g(in.world_size);
  int steps = g.log2p;
  if (g.r > 0) steps += 2;  // the fold-in and fold-out of the ranks beyond p
  return steps * (in.alpha_us + in.beta_us_per_byte * static_cast<double>(in.bytes));
}

double PredictRabenseifnerUs(const TunerInput& in) {
  const internal::PowerOfTwoGroup g(in.world_size);
  const int p = g.p;
  if (p <= 1) return 0;
  const double bytes = static_cast<double>(in.bytes);
  // log2(p) halving steps and as many doubling steps, (p-1)/p of the vector each way.
  double us = 2 * g.log2p * in.alpha_us + 2.0 * (p - 1) / p * bytes * in.beta_us_per_byte;
  if (g.r > 0) us += 2 * (in.alpha_us + bytes * in.beta_us_per_byte);  // the fold
  return us;
}

const char* AllReduceAlgoName(AllReduceAlgo algo) {
  switch (algo) {
    case AllReduceAlgo::kRing: return "ring";
    case AllReduceAlgo::kRecursiveDoubling: return "recursive_doubling";
    case AllReduceAlgo::kRabenseifner: return "rabenseifner";
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
           " B > WEFT_SHM_COLL_DIRECT_MAX_BYTES (" + std::to_string(in.shm_direct_max_bytes) +
           "): chunked reduce-scatter/all-gather through the "
           "shared arena, reduction fused with the transfer";
  }
  std::string b = std::to_string(in.bytes) + " B";
  if (in.have_link_model) {
    char buf[320];
    std::snprintf(buf, sizeof(buf),
                  ": predicted from the measured links (alpha %.2f us, %.3f GB/s): recursive "
                  "doubling %.1f us, ring %.1f us, rabenseifner %.1f us%s",
                  in.alpha_us, in.beta_us_per_byte > 0 ? 1e-3 / in.beta_us_per_byte : 0.0,
                  PredictRecursiveDoublingUs(in), PredictRingUs(in), PredictRabenseifnerUs(in),
                  UsesRabenseifner(in) ? "" : " (not considered: 2 ranks, not a power of two, "
                                              "or above WEFT_ALGO_RAB_MAX_BYTES)");
    return name + buf;
  }
  std::string lim = "WEFT_ALGO_RD_MAX_BYTES (" + std::to_string(in.rd_max_bytes) + ")";
  const std::string rab_min =
      "WEFT_ALGO_RAB_MIN_BYTES (" + std::to_string(in.rab_min_bytes) + ")";
  if (a == AllReduceAlgo::kRecursiveDoubling) {
    return name + ": " + b + " <= " + (UsesRabenseifner(in) ? rab_min : lim) +
           ", so the log2(n) latency terms of recursive doubling beat the ring's 2(n-1)" +
           (UsesRabenseifner(in) ? " and Rabenseifner's 2 log2(n)" : "");
  }
  if (a == AllReduceAlgo::kRabenseifner) {
    return name + ": " + rab_min + " < " + b + " <= WEFT_ALGO_RAB_MAX_BYTES (" +
           std::to_string(in.rab_max_bytes) +
           "), so recursive halving and doubling: the ring's 2(n-1)/n bytes per rank in "
           "2 log2(n) steps instead of 2(n-1)";
  }
  std::string why_not_rab;
  if (in.world_size == 2) {
    why_not_rab = " (with 2 ranks Rabenseifner is the same schedule)";
  } else if (in.bytes > in.rab_max_bytes) {
    why_not_rab = ", and " + b + " > WEFT_ALGO_RAB_MAX_BYTES (" +
                  std::to_string(in.rab_max_bytes) + "), where its pipeline beats Rabenseifner";
  } else {
    why_not_rab = ", and with " + std::to_string(in.world_size) +
                  " ranks (not a power of two) Rabenseifner's fold would move the whole vector "
                  "twice more";
  }
  return name + ": " + b + " > " + lim + ", so the ring's 2(n-1)/n bytes per rank beat "
                                         "recursive doubling's log2(n) full copies" + why_not_rab;
}

}  // namespace weft::collectives
