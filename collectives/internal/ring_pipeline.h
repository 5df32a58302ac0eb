// The two halves of every ring algorithm, chunk-pipelined: a reduce-scatter and an all-gather
// around the ring rank -> rank+1. Used by allreduce_ring.cc, reduce_scatter_ring.cc and
// allgather_ring.cc. Blocks are the n slices of the buffer; each block moves in chunks of
// ctx.chunk_bytes() so a chunk is forwarded as soon as it arrives (and, in the reduce-scatter,
// as soon as it is reduced).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/dtype.h"
#include "base/status.h"
#include "collectives/internal/comm_impl.h"

namespace weft::collectives::internal {

struct Block {
  size_t offset = 0;  // elements
  size_t count = 0;
};

// The pipeline piece, in elements, for messages of up to `largest` elements: chunk_bytes(), or
// more where `largest` would be cut into more than ring_max_chunks() pieces (0: no limit). A
// function of sizes every rank knows, so all cut alike (a piece is a message; sender and
// receiver must agree on its size). Used by the ring halves below and by Rabenseifner's steps.
size_t PieceElems(OpContext& ctx, size_t esize, size_t largest);

// n blocks of `count` elements, sizes differing by at most one.
std::vector<Block> EvenBlocks(size_t count, int n);
// Block i of EvenBlocks(count, n), without building the others (a per-chunk question).
inline Block EvenBlock(size_t count, int n, int i) {
  const size_t base = count / n, extra = count % n, k = static_cast<size_t>(i);
  return Block{base * k + std::min(k, extra), base + (k < extra ? 1 : 0)};
}
// n blocks of exactly `per_block` elements each.
std::vector<Block> EqualBlocks(size_t per_block, int n);

// Reduce-scatter around the ring. At step s this rank sends block (rank - s + shift) and
// receives block (rank - s - 1 + shift), reducing acc[b] = in[b] op incoming. On return block
// (rank + 1 + shift) mod n of `acc` holds the full reduction; other blocks of acc hold partial
// results. `in` may equal `acc` (in place). Uses scratch slots 0 and 1. Waits for its sends.
Status RingReduceScatter(OpContext& ctx, const uint8_t* in, uint8_t* acc,
                         const std::vector<Block>& blocks, DType dtype, ReduceOp op, int shift,
                         int step_base);

// All-gather around the ring: this rank holds block `own` of buf; at step t it sends block
// (own - t) and receives block (own - t - 1) into place. Waits for its sends.
Status RingAllGather(OpContext& ctx, uint8_t* buf, const std::vector<Block>& blocks, DType dtype,
                     int own, int step_base);

inline int Mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace weft::collectives::internal
