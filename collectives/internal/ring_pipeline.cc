#include "collectives/internal/ring_pipeline.h"

#include <algorithm>

#include "base/reduce_kernels.h"

namespace weft::collectives::internal {
namespace {

size_t LargestBlock(const std::vector<Block>& blocks) {
  size_t largest = 0;
  for (const auto& b : blocks) largest = std::max(largest, b.count);
  return largest;
}

// The chunks of a block: [start, len) pairs in elements relative to the block.
template <typename F>
void ForEachChunk(const Block& b, size_t chunk, F&& f) {
  for (size_t off = 0; off < b.count; off += chunk) f(off, std::min(chunk, b.count - off));
}

}  // namespace

size_t PieceElems(OpContext& ctx, size_t esize, size_t largest) {
  size_t piece = std::max<size_t>(1, ctx.chunk_bytes() / esize);
  const size_t max_pieces = static_cast<size_t>(ctx.ring_max_chunks());
  if (max_pieces > 0) piece = std::max(piece, (largest + max_pieces - 1) / max_pieces);
  return piece;
}

std::vector<Block> EvenBlocks(size_t count, int n) {
  std::vector<Block> out(n);
  for (int i = 0; i < n; ++i) out[i] = EvenBlock(count, n, i);
  return out;
}

std::vector<Block> EqualBlocks(size_t per_block, int n) {
  std::vector<Block> out(n);
  for (int i = 0; i < n; ++i) out[i] = Block{per_block * i, per_block};
  return out;
}

Status RingReduceScatter(OpContext& ctx, const uint8_t* in, uint8_t* acc,
                         const std::vector<Block>& blocks, DType dtype, ReduceOp op, int shift,
                         int step_base, const PieceFn& on_final) {
  const int n = ctx.size(), rank = ctx.rank();
  const int right = Mod(rank + 1, n), left = Mod(rank - 1, n);
  const size_t es = DTypeSize(dtype);
  const size_t max_block = LargestBlock(blocks);
  const size_t chunk = PieceElems(ctx, es, max_block);
  // Fused: the transport reduces each piece into acc as it lands, from a small buffer still in
  // cache; else pieces land whole in scratch and are reduced here. Both compute
  // acc = in op piece (same bits). 2 ranks, TCP loopback, 64 MiB all-reduce: see docs/performance.md.
  const bool fused = ctx.CanRecvReduce(left);
  uint8_t* scratch[2] = {nullptr, nullptr};
  if (!fused) {
    scratch[0] = ctx.Scratch(max_block * es, 0);
    scratch[1] = ctx.Scratch(max_block * es, 1);
  }

  std::vector<Pending> sends;
  std::vector<std::vector<Pending>> recvs(2);
  auto post_recvs = [&](int s) -> Status {
    const Block& b = blocks[Mod(rank - s - 1 + shift, n)];
    auto& list = recvs[s & 1];
    list.clear();
    Status st;
    ForEachChunk(b, chunk, [&](size_t off, size_t len) {
      if (!st.ok()) return;
      const size_t at = (b.offset + off) * es;
      auto p = fused ? ctx.RecvReduce(left, acc + at, in + at, len * es, dtype, op, step_base + s)
                     : ctx.Recv(left, scratch[s & 1] + off * es, len * es, step_base + s);
      if (!p.ok()) st = p.status();
      else list.push_back(*p);
    });
    return st;
  };
  auto post_send = [&](int s, const uint8_t* base, const Block& b, size_t off, size_t len) {
    auto p = ctx.Send(right, base + (b.offset + off) * es, len * es, step_base + s);
    if (!p.ok()) return p.status();
    sends.push_back(*p);
    return Status::Ok();
  };

  WEFT_RETURN_IF_ERROR(post_recvs(0));
  {
    const Block& b = blocks[Mod(rank + shift, n)];
    Status st;
    ForEachChunk(b, chunk, [&](size_t off, size_t len) {
      if (st.ok()) st = post_send(0, in, b, off, len);
    });
    WEFT_RETURN_IF_ERROR(st);
  }
  for (int s = 0; s <= n - 2; ++s) {
    if (s + 1 <= n - 2) WEFT_RETURN_IF_ERROR(post_recvs(s + 1));
    const Block& b = blocks[Mod(rank - s - 1 + shift, n)];
    size_t i = 0;
    Status st;
    ForEachChunk(b, chunk, [&](size_t off, size_t len) {
      if (!st.ok()) return;
      st = ctx.WaitAt(recvs[s & 1], i++);  // a timeout names every late peer of the step
      if (!st.ok()) return;
      if (!fused) {
        size_t at = (b.offset + off) * es;
        ReduceInto(dtype, op, acc + at, in + at, scratch[s & 1] + off * es, len);
      }
      if (s + 1 <= n - 2) {
        st = post_send(s + 1, acc, b, off, len);
      } else if (on_final) {
        st = on_final(off, len);
      }
    });
    WEFT_RETURN_IF_ERROR(st);
  }
  return ctx.WaitAll(sends);
}

Status RingAllGather(OpContext& ctx, uint8_t* buf, const std::vector<Block>& blocks, DType dtype,
                     int own, int step_base) {
  RingAllGatherRun run(ctx, buf, blocks, dtype, own, step_base);
  WEFT_RETURN_IF_ERROR(run.PostRecvs());
  return run.Finish();
}

RingAllGatherRun::RingAllGatherRun(OpContext& ctx, uint8_t* buf, const std::vector<Block>& blocks,
                                   DType dtype, int own, int step_base)
    : ctx_(ctx),
      buf_(buf),
      blocks_(blocks),
      n_(ctx.size()),
      own_(own),
      step_base_(step_base),
      right_(Mod(ctx.rank() + 1, n_)),
      left_(Mod(ctx.rank() - 1, n_)),
      es_(DTypeSize(dtype)),
      chunk_(PieceElems(ctx, es_, LargestBlock(blocks))),
      recvs_(n_ > 1 ? n_ - 1 : 0) {}

Status RingAllGatherRun::PostRecvs() {
  for (int t = 0; t <= n_ - 2; ++t) {
    const Block& b = blocks_[Mod(own_ - t - 1, n_)];
    Status st;
    ForEachChunk(b, chunk_, [&](size_t off, size_t len) {
      if (!st.ok()) return;
      auto p = ctx_.Recv(left_, buf_ + (b.offset + off) * es_, len * es_, step_base_ + t);
      if (!p.ok()) st = p.status();
      else recvs_[t].push_back(*p);
    });
    WEFT_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Status RingAllGatherRun::SendOwnPiece(size_t off, size_t len) {
  const Block& b = blocks_[Mod(own_, n_)];
  auto p = ctx_.Send(right_, buf_ + (b.offset + off) * es_, len * es_, step_base_);
  if (!p.ok()) return p.status();
  sends_.push_back(*p);
  own_sent_ = off + len;
  return Status::Ok();
}

Status RingAllGatherRun::Finish() {
  if (n_ > 1) {
    const Block& b = blocks_[Mod(own_, n_)];
    Status st;
    ForEachChunk(b, chunk_, [&](size_t off, size_t len) {
      if (st.ok() && off >= own_sent_) st = SendOwnPiece(off, len);
    });
    WEFT_RETURN_IF_ERROR(st);
  }
  for (int t = 0; t <= n_ - 2; ++t) {
    const Block& b = blocks_[Mod(own_ - t - 1, n_)];
    size_t i = 0;
    Status st;
    ForEachChunk(b, chunk_, [&](size_t off, size_t len) {
      if (!st.ok()) return;
      st = ctx_.WaitAt(recvs_[t], i++);
      if (!st.ok() || t + 1 > n_ - 2) return;
      auto p = ctx_.Send(right_, buf_ + (b.offset + off) * es_, len * es_, step_base_ + t + 1);
      if (!p.ok()) st = p.status();
      else sends_.push_back(*p);
    });
    WEFT_RETURN_IF_ERROR(st);
  }
  return ctx_.WaitAll(sends_);
}

}  // namespace weft::collectives::internal
