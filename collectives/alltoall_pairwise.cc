// All-to-all, pairwise exchange.
//   Schedule: for s = 1..n-1, send block (rank + s) to rank + s and receive block (rank - s)
//   from rank - s; all exchanges are posted at once and the transports overlap them.
//   Cost: (n-1)·α + (n-1)/n·N·β, N the size of one rank's buffer.
#include <cstring>

#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status AllToAllPairwise(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                        DType dtype) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t block = count * DTypeSize(dtype);
  const auto* in = static_cast<const uint8_t*>(sendbuf);
  auto* out = static_cast<uint8_t*>(recvbuf);
  if (sendbuf == recvbuf && block > 0) {
    // In place: send from a copy, since receives overwrite blocks still to be sent.
    uint8_t* copy = ctx.Scratch(block * n, 2);
    std::memcpy(copy, in, block * n);
    in = copy;
  }
  if (in + rank * block != out + rank * block && block > 0) {
    std::memcpy(out + rank * block, in + rank * block, block);
  }
  std::vector<Pending> ps;
  for (int s = 1; s < n; ++s) {
    int from = internal::Mod(rank - s, n);
    WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(from, out + from * block, block, 0));
    ps.push_back(q);
  }
  for (int s = 1; s < n; ++s) {
    int to = internal::Mod(rank + s, n);
    WEFT_ASSIGN_OR_RETURN(Pending p, ctx.Send(to, in + to * block, block, 0));
    ps.push_back(p);
  }
  return ctx.WaitAll(ps);
}

}  // namespace weft::collectives
