// All-gather across hosts, in two levels (ranks spread evenly over hosts: H hosts of L ranks).
//   Schedule: (1) the ranks with local rank l, one per host, joined by the hierarchy's cross
//   communicator, all-gather their own blocks (ring), so each holds the H blocks of its local
//   rank; (2) inside each host, the L ranks all-gather those H-block runs: through the
//   shared-memory arena, chunk by chunk, each rank copying every slot's bytes straight to their
//   places in recvbuf (no staging copy), or over the local transports (ring) and a final
//   placement. Every block enters a host once over the slow links, and the L cross rings run in
//   parallel, one per local rank, instead of one flat ring carrying (n-1) blocks per hop.
//   Cost: cross (H-1)·α_net + (H-1)·B·β_net per rank (L rings in parallel), then
//   α_mem + L·H·B/B_copy inside, for blocks of B bytes.
#include <algorithm>
#include <cstring>

#include "collectives/algorithms.h"
#include "collectives/internal/hierarchy.h"
#include "collectives/internal/local_arena.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

namespace {

// Copies bytes [off, off+len) of local rank lr's run of H blocks (block x: host x's block of
// local rank lr) to their places in `out`.
void PlaceRun(const internal::Hierarchy& h, uint8_t* out, size_t block, int lr, size_t off,
              const uint8_t* src, size_t len) {
  while (len > 0) {
    const size_t x = off / block, in_block = off % block;
    const size_t n = std::min(len, block - in_block);
    const int rank = h.rank_of[x * h.local_size + lr];
    std::memcpy(out + rank * block + in_block, src, n);
    src += n;
    off += n;
    len -= n;
  }
}

}  // namespace

Status AllGatherHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf,
                             size_t sendcount, DType dtype) {
  internal::Hierarchy& h = *ctx.hierarchy();
  const size_t block = sendcount * DTypeSize(dtype);
  if (block == 0) return Status::Ok();
  const int H = h.num_hosts, L = h.local_size;
  auto* out = static_cast<uint8_t*>(recvbuf);
  OpContext cross = ctx.ForChild(*h.cross, internal::ChildSeq(ctx.seq(), 0));
  OpContext local = ctx.ForChild(*h.local, internal::ChildSeq(ctx.seq(), 1));

  // (1) Across hosts: my local rank's block from every host, in host order.
  const size_t run = static_cast<size_t>(H) * block;
  uint8_t* mine = ctx.Scratch(run, 0);
  WEFT_RETURN_IF_ERROR(AllGatherRing(cross, sendbuf, mine, sendcount, dtype));

  internal::LocalArena* arena = local.arena();
  if (arena == nullptr) {
    // (2) Over the local transports, then into place.
    uint8_t* all = ctx.Scratch(run * L, 1);
    WEFT_RETURN_IF_ERROR(AllGatherRing(local, mine, all, H * sendcount, dtype));
    for (int lr = 0; lr < L; ++lr) PlaceRun(h, out, block, lr, 0, all + lr * run, run);
    return Status::Ok();
  }
  // (2) Through the arena: every rank publishes a chunk of its run, then copies every rank's
  // chunk to where its blocks belong.
  const size_t chunk = arena->slot_bytes();
  for (size_t off = 0; off < run; off += chunk) {
    const size_t len = std::min(chunk, run - off);
    const uint64_t seq = arena->NextSeq();
    WEFT_RETURN_IF_ERROR(local.ArenaWritable(seq));
    std::memcpy(arena->Slot(h.local_rank, seq), mine + off, len);
    local.ArenaWrote(len);
    arena->Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(local.WaitArena(Flag::kReady, seq));
    for (int lr = 0; lr < L; ++lr) PlaceRun(h, out, block, lr, off, arena->Slot(lr, seq), len);
    arena->Set(Flag::kDone, seq);
  }
  return Status::Ok();
}

}  // namespace weft::collectives
