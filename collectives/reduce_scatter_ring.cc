// Reduce-scatter, ring.
//   Schedule: for s = 0..n-2, send block (rank - s - 1) to rank+1 and receive block
//   (rank - s - 2) from rank-1, reducing it with this rank's own contribution; the last block
//   reduced is block rank, which is the result.
//   Cost: (n-1)·α + (n-1)/n·N·β + (n-1)/n·N·γ, N the full input size.
#include <cstring>

#include "base/reduce_kernels.h"
#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status ReduceScatterRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                         DType dtype, ReduceOp op) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t es = DTypeSize(dtype);
  const size_t block_bytes = recvcount * es;
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  if (n == 1) {
    if (sendbuf != recvbuf && block_bytes > 0) std::memcpy(recvbuf, sendbuf, block_bytes);
    return Status::Ok();
  }
  // Partial sums go to scratch: recvbuf holds only one block.
  uint8_t* acc = ctx.Scratch(block_bytes * n, 2);
  auto blocks = internal::EqualBlocks(recvcount, n);
  WEFT_RETURN_IF_ERROR(
      internal::RingReduceScatter(ctx, in, acc, blocks, dtype, op, /*shift=*/-1, /*step_base=*/0));
  if (block_bytes > 0) std::memcpy(recvbuf, acc + rank * block_bytes, block_bytes);
  if (op == ReduceOp::kAvg) DivideByCount(dtype, recvbuf, recvcount, n);
  return Status::Ok();
}

}  // namespace weft::collectives
