// Broadcast among ranks of one host, through the local arena.
//   Messages between WEFT_SHM_COLL_SINGLE_COPY_MIN_BYTES and _MAX_BYTES (where every rank may
//   read the others' memory): single copy, every receiver pulling it from the root's buffer.
//   Schedule, per chunk: the root copies the chunk into its slot and raises ready; every other
//   rank waits for the root's flag alone, copies the chunk out and raises done. Only the root
//   ever waits for everyone (before reusing a slot, two chunks later), so copy-in and copy-outs
//   pipeline.
//   Cost: α_cacheline + N/B_copy at the root + N/B_copy at each receiver, overlapped.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

constexpr size_t kAdaptiveCopyMinBytes = 1 << 20;

namespace {

// Large messages: the root publishes its buffer's address and every other rank pulls the whole
// message straight from it with process_vm_readv, one copy per receiver instead of a copy into
// the slots and one out of them. The root returns once everyone has read it (its buffer must
// not change before).
Status BroadcastSingleCopy(OpContext& ctx, internal::LocalArena& arena, const uint8_t* in,
                           uint8_t* out, size_t bytes, int root) {
  const uint64_t seq = arena.NextSeq();
  if (arena.rank() == root) {
    WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
    const uint64_t addr = reinterpret_cast<uintptr_t>(in);
    std::memcpy(arena.Slot(root, seq), &addr, sizeof(addr));
    ctx.ArenaWrote(bytes);
    arena.Set(Flag::kReady, seq);
    if (in != out) std::memcpy(out, in, bytes);
    arena.Set(Flag::kDone, seq);
    return ctx.WaitArena(Flag::kDone, seq);
  }
  WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq, root));
  uint64_t addr = 0;
  std::memcpy(&addr, arena.Slot(root, seq), sizeof(addr));
  Status s = arena.ReadFrom(root, out, addr, bytes);
  arena.Set(Flag::kDone, seq);  // also on failure: the root must not wait for us forever
  return s.ok() ? s : s.WithContext(ctx.OpLabel());
}

}  // namespace

Status BroadcastShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                    int root) {
  internal::LocalArena& arena = *ctx.arena();
  const int rank = arena.rank();
  const size_t bytes = count * DTypeSize(dtype);
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  WEFT_ASSIGN_OR_RETURN(bool single_copy, ctx.ArenaSingleCopy(bytes));
  if (single_copy) return BroadcastSingleCopy(ctx, arena, in, out, bytes, root);
  if (rank == root && sendbuf != recvbuf && bytes > 0) std::memcpy(out, in, bytes);
  const size_t chunk = arena.slot_bytes();
  // From 1 MiB the root fills the slots the way it measures faster (LocalArena::StreamingSlots).
  using SlotUse = internal::LocalArena::SlotUse;
  const bool adaptive = rank == root && bytes >= kAdaptiveCopyMinBytes;
  const bool streaming_in = adaptive && arena.StreamingSlots(SlotUse::kBroadcast, bytes);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t off = 0; off < bytes || (off == 0 && bytes == 0); off += chunk) {
    const size_t len = std::min(chunk, bytes - off);
    const uint64_t seq = arena.NextSeq();
    if (rank == root) {
      WEFT_RETURN_IF_ERROR(ctx.ArenaWritable(seq));
      if (len > 0 && streaming_in) {
        StreamingCopy(arena.Slot(root, seq), out + off, len);
        StreamingCopyFence();  // before the flag that lets the peers read it
      } else if (len > 0) {
        std::memcpy(arena.Slot(root, seq), out + off, len);
      }
      ctx.ArenaWrote(len);
      arena.Set(Flag::kReady, seq);
    } else {
      WEFT_RETURN_IF_ERROR(ctx.WaitArena(Flag::kReady, seq, root));
      if (len > 0) std::memcpy(out + off, arena.Slot(root, seq), len);
    }
    arena.Set(Flag::kDone, seq);
    if (bytes == 0) break;
  }
  if (adaptive) {
    // The root's time: it waited for the receivers to empty each slot before refilling it, so
    // this is the broadcast but for the reading of the last two chunks.
    arena.ReportSlotCopy(
        SlotUse::kBroadcast, bytes, streaming_in,
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  return Status::Ok();
}

}  // namespace weft::collectives
