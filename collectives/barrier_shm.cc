// Barrier among ranks of one host, through the local arena: every rank raises ready for the
// step and waits for everyone's. One cache-line hand-off per peer, no messages.
//   Cost: α_cacheline.
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

Status BarrierShm(OpContext& ctx) {
  internal::LocalArena& arena = *ctx.arena();
  const uint64_t seq = arena.NextSeq();
  arena.Set(Flag::kReady, seq);
  WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
  arena.Set(Flag::kDone, seq);
  return Status::Ok();
}

}  // namespace weft::collectives
