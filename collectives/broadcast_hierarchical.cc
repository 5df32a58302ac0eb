// Broadcast across hosts, in two levels (ranks spread evenly over hosts).
//   Schedule: let the root be local rank k on host R. (1) The ranks with local rank k, one per
//   host, joined by the hierarchy's cross communicator of local rank k, broadcast from host R
//   (binomial tree, pipelined in chunks); (2) on every host, local rank k broadcasts to its host
//   through the shared-memory arena, or over the local transports (binomial) without one. Only
//   one copy of the data enters each host over the slow links.
//   Cost: ceil(log2 H)·α_net + ~N·β_net across, then α_mem + ~N/B_copy inside, for H hosts.
#include <string>
#include <vector>

#include "collectives/algorithms.h"
#include "collectives/internal/hierarchy.h"

namespace weft::collectives {

RankPlace PlaceOf(internal::CommImpl& comm, int rank) {
  // The same numbering as BuildHierarchy: hosts in order of their lowest rank, local ranks in
  // rank order inside a host.
  internal::CommShared& shared = comm.shared();
  const std::string& host = shared.host_of(comm.world_rank_of(rank));
  RankPlace place;
  std::vector<const std::string*> seen;  // hosts whose lowest rank precedes this host's
  bool host_seen = false;
  for (int r = 0; r < rank; ++r) {
    const std::string& h = shared.host_of(comm.world_rank_of(r));
    if (h == host) {
      ++place.local_rank;
      host_seen = true;
      continue;
    }
    if (host_seen) continue;
    bool known = false;
    for (const std::string* s : seen) known = known || *s == h;
    if (!known) seen.push_back(&h);
  }
  place.host = static_cast<int>(seen.size());
  return place;
}

Status BroadcastHierarchical(OpContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                             DType dtype, RankPlace root) {
  internal::Hierarchy& h = *ctx.hierarchy();
  if (count == 0) return Status::Ok();
  OpContext local = ctx.ForChild(*h.local, internal::ChildSeq(ctx.seq(), 0));
  if (h.local_rank == root.local_rank) {
    // This rank's cross communicator is the one of the root's local rank; host R's member is
    // the root itself.
    OpContext cross = ctx.ForChild(*h.cross, internal::ChildSeq(ctx.seq(), 1));
    WEFT_RETURN_IF_ERROR(BroadcastBinomial(cross, sendbuf, recvbuf, count, dtype, root.host));
  }
  // From here on the data sits in recvbuf of local rank k on every host.
  return local.arena() ? BroadcastShm(local, recvbuf, recvbuf, count, dtype, root.local_rank)
                       : BroadcastBinomial(local, recvbuf, recvbuf, count, dtype, root.local_rank);
}

}  // namespace weft::collectives
