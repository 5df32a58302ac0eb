// All-reduce for small messages among ranks of one host, through the local arena.
//   Schedule: every rank copies its vector into its own slot and raises ready (a store to its own
//   cache line); when all are up, every rank reduces all n slots itself, in rank order (so all
//   ranks compute the same bits), straight into its output, and raises done. No messages, no
//   system calls: one cache-line hand-off per peer.
//   Cost: α_cacheline + n·N/B_cache (each rank reads every slot); best while n·N is small.
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

Status AllReduceShmDirect(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                          DType dtype, ReduceOp op) {
  internal::LocalArena& arena = *ctx.arena();
  const int n = arena.size();
  const size_t bytes = count * DTypeSize(dtype);
  const uint64_t seq = arena.NextSeq();
  WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
  if (bytes > 0) std::memcpy(arena.Slot(arena.rank(), seq), sendbuf, bytes);
  ctx.ArenaWrote(bytes);
  arena.Set(Flag::kReady, seq);
  WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
  auto* out = static_cast<uint8_t*>(recvbuf);
  if (bytes > 0 && n == 1) {
    std::memcpy(out, arena.Slot(0, seq), bytes);
  } else if (bytes > 0) {
    ReduceInto(dtype, op, out, arena.Slot(0, seq), arena.Slot(1, seq), count);
    for (int r = 2; r < n; ++r) ReduceInto(dtype, op, out, out, arena.Slot(r, seq), count);
  }
  arena.Set(Flag::kDone, seq);
  if (op == ReduceOp::kAvg && bytes > 0) DivideByCount(dtype, out, count, n);
  return Status::Ok();
}

}  // namespace weft::collectives
