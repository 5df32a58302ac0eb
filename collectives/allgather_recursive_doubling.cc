// All-gather, recursive doubling (a power-of-two number of ranks).
//   Schedule: rank places its block at recvbuf[rank]; at step k (mask = 2^k) it holds the mask
//   blocks of its group [rank & ~(mask-1), +mask) and swaps them with partner rank ^ mask for
//   the partner's group, so the range it holds doubles each step.
//   Cost: log2(n)·α + (n-1)/n·N·β, N the gathered size: the ring's bytes in log2(n) steps
//   instead of n-1 (fewer hand-offs between ranks that share cores).
#include <cstring>

#include "collectives/algorithms.h"

namespace weft::collectives {

Status AllGatherRecursiveDoubling(OpContext& ctx, const void* sendbuf, void* recvbuf,
                                  size_t sendcount, DType dtype) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t block = sendcount * DTypeSize(dtype);
  auto* out = static_cast<uint8_t*>(recvbuf);
  if (out + rank * block != sendbuf && block > 0) {
    std::memcpy(out + rank * block, sendbuf, block);
  }
  for (int mask = 1, step = 0; mask < n; mask <<= 1, ++step) {
    const int partner = rank ^ mask;
    const size_t mine = static_cast<size_t>(rank & ~(mask - 1));
    const size_t theirs = static_cast<size_t>(partner & ~(mask - 1));
    const size_t bytes = static_cast<size_t>(mask) * block;
    WEFT_RETURN_IF_ERROR(
        ctx.Exchange(partner, out + mine * block, out + theirs * block, bytes, step));
  }
  return Status::Ok();
}

}  // namespace weft::collectives
