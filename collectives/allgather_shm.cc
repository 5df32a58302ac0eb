// All-gather among ranks of one host, through the local arena.
//   Schedule, per chunk of the per-rank block: every rank copies its chunk into its slot and
//   raises ready; when all are up, every rank copies every slot's chunk into place and raises
//   done.
//   Cost per chunk: α_cacheline + c/B_copy (in) + n·c/B_copy (out), c the chunk size.
#include <algorithm>
#include <cstring>

#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

Status AllGatherShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                    DType dtype) {
  internal::LocalArena& arena = *ctx.arena();
  const int n = arena.size(), rank = arena.rank();
  const size_t block = sendcount * DTypeSize(dtype);
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  const size_t chunk = arena.slot_bytes();
  for (size_t off = 0; off < block || (off == 0 && block == 0); off += chunk) {
    const size_t len = std::min(chunk, block - off);
    const uint64_t seq = arena.NextSeq();
    WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
    if (len > 0) std::memcpy(arena.Slot(rank, seq), in + off, len);
    ctx.ArenaWrote(len);
    arena.Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
    for (int r = 0; r < n && len > 0; ++r) std::memcpy(out + r * block + off, arena.Slot(r, seq), len);
    arena.Set(Flag::kDone, seq);
    if (block == 0) break;
  }
  return Status::Ok();
}

}  // namespace weft::collectives
