// Every collective algorithm weft implements, one per file (allreduce_ring.cc, ...). Each runs
// on one rank inside an OpContext, with arguments already validated by the Communicator, and
// returns when this rank's part is complete. Counts are elements.
#pragma once

#include <cstddef>

#include "base/dtype.h"
#include "base/status.h"
#include "collectives/internal/comm_impl.h"

namespace weft::collectives {

using internal::OpContext;
using internal::Pending;

Status AllReduceRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                     ReduceOp op);
Status AllReduceRecursiveDoubling(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                                  DType dtype, ReduceOp op);
Status AllReduceRabenseifner(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, ReduceOp op);
// Intra-host algorithms over the communicator's local arena (ctx.arena() must be set).
Status AllReduceShmDirect(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                          DType dtype, ReduceOp op);
Status AllReduceShmChunked(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                           DType dtype, ReduceOp op);
Status BroadcastShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                    int root);
Status AllGatherShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                    DType dtype);
Status ReduceScatterShm(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                        DType dtype, ReduceOp op);
Status BarrierShm(OpContext& ctx);
// Two-level all-reduce for ranks spread evenly over hosts (ctx.hierarchy() must be set).
Status AllReduceHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, ReduceOp op);
// Where a rank sits in its communicator's hierarchy: host index (the cross rank) and local rank,
// numbered as BuildHierarchy numbers them.
struct RankPlace {
  int host = 0;
  int local_rank = 0;
};
RankPlace PlaceOf(internal::CommImpl& comm, int rank);
// Two-level broadcast from the rank at `root` (ctx.hierarchy() must be set).
Status BroadcastHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, RankPlace root);
// Two-level all-gather (ctx.hierarchy() must be set).
Status AllGatherHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf,
                             size_t sendcount, DType dtype);
Status ReduceBinomial(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count, DType dtype,
                      ReduceOp op, int root);
Status BroadcastBinomial(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                         DType dtype, int root);
Status AllGatherRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                     DType dtype);
// A power-of-two number of ranks only.
Status AllGatherRecursiveDoubling(OpContext& ctx, const void* sendbuf, void* recvbuf,
                                  size_t sendcount, DType dtype);
Status ReduceScatterRing(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                         DType dtype, ReduceOp op);
Status AllToAllPairwise(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                        DType dtype);
Status GatherLinear(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t sendcount,
                    DType dtype, int root);
Status ScatterLinear(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t recvcount,
                     DType dtype, int root);
Status BarrierDissemination(OpContext& ctx);

}  // namespace weft::collectives
