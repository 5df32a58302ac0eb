// Reduce-scatter among ranks of one host, through the local arena.
//   Schedule, per chunk position c: every rank copies chunk c of each of the peers' n-1 blocks
//   into its slot (its own block too when in place) and raises ready; when all are up, rank r
//   reduces sub-chunk r across all n ranks (in rank order: the peers' slots, its own input)
//   straight into its output and raises done.
//   Cost per chunk: α_cacheline + (n-1)·c/B_copy (in) + n·c/B_reduce, c the sub-chunk size.
#include <algorithm>
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

Status ReduceScatterShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                        DType dtype, ReduceOp op) {
  internal::LocalArena& arena = *ctx.arena();
  const int n = arena.size(), rank = arena.rank();
  const size_t es = DTypeSize(dtype);
  const size_t block = recvcount * es;
  const size_t sub = std::max<size_t>(1, arena.slot_bytes() / n / es);  // elements per sub-chunk
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  // This rank's own block is reduced straight from its input and not copied in (ReduceSlots). In
  // place, recvbuf is block `rank` of sendbuf, which the partial sums of ranks before this one
  // overwrite before its turn in the rank order comes: there it is copied into the slot first,
  // chunk by chunk.
  const bool copy_own = static_cast<const void*>(in + rank * block) == recvbuf;
  for (size_t off = 0; off < recvcount || (off == 0 && recvcount == 0); off += sub) {
    const size_t len = std::min(sub, recvcount - off);
    const uint64_t seq = arena.NextSeq();
    WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
    uint8_t* mine = arena.Slot(rank, seq);
    for (int b = 0; b < n && len > 0; ++b) {
      if (b == rank && !copy_own) continue;
      std::memcpy(mine + b * len * es, in + b * block + off * es, len * es);
    }
    ctx.ArenaWrote((copy_own ? n : n - 1) * len * es);
    arena.Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
    if (len > 0) {
      uint8_t* dst = out + off * es;
      const size_t at = rank * len * es;
      const uint8_t* own = copy_own ? mine + at : in + rank * block + off * es;
      arena.ReduceSlots(dtype, op, seq, at, own, dst, len);
      if (op == ReduceOp::kAvg) DivideByCount(dtype, dst, len, n);
    }
    arena.Set(Flag::kDone, seq);
    if (recvcount == 0) break;
  }
  return Status::Ok();
}

}  // namespace weft::collectives
