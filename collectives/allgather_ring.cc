// All-gather, ring.
//   Schedule: rank places its block at recvbuf[rank]; for t = 0..n-2 it sends block (rank - t)
//   to rank+1 and receives block (rank - t - 1) from rank-1 into place, forwarding each chunk as
//   soon as it lands.
//   Cost: (n-1)·α + (n-1)/n·N·β, N the gathered size.
#include <cstring>

#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status AllGatherRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                     DType dtype) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t es = DTypeSize(dtype);
  auto* out = static_cast<uint8_t*>(recvbuf);
  uint8_t* mine = out + rank * sendcount * es;
  if (mine != sendbuf && sendcount > 0) std::memcpy(mine, sendbuf, sendcount * es);
  if (n == 1) return Status::Ok();
  return internal::RingAllGather(ctx, out, internal::EqualBlocks(sendcount, n), dtype, rank, 0);
}

}  // namespace weft::collectives
