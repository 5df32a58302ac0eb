// Gather to a root, linear: every rank sends its block straight to the root, which receives all
// of them at once into place.
//   Cost: α + (n-1)/n·N·β at the root's link (the root's bandwidth bounds it).
#include <cstring>

#include "collectives/algorithms.h"

namespace weft::collectives {

Status GatherLinear(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                    DType dtype, int root) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t block = sendcount * DTypeSize(dtype);
  std::vector<Pending> ps;
  if (rank != root) {
    WEFT_ASSIGN_OR_RETURN(Pending p, ctx.Send(root, sendbuf, block, 0));
    ps.push_back(p);
    return ctx.WaitAll(ps);
  }
  auto* out = static_cast<uint8_t*>(recvbuf);
  for (int r = 0; r < n; ++r) {
    if (r == rank) continue;
    WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(r, out + r * block, block, 0));
    ps.push_back(q);
  }
  if (out + rank * block != sendbuf && block > 0) std::memcpy(out + rank * block, sendbuf, block);
  return ctx.WaitAll(ps);
}

}  // namespace weft::collectives
