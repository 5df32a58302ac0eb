// The two-level view of a communicator whose ranks span hosts: a `local` communicator per host
// (shared memory, with an arena when it can have one) and a `cross` communicator joining the
// ranks with the same local rank on every host. Hierarchical algorithms run their phases on
// these synchronously, inside the parent's operation.
#pragma once

#include <memory>
#include <vector>

#include "base/deadline.h"
#include "base/status.h"

namespace weft::collectives::internal {

class CommImpl;

struct Hierarchy {
  std::shared_ptr<CommImpl> local;  // this rank's host
  std::shared_ptr<CommImpl> cross;  // same local rank on every host
  int num_hosts = 0;
  int local_rank = 0;
  int local_size = 0;
  // Communicator rank of local rank l on host x: rank_of[x * local_size + l].
  std::vector<int> rank_of;
};

// Builds the hierarchy when the communicator's ranks span more than one host, some host holds
// several ranks, and every host holds the same number (the sharded algorithms need equal shards).
// Collective over `comm`; returns null (and OK) when the hierarchy does not apply.
Result<std::unique_ptr<Hierarchy>> BuildHierarchy(CommImpl& comm, Deadline deadline);

// A sequence number for phase `phase` (0..3) of the parent's operation `seq`, for the children.
inline uint32_t ChildSeq(uint32_t parent_seq, int phase) {
  return (parent_seq * 4u + static_cast<uint32_t>(phase)) & 0xffffffu;
}

}  // namespace weft::collectives::internal
