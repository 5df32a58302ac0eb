// The local arena: one shared-memory segment per communicator whose ranks all share a host, used
// by the intra-host collective algorithms (allreduce_shm_*.cc). Ranks exchange data through
// per-rank slots and synchronise through sequence flags in their own cache lines: the fast path
// is plain loads and stores, no system call; waiters spin briefly, then sleep on a futex.
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/cpu_relax.h"
#include "base/deadline.h"
#include "base/reduce_kernels.h"
#include "base/socket_util.h"
#include "base/status.h"

namespace weft::collectives::internal {

// One per communicator (and per process). Owns its mapping and its peers' pidfds. Used by one
// operation at a time (the communicator runs operations in order). All ranks use it in the same
// order, so its sequence numbers agree across ranks.
class LocalArena {
 public:
  struct Config {
    std::string name;  // POSIX shm name, unique per job and communicator
    int rank = 0;      // rank in the communicator
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
  // slot and result buffer.
  uint64_t NextSeq() { return ++seq_; }
  uint8_t* Slot(int rank, uint64_t seq) const {
    return base_ + kHeaderBytes + sizeof(RankFlags) * size_ + slot_bytes_ * (2 * rank + (seq & 1));
  }
  uint8_t* ResultSlot(uint64_t seq) const {
    return base_ + kHeaderBytes + sizeof(RankFlags) * size_ + slot_bytes_ * (2 * size_ + (seq & 1));
  }
  // dst = the reduction of `count` elements at byte `at` of every rank's slot for step `seq`, in
  // rank order (every rank's result the same bit for bit), this rank's part read from `own`: a
  // rank reduces its own sub-block straight from its input, so it copies into its slot only the
  // parts its peers reduce (they read nothing else of it). dst may alias `own` or a slot's part
  // exactly (ReduceInto), but not a part a later rank in the order is read from.
  void ReduceSlots(DType dtype, ReduceOp op, uint64_t seq, size_t at, const uint8_t* own,
                   uint8_t* dst, size_t count) const {
    auto src = [&](int r) -> const uint8_t* { return r == rank_ ? own : Slot(r, seq) + at; };
    if (size_ == 1) {
      if (dst != own) std::memcpy(dst, own, count * DTypeSize(dtype));
      return;
    }
    ReduceInto(dtype, op, dst, src(0), src(1), count);
    for (int r = 2; r < size_; ++r) ReduceInto(dtype, op, dst, dst, src(r), count);
  }

  // How a large operation (`bytes`, 1 MiB and up) copies its chunks into the slots: ordinary
  // stores (false), or streaming stores (true: the lines go to memory without being taken back
  // from the peers' caches first; fence before raising the flag). Which is faster depends on
  // where the host has put the vCPUs: sharing a cache, ordinary stores win (the peers then read
  // from it); apart, taking back every line a peer read the time before costs more than memory.
  // Chosen by measuring whole operations per size class (ReportSlotCopy): the way not chosen
  // gets one operation in kProbeEvery (in 4 * kProbeEvery while it is 1.5 times slower or
  // worse), so the choice follows the host when it moves the vCPUs.
  // The probes fall on the same operations on every rank (they count the same collectives), so
  // they measure both ways end to end; ranks that still choose differently stay correct.
  // Kept apart per kind of operation (their costs per byte differ).
  enum class SlotUse { kAllReduce = 0, kBroadcast = 1, kAllGather = 2 };
  bool StreamingSlots(SlotUse use, size_t bytes);
  void ReportSlotCopy(SlotUse use, size_t bytes, bool streaming, double ns);
  static constexpr size_t kAdaptiveSlotBytes = 1 << 20;

  // One operation's filling of this rank's slots: from kAdaptiveSlotBytes (`bytes`: the
  // operation's size) and where `active`, the way StreamingSlots chooses, timed from construction
  // to Finish(); otherwise ordinary copies, unmeasured.
  class SlotFiller {
   public:
    SlotFiller(LocalArena& arena, SlotUse use, size_t bytes, bool active = true)
        : arena_(arena),
          use_(use),
          bytes_(bytes),
          adaptive_(active && bytes >= kAdaptiveSlotBytes),
          streaming_(adaptive_ && arena.StreamingSlots(use, bytes)),
          start_(adaptive_ ? std::chrono::steady_clock::now()  // no clock read when unmeasured
                           : std::chrono::steady_clock::time_point()) {}
    // Copies into a slot, fenced when streaming, so the flag raised next publishes it.
    void Copy(uint8_t* slot, const void* src, size_t len) const {
      if (len == 0) return;
      if (streaming_) {
        StreamingCopy(slot, src, len);
        StreamingCopyFence();
      } else {
        std::memcpy(slot, src, len);
      }
    }
    // The operation went through: its time counts for the way it used.
    void Finish() {
      if (!adaptive_) return;
      arena_.ReportSlotCopy(use_, bytes_, streaming_,
                            std::chrono::duration<double, std::nano>(
                                std::chrono::steady_clock::now() - start_)
                                .count());
    }

   private:
    LocalArena& arena_;
    const SlotUse use_;
    const size_t bytes_;
    const bool adaptive_;
    const bool streaming_;
    const std::chrono::steady_clock::time_point start_;
  };

  // Each rank's flags, one 128-byte block each (see FlagLine), raised to a step's sequence number:
  //   kReady: its slot for the step is written;
  //   kPart:  its part of the step's result buffer is written;
  //   kDone:  it has finished reading everything of this step (and of every earlier one).
  // Every algorithm raises kDone for every step it takes, even one where it reads nothing. The
  // rule that keeps all algorithms safe with each other: before writing its slot or the result
  // buffer for step s, a rank waits until every rank is done with step s-2 (same parity).
  //   kInline0/kInline1: its inline data for a step of that parity is written (InlineData).
  enum class Flag { kReady = 0, kPart = 1, kDone = 2, kInline0 = 3, kInline1 = 4 };

  // Inline data: up to kInlineBytes of a step's input carried in the cache line of the flag that
  // announces it, so a reader gets flag and data in one cache-line transfer (the slots would cost
  // a second, dependent one). Two lines per rank, by step parity, under the same reuse rule as
  // the slots.
  static constexpr size_t kInlineBytes = 56;
  static Flag InlineFlag(uint64_t seq) { return (seq & 1) ? Flag::kInline1 : Flag::kInline0; }
  // Starts taking this rank's inline line for step `seq` back for writing: the peers read it in
  // the step before last, so it must leave their caches before this core may store to it; asked
  // for as the previous step ends, that round trip overlaps the return to the caller instead of
  // delaying the next step's store (2 ranks, 8 B: 0.55 -> 0.43-0.48 us with the vCPUs apart,
  // 0.23 -> 0.22 with them together). Measured no better for the ready flag and slot lines of
  // larger vectors (128 B: 0.61 -> 0.64), so only the inline line.
  void PrefetchInlineLine(uint64_t seq) const {
#if defined(__x86_64__)
    asm volatile("prefetchw (%0)" : : "r"(&Flags(rank_)->line[static_cast<int>(InlineFlag(seq))]));
#else
    (void)seq;
#endif
  }
  uint8_t* InlineData(int r, uint64_t seq) const {
    return reinterpret_cast<uint8_t*>(&Flags(r)->line[static_cast<int>(InlineFlag(seq))]) +
           sizeof(uint64_t);
  }

  // Single copy: whether every rank can read every other rank's memory with process_vm_readv
  // (same user, no ptrace restriction). Collective: the first call (every rank makes it in the
  // same operation) probes each peer, publishes this rank's verdict and waits for everyone's,
  // so all ranks get the same answer; later calls return it at once.
  Result<bool> SingleCopy(Deadline deadline);
  // Pulls `bytes` at `remote` in rank r's address space into `dst` (process_vm_readv).
  Status ReadFrom(int r, void* dst, uint64_t remote, size_t bytes) const;
  void Set(Flag f, uint64_t seq) { Publish(&Cell(rank_, f), seq); }
  // Set() for a flag the caller waits on its peers' copies of next (Wait): the store goes out at
  // once, but the check for sleepers to wake (a full fence, which would stall until this core
  // owns the flag's cache line before it may even look at the peers') is left to that Wait,
  // which makes it on every way out and before it sleeps itself. One cache-line transfer less
  // on the latency path.
  void Post(Flag f, uint64_t seq) {
    Cell(rank_, f).store(seq, std::memory_order_release);
    wake_pending_ = true;
  }
  // Waits until every rank's flag (or only `only_rank`'s) reaches seq. `check` is called now and
  // then while sleeping; a non-OK status from it ends the wait. Errors name the ranks missing.
  template <typename Check>
  Status Wait(Flag f, uint64_t seq, Deadline deadline, Check&& check, int only_rank = -1);
  template <typename Check>
  Status WaitWritable(uint64_t seq, Deadline deadline, Check&& check) {
    return seq <= 2 ? Status::Ok() : Wait(Flag::kDone, seq - 2, deadline, check);
  }

 private:
  // One flag per 128 bytes, not 64: x86 cores fetch cache lines in aligned pairs (the adjacent-
  // line prefetcher), so a peer polling one flag would otherwise pull in its neighbour too, and
  // the next store to that neighbour would stall on taking it back.
  struct alignas(128) FlagLine {
    std::atomic<uint64_t> value;
    char data[56];  // inline data, for the kInline lines (the first cache line only)
    char pad[64];
  };
  struct RankFlags {
    FlagLine line[5];
  };
  static_assert(sizeof(FlagLine) == 128 && sizeof(RankFlags) == 640);
  static constexpr size_t kHeaderBytes = 128 * 1024;
  struct Header;

  LocalArena() = default;
  RankFlags* Flags(int r) const { return reinterpret_cast<RankFlags*>(base_ + kHeaderBytes) + r; }
  // What a finished wait teaches about kDone: a rank raises any flag of step s only after its
  // kDone of step s-1 (every algorithm runs its steps in order and ends each with kDone), so
  // seeing every rank's flag at s means every rank is done with s-1. A later wait for kDone
  // that this already answers reads no peer's cache line.
  void Learned(Flag f, uint64_t seq, int only_rank) {
    if (only_rank >= 0) return;
    const uint64_t done = f == Flag::kDone ? seq : seq - 1;
    if (done > known_done_) known_done_ = done;
  }
  std::atomic<uint64_t>& Cell(int r, Flag f) const {
    return Flags(r)->line[static_cast<int>(f)].value;
  }
  void Publish(std::atomic<uint64_t>* flag, uint64_t seq);
  // The sleeper check a Post() left: fence, then wake sleepers if there are any.
  void WakeSleepers();
  void FlushWake() {
    if (wake_pending_) {
      wake_pending_ = false;
      WakeSleepers();
    }
  }
  bool AllReached(Flag f, uint64_t seq, int only_rank) const;
  // Ranks whose flag has not reached seq, and whether any of them has exited.
  std::string Missing(Flag f, uint64_t seq, int only_rank, bool* dead) const;
  void SleepOnce(Flag f, uint64_t seq, int only_rank);

  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  size_t slot_bytes_ = 0;
  int spin_us_ = 50;
  // Polls a waiter makes before it starts yielding between polls: few where ranks outnumber
  // cores (the rank it waits for may need this very core), more where each has its own.
  int pure_spin_polls_ = 256;
  bool wake_pending_ = false;  // a Post() whose sleeper check is still to be made
  uint64_t seq_ = 0;
  uint64_t known_done_ = 0;  // every rank has raised kDone at least this far (see Learned)
  // StreamingSlots' measurements per size class (1 MiB, 2 MiB, ... 1 GiB and up): smoothed ns per
  // byte of each way (0: not measured yet), operations seen, and the choice last logged.
  static constexpr int kSizeClasses = 11;
  static constexpr uint32_t kProbeEvery = 8;
  struct SlotCopyStats {
    double ns_per_byte[2] = {0, 0};  // [0] ordinary, [1] streaming
    uint32_t ops = 0;
    bool streaming = false;  // the choice last logged
    // Both ways measured, and streaming the faster.
    bool StreamingWins() const {
      return ns_per_byte[0] > 0 && ns_per_byte[1] > 0 && ns_per_byte[1] < ns_per_byte[0];
    }
  };
  SlotCopyStats slot_copy_[3][kSizeClasses];
  static int SizeClass(size_t bytes);
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  Header* header_ = nullptr;
  bool unlinked_ = false;
  int single_copy_ = -1;  // -1 unknown, 0 no, 1 yes
  std::vector<UniqueFd> pidfds_;
  std::vector<int> pids_;
  std::vector<int> world_ranks_;
};

template <typename Check>
Status LocalArena::Wait(Flag f, uint64_t seq, Deadline deadline, Check&& check, int only_rank) {
  if (f == Flag::kDone && known_done_ >= seq) {
    FlushWake();
    return Status::Ok();
  }
  if (AllReached(f, seq, only_rank)) {
    FlushWake();
    Learned(f, seq, only_rank);
    return Status::Ok();
  }
  // Spin first: with the peers running on other cores the flags flip within a microsecond. After
  // a short pure spin, yield between polls: with more ranks than cores the peer we wait for may
  // need this very core.
  const auto spin_until = Clock::now() + std::chrono::microseconds(spin_us_);
  int polls = 0;
  while (true) {
    if (AllReached(f, seq, only_rank)) {
      FlushWake();
      Learned(f, seq, only_rank);
      return Status::Ok();
    }
    if (polls == 0) FlushWake();  // the peers may sleep: tell them before spinning on
    if (++polls < pure_spin_polls_) {
      CpuRelax();
    } else {
      sched_yield();
    }
    if (polls % 16 == 0 && Clock::now() >= spin_until) break;
  }
  while (!AllReached(f, seq, only_rank)) {
    SleepOnce(f, seq, only_rank);
    bool dead = false;
    std::string missing = Missing(f, seq, only_rank, &dead);
    if (missing.empty()) break;  // reached (Learned below)
    if (dead) return UnavailableError(missing + " (shm arena)");
    WEFT_RETURN_IF_ERROR(check());
    if (deadline.Expired()) {
      return DeadlineExceededError("waiting for " + missing + " (shm arena)");
    }
  }
  Learned(f, seq, only_rank);
  return Status::Ok();
}

}  // namespace weft::collectives::internal
