// All-reduce, Rabenseifner: reduce-scatter by recursive halving, then all-gather by recursive
// doubling (bandwidth of the ring, latency terms of recursive doubling).
//   Schedule: with p the largest power of two <= n and r = n - p, ranks below 2r first fold in
//   as recursive doubling does (each even one sends its vector to the odd one above it and sits
//   out). The vector is cut into p blocks. Reduce-scatter: for mask = p/2 .. 1 each remaining rank
//   exchanges with partner (new_rank XOR mask) the half of its current range of blocks that the
//   partner keeps (the lower half stays with the rank whose mask bit is 0) and reduces the half
//   it keeps, so after log2(p) steps it holds the reduced block new_rank. All-gather: the same
//   pairs in the opposite order, each exchanging its whole range, so the ranges double back to
//   the full vector. Finally each odd rank below 2r sends the result to its even partner.
//   Each step's message is cut into pieces as the ring cuts its blocks (PieceElems) and
//   a piece is reduced as soon as it lands, while the next ones are still in flight.
//   Cost: 2·log2(p)·α + 2·(p-1)/p·N·β + (p-1)/p·N·γ, plus 2·(α + N·β) + N·γ for the fold when
//   r > 0.
#include <algorithm>
#include <cstring>
#include <vector>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/power_of_two.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {
namespace {

constexpr int kFoldInStep = 0;
constexpr int kFoldOutStep = 64;

// The elements of the vector covered by blocks [lo, hi): `count` of them from `begin`.
struct Span {
  size_t begin = 0;
  size_t count = 0;
};

Span SpanOf(const std::vector<internal::Block>& blocks, int lo, int hi) {
  const size_t begin = blocks[lo].offset;
  return Span{begin, blocks[hi - 1].offset + blocks[hi - 1].count - begin};
}

// One exchange with `partner`: sends `out` (read from `src`) and receives `in`, each as pieces;
// with `reduce` a received piece lands in tmp and is reduced into acc (acc = src op tmp) as soon
// as it arrives, else it lands in acc. Spans are in elements; an empty span sends or receives
// nothing (both sides of a pair compute the same spans, so they agree on that too).
Status Exchange(OpContext& ctx, int partner, int step, const uint8_t* src, uint8_t* acc,
                uint8_t* tmp, Span out, Span in, DType dtype, ReduceOp op, bool reduce,
                std::vector<Pending>& recvs, std::vector<Pending>& sends) {
  const size_t es = DTypeSize(dtype);
  const size_t piece_in = internal::PieceElems(ctx, es, in.count);
  const size_t piece_out = internal::PieceElems(ctx, es, out.count);
  recvs.clear();
  sends.clear();
  for (size_t off = 0; off < in.count; off += piece_in) {
    const size_t len = std::min(piece_in, in.count - off);
    uint8_t* dst = (reduce ? tmp : acc) + (in.begin + off) * es;
    WEFT_ASSIGN_OR_RETURN(Pending p, ctx.Recv(partner, dst, len * es, step));
    recvs.push_back(p);
  }
  for (size_t off = 0; off < out.count; off += piece_out) {
    const size_t len = std::min(piece_out, out.count - off);
    WEFT_ASSIGN_OR_RETURN(Pending p,
                          ctx.Send(partner, src + (out.begin + off) * es, len * es, step));
    sends.push_back(p);
  }
  for (size_t i = 0; i < recvs.size(); ++i) {
    WEFT_RETURN_IF_ERROR(ctx.WaitAt(recvs, i));
    if (!reduce) continue;
    const size_t off = i * piece_in;
    const size_t at = (in.begin + off) * es;
    ReduceInto(dtype, op, acc + at, src + at, tmp + at, std::min(piece_in, in.count - off));
  }
  return ctx.WaitAll(sends);
}

}  // namespace

Status AllReduceRabenseifner(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, ReduceOp op) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t es = DTypeSize(dtype);
  const size_t bytes = count * es;
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* acc = static_cast<uint8_t*>(recvbuf);
  if (n == 1) {
    if (sendbuf != recvbuf && bytes > 0) std::memcpy(acc, sendbuf, bytes);
    return Status::Ok();
  }
  const internal::PowerOfTwoGroup g(n);
  const int p = g.p;
  // Blocks of a rank's vector and the scratch that receives what it reduces; scratch offsets
  // mirror the vector's, so a piece lands at the same offset as its place in acc.
  const std::vector<internal::Block> blocks = internal::EvenBlocks(count, p);
  uint8_t* tmp = ctx.Scratch(bytes, 0);
  std::vector<Pending> recvs, sends;
  // What the next reduction reads besides the received data: the input until this rank has
  // reduced something into acc (then acc itself), which spares the copy of sendbuf to recvbuf.
  const uint8_t* src = in;

  if (g.Folds(rank)) {
    const Span all{0, count};
    if (rank % 2 == 0) {
      WEFT_RETURN_IF_ERROR(Exchange(ctx, rank + 1, kFoldInStep, in, acc, tmp, all, Span{}, dtype,
                                    op, false, recvs, sends));
    } else {
      WEFT_RETURN_IF_ERROR(Exchange(ctx, rank - 1, kFoldInStep, in, acc, tmp, Span{}, all, dtype,
                                    op, true, recvs, sends));
      src = acc;
    }
  }

  const int new_rank = g.Member(rank);
  if (new_rank >= 0) {
    // Reduce-scatter by recursive halving: [lo, hi) is the range of blocks this rank reduces.
    int lo = 0, hi = p, step = 1;
    for (int mask = p / 2; mask >= 1; mask /= 2, ++step) {
      const int mid = (lo + hi) / 2;
      const bool keep_low = (new_rank & mask) == 0;
      const Span keep = keep_low ? SpanOf(blocks, lo, mid) : SpanOf(blocks, mid, hi);
      const Span give = keep_low ? SpanOf(blocks, mid, hi) : SpanOf(blocks, lo, mid);
      WEFT_RETURN_IF_ERROR(Exchange(ctx, g.RankOf(new_rank ^ mask), step, src, acc, tmp, give,
                                    keep, dtype, op, true, recvs, sends));
      src = acc;
      (keep_low ? hi : lo) = mid;
    }
    if (op == ReduceOp::kAvg) {
      const Span mine = SpanOf(blocks, lo, hi);
      DivideByCount(dtype, acc + mine.begin * es, mine.count, n);
    }
    // All-gather by recursive doubling: the same partners, last first.
    for (int mask = 1; mask < p; mask *= 2, ++step) {
      const int size = hi - lo;
      const bool low = (new_rank & mask) == 0;
      const int plo = low ? hi : lo - size, phi = low ? hi + size : lo;
      WEFT_RETURN_IF_ERROR(Exchange(ctx, g.RankOf(new_rank ^ mask), step, acc, acc, tmp,
                                    SpanOf(blocks, lo, hi), SpanOf(blocks, plo, phi), dtype, op,
                                    false, recvs, sends));
      lo = std::min(lo, plo);
      hi = std::max(hi, phi);
    }
  }

  if (g.Folds(rank)) {
    const Span all{0, count};
    if (rank % 2 == 1) {
      WEFT_RETURN_IF_ERROR(Exchange(ctx, rank - 1, kFoldOutStep, acc, acc, tmp, all, Span{},
                                    dtype, op, false, recvs, sends));
    } else {
      WEFT_RETURN_IF_ERROR(Exchange(ctx, rank + 1, kFoldOutStep, acc, acc, tmp, Span{}, all,
                                    dtype, op, false, recvs, sends));
    }
  }
  return Status::Ok();
}

}  // namespace weft::collectives
