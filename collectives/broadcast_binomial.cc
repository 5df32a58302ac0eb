// Broadcast from a root over a binomial tree, pipelined in chunks.
//   Schedule: with v = (rank - root) mod n, rank v receives each chunk from v - lowbit(v) and
//   forwards it, as soon as it lands, to v + 2^k for every 2^k < lowbit(v) (largest subtree
//   first); the root (v = 0) sends to every v = 2^k < n.
//   Cost: ceil(log2 n)·α + (ceil(log2 n) - 1 + c)/c·N·β for c chunks, about N·β for large N.
#include <algorithm>
#include <cstring>

#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status BroadcastBinomial(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                         DType dtype, int root) {
  const int n = ctx.size(), rank = ctx.rank();
  const size_t es = DTypeSize(dtype);
  const size_t bytes = count * es;
  if (rank == root && sendbuf != recvbuf && bytes > 0) std::memcpy(recvbuf, sendbuf, bytes);
  if (n == 1) return Status::Ok();
  const int v = internal::Mod(rank - root, n);
  int low = v == 0 ? 1 : (v & -v);
  if (v == 0) {
    while (low < n) low <<= 1;
  }
  std::vector<int> children;
  for (int m = low >> 1; m >= 1; m >>= 1) {
    if (v + m < n) children.push_back(internal::Mod(v + m + root, n));
  }
  auto* buf = static_cast<uint8_t*>(recvbuf);
  const size_t chunk = std::max<size_t>(es, ctx.chunk_bytes() / es * es);
  std::vector<Pending> recvs, sends;
  if (v != 0) {
    int parent = internal::Mod(v - low + root, n);
    for (size_t off = 0; off < bytes || (off == 0 && bytes == 0); off += chunk) {
      size_t len = std::min(chunk, bytes - off);
      WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(parent, buf + off, len, 0));
      recvs.push_back(q);
      if (bytes == 0) break;
    }
  }
  size_t i = 0;
  for (size_t off = 0; off < bytes || (off == 0 && bytes == 0); off += chunk) {
    size_t len = std::min(chunk, bytes - off);
    if (v != 0) {
      WEFT_RETURN_IF_ERROR(ctx.WaitAt(recvs, i));
      ++i;
    }
    for (int c : children) {
      WEFT_ASSIGN_OR_RETURN(Pending s, ctx.Send(c, buf + off, len, 0));
      sends.push_back(s);
    }
    if (bytes == 0) break;
  }
  return ctx.WaitAll(sends);
}

}  // namespace weft::collectives
