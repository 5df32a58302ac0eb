// All-reduce across hosts, in two levels (ranks spread evenly over hosts).
//   Schedule: (1) inside each host, a reduce-scatter leaves local rank l with shard l of the
//   host's sum (through the shared-memory arena, chunk by chunk, or over the local transports);
//   (2) the ranks holding shard l on every host all-reduce it across hosts (ring, or recursive
//   doubling when small) — each host sends only N/L bytes per rank over the slow links, and all L
//   shards cross in parallel; (3) inside each host, an all-gather puts the shards back together.
//   Cost: local 2·N/B_mem + cross 2(H-1)/H·(N/L)·β_net + H-hop α terms, for H hosts of L ranks.
#include <algorithm>
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/hierarchy.h"
#include "collectives/internal/local_arena.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

namespace {

// Elements of this rank's shard: its sub-block of every arena chunk, back to back.
size_t ArenaShardElems(size_t count, size_t chunk, int l, int L) {
  size_t total = 0;
  for (size_t off = 0; off < count; off += chunk) {
    total += internal::EvenBlocks(std::min(chunk, count - off), L)[l].count;
  }
  return total;
}

}  // namespace

Status AllReduceHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, ReduceOp op) {
  internal::Hierarchy& h = *ctx.hierarchy();
  const size_t es = DTypeSize(dtype);
  const ReduceOp sum_op = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const int L = h.local_size, l = h.local_rank;
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  OpContext local = ctx.ForChild(*h.local, internal::ChildSeq(ctx.seq(), 0));
  OpContext cross = ctx.ForChild(*h.cross, internal::ChildSeq(ctx.seq(), 1));
  internal::LocalArena* arena = local.arena();

  if (arena == nullptr) {
    // Local phases over the transports: ring reduce-scatter into recvbuf, shard l is block l.
    auto blocks = internal::EvenBlocks(count, L);
    WEFT_RETURN_IF_ERROR(internal::RingReduceScatter(local, in, out, blocks, dtype, sum_op,
                                                     /*shift=*/-1, /*step_base=*/0));
    uint8_t* shard = out + blocks[l].offset * es;
    WEFT_RETURN_IF_ERROR(
        blocks[l].count * es <= static_cast<size_t>(ctx.rd_max_bytes())
            ? AllReduceRecursiveDoubling(cross, shard, shard, blocks[l].count, dtype, sum_op)
            : AllReduceRing(cross, shard, shard, blocks[l].count, dtype, sum_op));
    if (op == ReduceOp::kAvg) DivideByCount(dtype, shard, blocks[l].count, ctx.size());
    return internal::RingAllGather(local, out, blocks, dtype, l, /*step_base=*/L);
  }

  // (1) Arena reduce-scatter: shard l collects sub-block l of every chunk.
  const size_t chunk = std::max<size_t>(1, arena->slot_bytes() / es);
  const size_t shard_elems = ArenaShardElems(count, chunk, l, L);
  uint8_t* shard = ctx.Scratch(shard_elems * es, 2);
  size_t at = 0;
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = std::min(chunk, count - off);
    const uint64_t seq = arena->NextSeq();
    WEFT_RETURN_IF_ERROR(local.ArenaWritable(seq));
    std::memcpy(arena->Slot(l, seq), in + off * es, len * es);
    local.ArenaWrote(len * es);
    arena->Set(Flag::kReady, seq);
    WEFT_RETURN_IF_ERROR(local.WaitArena(Flag::kReady, seq));
    const internal::Block b = internal::EvenBlocks(len, L)[l];
    if (b.count > 0) {
      const size_t o = b.offset * es;
      ReduceInto(dtype, sum_op, shard + at * es, arena->Slot(0, seq) + o, arena->Slot(1, seq) + o,
                 b.count);
      for (int r = 2; r < L; ++r) {
        ReduceInto(dtype, sum_op, shard + at * es, shard + at * es, arena->Slot(r, seq) + o, b.count);
      }
    }
    at += b.count;
    arena->Set(Flag::kDone, seq);
  }
  // (2) Across hosts.
  WEFT_RETURN_IF_ERROR(
      shard_elems * es <= static_cast<size_t>(ctx.rd_max_bytes())
          ? AllReduceRecursiveDoubling(cross, shard, shard, shard_elems, dtype, sum_op)
          : AllReduceRing(cross, shard, shard, shard_elems, dtype, sum_op));
  if (op == ReduceOp::kAvg) DivideByCount(dtype, shard, shard_elems, ctx.size());
  // (3) Arena all-gather: each rank puts its sub-blocks back into the shared result, chunk by
  // chunk, and copies the whole chunk out.
  at = 0;
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = std::min(chunk, count - off);
    const uint64_t seq = arena->NextSeq();
    WEFT_RETURN_IF_ERROR(local.ArenaWritable(seq));
    const internal::Block b = internal::EvenBlocks(len, L)[l];
    if (b.count > 0) std::memcpy(arena->ResultSlot(seq) + b.offset * es, shard + at * es, b.count * es);
    local.ArenaWrote(b.count * es);
    at += b.count;
    arena->Set(Flag::kPart, seq);
    WEFT_RETURN_IF_ERROR(local.WaitArena(Flag::kPart, seq));
    std::memcpy(out + off * es, arena->ResultSlot(seq), len * es);
    arena->Set(Flag::kDone, seq);
  }
  return Status::Ok();
}

}  // namespace weft::collectives
