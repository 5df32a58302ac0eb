// All-reduce for large messages among ranks of one host, through the local arena.
//   Schedule, per chunk of the vector (one arena slot): every rank copies its chunk into its slot
//   and raises ready; when all are up, rank r reduces sub-block r of the chunk across all n slots
//   (in rank order) straight into the shared result buffer and raises part; when all parts are
//   up, every rank copies the whole reduced chunk to its output and raises done. Slots alternate
//   by parity, so one chunk's copy-out overlaps the next chunk's copy-in. The reduction reads the
//   slots where the peers wrote them: reduction fused with the transfer, one copy in, one out.
//   Cost per rank: 2·α_cacheline per chunk + N/B_copy (in) + N/B_reduce + N/B_copy (out).
#include <algorithm>
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

Status AllReduceShmChunked(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                           DType dtype, ReduceOp op) {
  internal::LocalArena& arena = *ctx.arena();
  const int n = arena.size(), rank = arena.rank();
  const size_t es = DTypeSize(dtype);
  const size_t chunk = std::max<size_t>(1, arena.slot_bytes() / es);
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  const bool streaming = count * es >= ctx.streaming_copy_min_bytes();
  // From 1 MiB the slots are filled the way measured faster here; below, the data stays in the
  // caches either way.
  internal::LocalArena::SlotFiller fill(arena, internal::LocalArena::SlotUse::kAllReduce,
                                        count * es);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = std::min(chunk, count - off);
    const uint64_t seq = arena.NextSeq();
    WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
    fill.Copy(arena.Slot(rank, seq), in + off * es, len * es);
    ctx.ArenaWrote(len * es);
    arena.Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
    const internal::Block b = internal::EvenBlocks(len, n)[rank];
    if (b.count > 0) {
      uint8_t* res = arena.ResultSlot(seq) + b.offset * es;
      const size_t at = b.offset * es;
      if (n == 1) {
        std::memcpy(res, arena.Slot(0, seq) + at, b.count * es);
      } else {
        ReduceInto(dtype, op, res, arena.Slot(0, seq) + at, arena.Slot(1, seq) + at, b.count);
        for (int r = 2; r < n; ++r) ReduceInto(dtype, op, res, res, arena.Slot(r, seq) + at, b.count);
      }
      if (op == ReduceOp::kAvg) DivideByCount(dtype, res, b.count, n);
      ctx.ArenaWrote(b.count * es);
    }
    arena.Set(Flag::kPart, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kPart, seq));
    CopyOut(streaming, out + off * es, arena.ResultSlot(seq), len * es);
    arena.Set(Flag::kDone, seq);
  }
  if (streaming) StreamingCopyFence();
  fill.Finish();
  return Status::Ok();
}

}  // namespace weft::collectives
