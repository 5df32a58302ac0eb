// Reduce to a root over a binomial tree.
//   Schedule: with v = (rank - root) mod n, for k = 0, 1, ...: if bit k of v is set, send the
//   partial result to v - 2^k and stop; otherwise, if v + 2^k < n, receive that child's partial
//   result and reduce it in. The root ends with everything.
//   Cost: ceil(log2 n)·(α + N·β + N·γ).
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status ReduceBinomial(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                      ReduceOp op, int root) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t bytes = count * DTypeSize(dtype);
  const int v = internal::Mod(rank - root, n);
  // The partial result lives in recvbuf at the root and in scratch elsewhere; until a child has
  // been folded in, it is still sendbuf itself.
  uint8_t* acc = rank == root ? static_cast<uint8_t*>(recvbuf) : ctx.Scratch(bytes, 2);
  const uint8_t* cur = static_cast<const uint8_t*>(sendbuf);
  uint8_t* tmp = ctx.Scratch(bytes, 0);
  std::vector<Pending> ps;
  int step = 0;
  for (int mask = 1; mask < n; mask <<= 1, ++step) {
    if (v & mask) {
      int parent = internal::Mod(v - mask + root, n);
      WEFT_ASSIGN_OR_RETURN(Pending s, ctx.Send(parent, cur, bytes, step));
      ps.push_back(s);
      WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps));
      return Status::Ok();
    }
    if (v + mask < n) {
      int child = internal::Mod(v + mask + root, n);
      WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(child, tmp, bytes, step));
      ps.push_back(q);
      WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps));
      ReduceInto(dtype, op, acc, cur, tmp, count);
      cur = acc;
    }
  }
  // Only the root gets here.
  if (cur != acc && bytes > 0) std::memcpy(acc, cur, bytes);
  if (op == ReduceOp::kAvg) DivideByCount(dtype, acc, count, n);
  return Status::Ok();
}

}  // namespace weft::collectives
