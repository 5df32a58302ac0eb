// Scatter from a root, linear: the root posts every rank's block at once; each rank receives
// its own.
//   Cost: α + (n-1)/n·N·β at the root's link.
#include <cstring>

#include "collectives/algorithms.h"

namespace weft::collectives {

Status ScatterLinear(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                     DType dtype, int root) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t block = recvcount * DTypeSize(dtype);
  std::vector<Pending> ps;
  if (rank != root) {
    WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(root, recvbuf, block, 0));
    ps.push_back(q);
    return ctx.WaitAll(ps);
  }
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  for (int r = 0; r < n; ++r) {
    if (r == rank) continue;
    WEFT_ASSIGN_OR_RETURN(Pending p, ctx.Send(r, in + r * block, block, 0));
    ps.push_back(p);
  }
  if (in + rank * block != recvbuf && block > 0) std::memcpy(recvbuf, in + rank * block, block);
  return ctx.WaitAll(ps);
}

}  // namespace weft::collectives
