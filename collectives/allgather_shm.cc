// All-gather among ranks of one host, through the local arena.
//   Blocks between WEFT_SHM_COLL_SINGLE_COPY_MIN_BYTES and _MAX_BYTES (where every rank may read
//   the others' memory): single copy, each rank pulling every block from its owner's buffer.
//   Schedule, per chunk of the per-rank block: every rank copies its chunk into its slot and
//   raises ready; when all are up, every rank copies every slot's chunk into place and raises
//   done.
//   Cost per chunk: α_cacheline + c/B_copy (in) + n·c/B_copy (out), c the chunk size.
#include <algorithm>
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

namespace {

// Large blocks: every rank publishes its block's address and pulls every other block straight
// from its owner with process_vm_readv (one copy per block instead of two), starting with its
// right neighbour so the ranks do not all read the same owner at once. Returns once everyone
// has read this rank's block (the send buffer must not change before).
Status AllGatherSingleCopy(OpContext& ctx, internal::LocalArena& arena, const uint8_t* in,
                           uint8_t* out, size_t block) {
  const int n = arena.size(), rank = arena.rank();
  const uint64_t seq = arena.NextSeq();
  WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
  const uint64_t addr = reinterpret_cast<uintptr_t>(in);
  std::memcpy(arena.Slot(rank, seq), &addr, sizeof(addr));
  ctx.ArenaWrote(block);
  arena.Set(Flag::kReady, seq);
  WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
  Status s;
  for (int i = 1; i < n && s.ok(); ++i) {
    const int r = (rank + i) % n;
    uint64_t from = 0;
    std::memcpy(&from, arena.Slot(r, seq), sizeof(from));
    s = arena.ReadFrom(r, out + r * block, from, block);
  }
  if (out + rank * block != in) std::memcpy(out + rank * block, in, block);
  arena.Set(Flag::kDone, seq);  // also on failure: the others must not wait for us forever
  if (!s.ok()) return s.WithContext(ctx.OpLabel());
  return ctx.WaitArena(Flag::kDone, seq);
}

}  // namespace

Status AllGatherShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                    DType dtype) {
  internal::LocalArena& arena = *ctx.arena();
  const int n = arena.size(), rank = arena.rank();
  const size_t block = sendcount * DTypeSize(dtype);
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  WEFT_ASSIGN_OR_RETURN(bool single_copy, ctx.ArenaSingleCopy(block));
  if (single_copy) return AllGatherSingleCopy(ctx, arena, in, out, block);
  const size_t chunk = arena.slot_bytes();
  const bool streaming = block * n >= ctx.streaming_copy_min_bytes();  // the output's size
  // From 1 MiB of output each rank fills its slots the way it measures faster.
  internal::LocalArena::SlotFiller fill(arena, internal::LocalArena::SlotUse::kAllGather,
                                        block * n);
  for (size_t off = 0; off < block || (off == 0 && block == 0); off += chunk) {
    const size_t len = std::min(chunk, block - off);
    const uint64_t seq = arena.NextSeq();
    WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
    fill.Copy(arena.Slot(rank, seq), in + off, len);
    ctx.ArenaWrote(len);
    arena.Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq));
    for (int r = 0; r < n && len > 0; ++r) {
      CopyOut(streaming, out + r * block + off, arena.Slot(r, seq), len);
    }
    arena.Set(Flag::kDone, seq);
    if (block == 0) break;
  }
  if (streaming) StreamingCopyFence();
  fill.Finish();
  return Status::Ok();
}

}  // namespace weft::collectives
