// Barrier, dissemination: in round k = 0..ceil(log2 n)-1 every rank sends an empty message to
// rank + 2^k and waits for one from rank - 2^k. After the last round every rank has heard,
// directly or through others, from every rank.
//   Cost: ceil(log2 n)·α.
#include "collectives/algorithms.h"
#include "collectives/internal/ring_pipeline.h"

namespace weft::collectives {

Status BarrierDissemination(OpContext& ctx) {
  const int n = ctx.size(), rank = ctx.rank();
  std::vector<Pending> ps;
  int step = 0;
  for (int k = 1; k < n; k <<= 1, ++step) {
    WEFT_ASSIGN_OR_RETURN(Pending q, ctx.Recv(internal::Mod(rank - k, n), nullptr, 0, step));
    WEFT_ASSIGN_OR_RETURN(Pending p, ctx.Send(internal::Mod(rank + k, n), nullptr, 0, step));
    ps.push_back(q);
    ps.push_back(p);
    WEFT_RETURN_IF_ERROR(ctx.WaitAll(ps));
  }
  return Status::Ok();
}

}  // namespace weft::collectives
