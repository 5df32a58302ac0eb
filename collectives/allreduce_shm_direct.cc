// All-reduce for small messages among ranks of one host, through the local arena.
//   Schedule: every rank copies its vector into its own slot and raises ready (a store to its own
//   cache line); when all are up, every rank reduces all n slots itself, in rank order (so all
//   ranks compute the same bits), straight into its output, and raises done. No messages, no
//   system calls: one cache-line hand-off per peer.
//   Cost: α_cacheline + n·N/B_cache (each rank reads every slot); best while n·N is small. Up to
//   56 bytes travel inside the ready flag's own cache line instead of a slot, so a peer's flag
//   and data arrive in one cache-line transfer, not two dependent ones.
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
  // A vector that fits a flag's cache line travels in it (one line transfer per peer); a larger
  // one goes through the slots.
  const bool in_line = bytes <= internal::LocalArena::kInlineBytes;
  const Flag ready = in_line ? internal::LocalArena::InlineFlag(seq) : Flag::kReady;
  auto data = [&](int r) { return in_line ? arena.InlineData(r, seq) : arena.Slot(r, seq); };
  WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
  if (bytes > 0) std::memcpy(data(arena.rank()), sendbuf, bytes);
  ctx.ArenaWrote(bytes);
  arena.Post(ready, seq);  // its sleeper check happens inside the wait
  WEFT_RETURN_IF_ERROR(ctx.WaitArena(ready, seq));
  auto* out = static_cast<uint8_t*>(recvbuf);
  if (bytes > 0 && n == 1) {
    std::memcpy(out, data(0), bytes);
  } else if (bytes > 0) {
    ReduceInto(dtype, op, out, data(0), data(1), count);
    for (int r = 2; r < n; ++r) ReduceInto(dtype, op, out, out, data(r), count);
  }
  arena.Set(Flag::kDone, seq);
  if (in_line) arena.PrefetchInlineLine(seq + 1);  // the next one is likely as small
  if (op == ReduceOp::kAvg && bytes > 0) DivideByCount(dtype, out, count, n);
  return Status::Ok();
}

}  // namespace weft::collectives
