// All-reduce across hosts, in two levels (ranks spread evenly over hosts).
//   Schedule: (1) inside each host, a reduce-scatter leaves local rank l with shard l of the
//   host's sum (through the shared-memory arena, chunk by chunk, or over the local transports);
//   (2) the ranks holding shard l on every host all-reduce it across hosts (ring, or recursive
//   doubling when small) — each host sends only N/L bytes per rank over the slow links, and all L
//   shards cross in parallel; (3) inside each host, an all-gather puts the shards back together.
//   Cost: local 2·N/B_mem + cross 2(H-1)/H·(N/L)·β_net + H-hop α terms, for H hosts of L ranks.
//   Pipelined from WEFT_HIER_SEGMENT_BYTES x 2 up (with an arena): the vector is cut into
//   segments and segment k crosses hosts (on a helper thread) while segment k+1 is reduced and
//   segment k-1 gathered inside the host, so the local phases hide behind the network instead
//   of adding to it: cost ≈ max(local, cross) + one segment of the other.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/hierarchy.h"
#include "collectives/internal/local_arena.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

using Flag = internal::LocalArena::Flag;

namespace {

constexpr int kMaxSegments = 16;

// Elements of this rank's shard: its sub-block of every arena chunk, back to back.
size_t ArenaShardElems(size_t count, size_t chunk, int l, int L) {
  size_t total = 0;
  for (size_t off = 0; off < count; off += chunk) {
    total += internal::EvenBlock(std::min(chunk, count - off), L, l).count;
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

  const size_t chunk = std::max<size_t>(1, arena->slot_bytes() / es);
  const size_t shard_elems = ArenaShardElems(count, chunk, l, L);
  uint8_t* shard = ctx.Scratch(shard_elems * es, 2);

  // (1) Arena reduce-scatter of chunks [c0, c1): shard (from element `at`) collects sub-block l
  // of each.
  auto reduce_scatter = [&](size_t c0, size_t c1, size_t at) -> Status {
    for (size_t c = c0; c < c1; ++c) {
      const size_t off = c * chunk, len = std::min(chunk, count - off);
      const uint64_t seq = arena->NextSeq();
      WEFT_RETURN_IF_ERROR(local.ArenaWritable(seq));
      const internal::Block b = internal::EvenBlock(len, L, l);
      const size_t o = b.offset * es, end = o + b.count * es;
      // All but the sub-block this rank reduces itself (ReduceSlots).
      uint8_t* slot = arena->Slot(l, seq);
      std::memcpy(slot, in + off * es, o);
      std::memcpy(slot + end, in + off * es + end, len * es - end);
      local.ArenaWrote(len * es - (end - o));
      arena->Set(Flag::kReady, seq);
      WEFT_RETURN_IF_ERROR(local.WaitArena(Flag::kReady, seq));
      if (b.count > 0) {
        arena->ReduceSlots(dtype, sum_op, seq, o, in + off * es + o, shard + at * es, b.count);
      }
      at += b.count;
      arena->Set(Flag::kDone, seq);
    }
    return Status::Ok();
  };
  // (2) Across hosts, `n` elements of the shard from `at`.
  auto across = [&](size_t at, size_t n) -> Status {
    uint8_t* p = shard + at * es;
    WEFT_RETURN_IF_ERROR(n * es <= static_cast<size_t>(ctx.rd_max_bytes())
                             ? AllReduceRecursiveDoubling(cross, p, p, n, dtype, sum_op)
                             : AllReduceRing(cross, p, p, n, dtype, sum_op));
    if (op == ReduceOp::kAvg) DivideByCount(dtype, p, n, ctx.size());
    return Status::Ok();
  };
  // (3) Arena all-gather of chunks [c0, c1): each rank puts its sub-blocks back into the shared
  // result, chunk by chunk, and copies the whole chunk out.
  auto all_gather = [&](size_t c0, size_t c1, size_t at) -> Status {
    for (size_t c = c0; c < c1; ++c) {
      const size_t off = c * chunk, len = std::min(chunk, count - off);
      const uint64_t seq = arena->NextSeq();
      WEFT_RETURN_IF_ERROR(local.ArenaWritable(seq));
      const internal::Block b = internal::EvenBlock(len, L, l);
      if (b.count > 0) {
        std::memcpy(arena->ResultSlot(seq) + b.offset * es, shard + at * es, b.count * es);
      }
      local.ArenaWrote(b.count * es);
      at += b.count;
      arena->Set(Flag::kPart, seq);
      WEFT_RETURN_IF_ERROR(local.WaitArena(Flag::kPart, seq));
      std::memcpy(out + off * es, arena->ResultSlot(seq), len * es);
      arena->Set(Flag::kDone, seq);
    }
    return Status::Ok();
  };

  // Segments: whole arena chunks, the same cut on every rank (it depends on count and the
  // configuration only), so every local rank takes the same arena steps in the same order.
  const size_t chunks = (count + chunk - 1) / chunk;
  const size_t segment_bytes = ctx.hier_segment_bytes();
  size_t per = std::max<size_t>(1, chunks);  // chunks per segment
  if (segment_bytes > 0 && count * es >= 2 * segment_bytes) {
    const size_t want = std::min<size_t>(kMaxSegments, count * es / segment_bytes);
    per = (chunks + want - 1) / want;
  }
  const size_t segments = (chunks + per - 1) / per;
  if (segments < 2) {
    WEFT_RETURN_IF_ERROR(reduce_scatter(0, chunks, 0));
    WEFT_RETURN_IF_ERROR(across(0, shard_elems));
    return all_gather(0, chunks, 0);
  }
  // Where each segment's part of the shard starts.
  std::vector<size_t> seg_at(segments + 1, 0);
  for (size_t k = 0; k < segments; ++k) {
    size_t n = 0;
    for (size_t c = k * per; c < std::min(chunks, (k + 1) * per); ++c) {
      n += internal::EvenBlock(std::min(chunk, count - c * chunk), L, l).count;
    }
    seg_at[k + 1] = seg_at[k] + n;
  }
  auto first_chunk = [&](size_t k) { return k * per; };
  auto end_chunk = [&](size_t k) { return std::min(chunks, (k + 1) * per); };

  // The helper thread runs the cross phase of each segment once it is reduced; this thread runs
  // the arena phases in a fixed order: RS(0), RS(1), AG(0), RS(2), AG(1), ..., AG(S-1).
  std::mutex mu;
  std::condition_variable cv;
  size_t reduced = 0, crossed = 0;
  bool stop = false;
  Status cross_status;
  std::thread helper([&] {
    for (size_t k = 0; k < segments; ++k) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || reduced > k; });
        if (stop) return;
      }
      Status s = across(seg_at[k], seg_at[k + 1] - seg_at[k]);
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok()) {
        cross_status = s;
        stop = true;
        cv.notify_all();
        return;
      }
      crossed = k + 1;
      cv.notify_all();
    }
  });
  auto finish = [&](Status s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok()) stop = true;
    }
    cv.notify_all();
    helper.join();
    return s.ok() ? cross_status : s;
  };
  auto mark_reduced = [&](size_t k) {
    std::lock_guard<std::mutex> lock(mu);
    reduced = k + 1;
    cv.notify_all();
  };
  // Waits for segment k's cross phase; its own waits are bounded by the operation's deadline,
  // and a failure there stops it, so this wait ends.
  auto wait_crossed = [&](size_t k) -> Status {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop || crossed > k; });
    return crossed > k ? Status::Ok() : cross_status;
  };
  for (size_t k = 0; k < segments; ++k) {
    Status s = reduce_scatter(first_chunk(k), end_chunk(k), seg_at[k]);
    if (!s.ok()) return finish(s);
    mark_reduced(k);
    if (k == 0) continue;
    s = wait_crossed(k - 1);
    if (s.ok()) s = all_gather(first_chunk(k - 1), end_chunk(k - 1), seg_at[k - 1]);
    if (!s.ok()) return finish(s);
  }
  Status s = wait_crossed(segments - 1);
  if (s.ok()) {
    s = all_gather(first_chunk(segments - 1), end_chunk(segments - 1), seg_at[segments - 1]);
  }
  return finish(s);
}

}  // namespace weft::collectives
