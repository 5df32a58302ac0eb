// All-reduce, ring (bandwidth-optimal): reduce-scatter then all-gather around rank -> rank+1.
//   Schedule (n ranks, buffer in n blocks): reduce-scatter steps s = 0..n-2: send block
//   (rank - s) to rank+1, receive block (rank - s - 1) from rank-1 and reduce it; after them
//   rank holds block rank+1 fully reduced. All-gather steps t = 0..n-2: send block
//   (rank + 1 - t), receive block (rank - t) into place. Every block moves in pipelined chunks.
//   Cost: 2(n-1)·α + 2·(n-1)/n·N·β + (n-1)/n·N·γ (γ: reduction per byte).
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status AllReduceRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                     ReduceOp op) {
  const int n = ctx.size();
  const size_t es = DTypeSize(dtype);
  auto* out = static_cast<uint8_t*>(recvbuf);
  if (n == 1) {
    if (sendbuf != recvbuf && count > 0) std::memcpy(recvbuf, sendbuf, count * es);
    return Status::Ok();
  }
  auto blocks = internal::EvenBlocks(count, n);
  const int own = internal::Mod(ctx.rank() + 1, n);
  // The all-gather starts inside the reduce-scatter: its receives are posted first, and each
  // piece of this rank's block goes out as soon as it is fully reduced (still in cache), not
  // after the whole reduce-scatter. Safe in place: a piece that lands in a block this rank is
  // still sending from derives from what it sent, so it comes after that was read.
  internal::RingAllGatherRun gather(ctx, out, blocks, dtype, own, /*step_base=*/n);
  WEFT_RETURN_IF_ERROR(gather.PostRecvs());
  const size_t own_offset = blocks[own].offset;
  WEFT_RETURN_IF_ERROR(internal::RingReduceScatter(
      ctx, static_cast<const uint8_t*>(sendbuf), out, blocks, dtype, op, /*shift=*/0,
      /*step_base=*/0, [&](size_t off, size_t len) {
        if (op == ReduceOp::kAvg) DivideByCount(dtype, out + (own_offset + off) * es, len, n);
        return gather.SendOwnPiece(off, len);
      }));
  return gather.Finish();
}

}  // namespace weft::collectives
