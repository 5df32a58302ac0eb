#include "collectives/internal/hierarchy.h"

#include <map>
#include <string>

#include "base/hmac.h"
#include "collectives/algorithms.h"
#include "collectives/internal/comm_impl.h"

namespace weft::collectives::internal {
namespace {

uint32_t DeriveId(uint32_t parent, const std::string& what) {
  Digest256 d = Sha256Of(std::to_string(parent) + "/" + what);
  return ((uint32_t{d[0]} << 16) | (uint32_t{d[1]} << 8) | d[2]) % kMaxCommId;
}

}  // namespace

Result<std::unique_ptr<Hierarchy>> BuildHierarchy(CommImpl& comm, Deadline deadline) {
  CommShared& shared = comm.shared();
  const int n = comm.size();
  // Hosts in order of their lowest rank, so every rank numbers them the same way.
  std::map<std::string, int> host_index;
  std::vector<std::vector<int>> members;  // host -> communicator ranks
  for (int r = 0; r < n; ++r) {
    const std::string& h = shared.host_of(comm.world_rank_of(r));
    auto it = host_index.find(h);
    if (it == host_index.end()) {
      it = host_index.emplace(h, static_cast<int>(members.size())).first;
      members.emplace_back();
    }
    members[it->second].push_back(r);
  }
  const int hosts = static_cast<int>(members.size());
  if (hosts < 2) return std::unique_ptr<Hierarchy>();
  const size_t per_host = members[0].size();
  for (const auto& m : members) {
    if (m.size() != per_host) return std::unique_ptr<Hierarchy>();
  }
  if (per_host < 2) return std::unique_ptr<Hierarchy>();

  auto h = std::make_unique<Hierarchy>();
  const int me = comm.rank();
  const int my_host = host_index.at(shared.host_of(comm.world_rank_of(me)));
  h->num_hosts = hosts;
  h->local_size = static_cast<int>(per_host);
  for (const auto& m : members) h->rank_of.insert(h->rank_of.end(), m.begin(), m.end());
  for (size_t i = 0; i < per_host; ++i) {
    if (members[my_host][i] == me) h->local_rank = static_cast<int>(i);
  }
  std::vector<int> local_world, cross_world;
  for (int r : members[my_host]) local_world.push_back(comm.world_rank_of(r));
  for (int x = 0; x < hosts; ++x) cross_world.push_back(comm.world_rank_of(members[x][h->local_rank]));
  h->local = std::make_shared<CommImpl>(comm.shared_ptr(), local_world, h->local_rank,
                                        DeriveId(comm.comm_id(), "local/" + std::to_string(my_host)));
  h->cross = std::make_shared<CommImpl>(comm.shared_ptr(), cross_world, my_host,
                                        DeriveId(comm.comm_id(), "cross/" + std::to_string(h->local_rank)));
  // The local arena, when every local peer is reached over shared memory.
  if (shared.WantsArena(local_world)) {
    WEFT_ASSIGN_OR_RETURN(
        auto arena,
        shared.AttachArena("/weft-" + shared.job_id() + "-h" + std::to_string(comm.comm_id()) +
                               "-" + std::to_string(my_host),
                           h->local_rank, local_world, deadline));
    // Everyone on the host has it mapped once this barrier (over the transports) completes.
    OpContext ctx(*h->local, "hierarchy setup", 0xfffff0, deadline);
    WEFT_RETURN_IF_ERROR(BarrierDissemination(ctx));
    arena->Unlink();
    h->local->SetArena(std::move(arena));
  }
  return h;
}

}  // namespace weft::collectives::internal
