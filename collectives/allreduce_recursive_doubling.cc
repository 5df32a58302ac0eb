// All-reduce, recursive doubling (latency-optimal for small messages).
//   Schedule: with p the largest power of two <= n and r = n - p, ranks below 2r pair up first:
//   each even one sends its vector to the odd one above it and sits out. The p remaining ranks
//   exchange their whole vector with partner (new_rank XOR 2^k) for k = 0..log2(p)-1 and reduce
//   (x op y equals y op x bit for bit, so partners stay identical). Finally each odd rank below
//   2r sends the result back to its even partner.
//   Cost: (log2 p + 2[r>0])·α + (log2 p + 2[r>0])·N·β + log2 p·N·γ.
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/power_of_two.h"

namespace weft::collectives {

Status AllReduceRecursiveDoubling(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                                  DType dtype, ReduceOp op) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t bytes = count * DTypeSize(dtype);
  auto* acc = static_cast<uint8_t*>(recvbuf);
  if (sendbuf != recvbuf && bytes > 0) std::memcpy(acc, sendbuf, bytes);
  if (n == 1) return Status::Ok();
  const internal::PowerOfTwoGroup g(n);
  uint8_t* tmp = ctx.Scratch(bytes, 0);
  Pending ps[1];  // the fold's one message at a time (no allocation on this path)

  if (g.Folds(rank)) {
    if (rank % 2 == 0) {
      WEFT_ASSIGN_OR_RETURN(ps[0], ctx.Send(rank + 1, acc, bytes, 0));
      WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps, 1));
    } else {
      WEFT_ASSIGN_OR_RETURN(ps[0], ctx.Recv(rank - 1, tmp, bytes, 0));
      WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps, 1));
      ReduceInto(dtype, op, acc, acc, tmp, count);
    }
  }

  const int new_rank = g.Member(rank);
  if (new_rank >= 0) {
    int step = 1;
    for (int mask = 1; mask < g.p; mask <<= 1, ++step) {
      const int partner = g.RankOf(new_rank ^ mask);
      WEFT_RETURN_IF_ERROR(ctx.Exchange(partner, acc, tmp, bytes, step));
      ReduceInto(dtype, op, acc, acc, tmp, count);
    }
    if (op == ReduceOp::kAvg) DivideByCount(dtype, acc, count, n);
  }

  if (g.Folds(rank)) {
    const int kBackStep = 64;
    if (rank % 2 == 1) {
      WEFT_ASSIGN_OR_RETURN(ps[0], ctx.Send(rank - 1, acc, bytes, kBackStep));
    } else {
      WEFT_ASSIGN_OR_RETURN(ps[0], ctx.Recv(rank + 1, acc, bytes, kBackStep));
    }
    WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps, 1));
  }
  return Status::Ok();
}

}  // namespace weft::collectives
