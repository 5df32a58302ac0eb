// All-reduce for large messages among ranks of one host, through the local arena.
//   Schedule, per chunk of the vector (one arena slot): every rank copies its chunk into its slot,
//   all but the sub-block it reduces itself, and raises ready; when all are up, rank r reduces
//   sub-block r of the chunk across all n ranks (in rank order: the peers' slots, its own input)
//   straight into the shared result buffer, raises part and copies its own part to its output;
//   when all parts are up, it copies the others' parts and raises done. Slots alternate by
//   parity, so one chunk's copy-out overlaps the next chunk's copy-in. The reduction reads the
//   slots where the peers wrote them: reduction fused with the transfer, one copy in, one out.
//   Cost per rank: 2·α_cacheline per chunk + (n-1)/n·N/B_copy (in) + N/B_reduce + N/B_copy (out).
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
    const internal::Block b = internal::EvenBlock(len, n, rank);
    const size_t at = b.offset * es, end = at + b.count * es;
    // All but the sub-block this rank reduces itself (ReduceSlots; 2 ranks: half the copying in).
    uint8_t* slot = arena.Slot(rank, seq);
    fill.Copy(slot, in + off * es, at);
    fill.Copy(slot + end, in + off * es + end, len * es - end);
    ctx.ArenaWrote(len * es - (end - at));
    arena.Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
    if (b.count > 0) {
      uint8_t* res = arena.ResultSlot(seq) + at;
      arena.ReduceSlots(dtype, op, seq, at, in + off * es + at, res, b.count);
      if (op == ReduceOp::kAvg) DivideByCount(dtype, res, b.count, n);
      ctx.ArenaWrote(b.count * es);
    }
    arena.Set(Flag::kPart, seq);
    // This rank's own part of the result goes out first, while the peers finish theirs (and
    // while it is still in this core's cache); the rest once every part is up.
    uint8_t* dst = out + off * es;
    const uint8_t* all = arena.ResultSlot(seq);
    CopyOut(streaming, dst + at, all + at, end - at);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kPart, seq));
    CopyOut(streaming, dst, all, at);
    CopyOut(streaming, dst + end, all + end, len * es - end);
    arena.Set(Flag::kDone, seq);
  }
  if (streaming) StreamingCopyFence();
  fill.Finish();
  return Status::Ok();
}

}  // namespace weft::collectives
