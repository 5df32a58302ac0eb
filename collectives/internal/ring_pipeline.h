// The two halves of every ring algorithm, chunk-pipelined: a reduce-scatter and an all-gather
// around the ring rank -> rank+1. Used by allreduce_ring.cc, reduce_scatter_ring.cc and
// allgather_ring.cc. Blocks are the n slices of the buffer; each block moves in chunks of
// ctx.chunk_bytes() so a chunk is forwarded as soon as it arrives (and, in the reduce-scatter,
// as soon as it is reduced).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
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
// `on_final`, if given, is called with each piece (offset and length in elements, relative to
// the block) of the fully reduced block as soon as that piece is final, in order.
using PieceFn = std::function<Status(size_t off, size_t len)>;
Status RingReduceScatter(OpContext& ctx, const uint8_t* in, uint8_t* acc,
                         const std::vector<Block>& blocks, DType dtype, ReduceOp op, int shift,
                         int step_base, const PieceFn& on_final = nullptr);

// All-gather around the ring: this rank holds block `own` of buf; at step t it sends block
// (own - t) and receives block (own - t - 1) into place. Waits for its sends.
Status RingAllGather(OpContext& ctx, uint8_t* buf, const std::vector<Block>& blocks, DType dtype,
                     int own, int step_base);

// The same all-gather in three parts, so an all-reduce can start it inside its reduce-scatter:
// PostRecvs() posts the receives of every step (before the peers' pieces can arrive, so none
// waits in a transport's unexpected queue); SendOwnPiece() sends a piece of block `own` (in
// piece order) as soon as it is final; Finish() sends the rest of block own, then waits for each
// incoming piece, forwards it, and waits for the sends.
class RingAllGatherRun {
 public:
  RingAllGatherRun(OpContext& ctx, uint8_t* buf, const std::vector<Block>& blocks, DType dtype,
                   int own, int step_base);
  Status PostRecvs();
  Status SendOwnPiece(size_t off, size_t len);
  Status Finish();

 private:
  OpContext& ctx_;
  uint8_t* const buf_;
  const std::vector<Block>& blocks_;
  const int n_, own_, step_base_, right_, left_;
  const size_t es_, chunk_;
  size_t own_sent_ = 0;  // elements of block own already sent
  std::vector<std::vector<Pending>> recvs_;
  std::vector<Pending> sends_;
};

inline int Mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace weft::collectives::internal
