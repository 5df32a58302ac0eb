// The local arena: one shared-memory segment per communicator whose ranks all share a host, used
// by the intra-host collective algorithms (allreduce_shm_*.cc). Ranks exchange data through
// per-rank slots and synchronise through sequence flags in their own cache lines: the fast path
// is plain loads and stores, no system call; waiters spin briefly, then sleep on a futex.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/deadline.h"
#include "base/socket_util.h"
#include "base/status.h"

namespace weft::collectives::internal {

// One per communicator (and per process). Owns its mapping and its peers' pidfds. Used by one
// operation at a time (the communicator runs operations in order). All ranks use it in the same
// order, so its sequence numbers agree across ranks.
class LocalArena {
 public:
  struct Config {
    std::string name;     // POSIX shm name, unique per job and communicator
    int rank = 0;         // rank in the communicator
    int size = 1;
    size_t slot_bytes = 0;  // bytes per slot (one chunk); two slots per rank plus two results
    int spin_us = 50;
    std::vector<int> world_ranks;  // for messages; empty: communicator ranks
  };
  // Rank 0 creates the segment, the others open it (retrying until the deadline). Every rank
  // publishes its pid. Call Unlink() once every rank has attached (after a barrier).
  static Result<std::unique_ptr<LocalArena>> Attach(const Config& config, Deadline deadline);
  ~LocalArena();
  LocalArena(const LocalArena&) = delete;
  LocalArena& operator=(const LocalArena&) = delete;
  void Unlink();

  int rank() const { return rank_; }
  int size() const { return size_; }
  size_t slot_bytes() const { return slot_bytes_; }

  // Starts the next step: returns its sequence number (1, 2, ...); parity = seq & 1 picks the
  // slot. A step's slots may be reused two steps later, once every rank has passed the next one.
  uint64_t NextSeq() { return ++seq_; }
  uint8_t* Slot(int rank, uint64_t seq) const;
  uint8_t* ResultSlot(uint64_t seq) const;

  // Flags: `ready` says a rank's slot for seq is written; `done` says its part of the result is.
  void SetReady(uint64_t seq) { Publish(&Flags(rank_)->ready, seq); }
  void SetDone(uint64_t seq) { Publish(&Flags(rank_)->done, seq); }
  // Waits until every rank's flag reaches seq. `check` is called now and then while sleeping; a
  // non-OK status from it ends the wait. The error names the ranks that did not arrive.
  template <typename Check>
  Status WaitReady(uint64_t seq, Deadline deadline, Check&& check) {
    return WaitAll(/*done=*/false, seq, deadline, check);
  }
  template <typename Check>
  Status WaitDone(uint64_t seq, Deadline deadline, Check&& check) {
    return WaitAll(/*done=*/true, seq, deadline, check);
  }

 private:
  struct alignas(64) RankFlags {
    std::atomic<uint64_t> ready;
    char pad0[56];
    std::atomic<uint64_t> done;
    char pad1[56];
  };
  struct Header;

  LocalArena() = default;
  RankFlags* Flags(int r) const;
  void Publish(std::atomic<uint64_t>* flag, uint64_t seq);
  bool AllReached(bool done, uint64_t seq) const;
  // Ranks whose flag has not reached seq, and whether any of them has exited.
  std::string Missing(bool done, uint64_t seq, bool* dead) const;
  template <typename Check>
  Status WaitAll(bool done, uint64_t seq, Deadline deadline, Check& check);
  Status SleepOnce(bool done, uint64_t seq);

  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  size_t slot_bytes_ = 0;
  int spin_us_ = 50;
  uint64_t seq_ = 0;
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  Header* header_ = nullptr;
  bool unlinked_ = false;
  std::vector<UniqueFd> pidfds_;
  std::vector<int> pids_;
  std::vector<int> world_ranks_;
};

template <typename Check>
Status LocalArena::WaitAll(bool done, uint64_t seq, Deadline deadline, Check& check) {
  if (AllReached(done, seq)) return Status::Ok();
  // Spin first: with the peers running on other cores the flags flip within a microsecond. After
  // a short pure spin, yield between polls: with more ranks than cores the peer we wait for may
  // need this very core.
  const auto spin_until = Clock::now() + std::chrono::microseconds(spin_us_);
  int polls = 0;
  while (true) {
    if (AllReached(done, seq)) return Status::Ok();
    if (++polls < 256) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      sched_yield();
    }
    if (polls % 16 == 0 && Clock::now() >= spin_until) break;
  }
  while (!AllReached(done, seq)) {
    WEFT_RETURN_IF_ERROR(SleepOnce(done, seq));
    bool dead = false;
    std::string missing = Missing(done, seq, &dead);
    if (missing.empty()) break;
    if (dead) return UnavailableError(missing + " (shm arena)");
    WEFT_RETURN_IF_ERROR(check());
    if (deadline.Expired()) {
      return DeadlineExceededError("waiting for " + missing + " (shm arena)");
    }
  }
  return Status::Ok();
}

}  // namespace weft::collectives::internal
