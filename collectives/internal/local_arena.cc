#include "collectives/internal/local_arena.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/futex.h"
#include "base/logging.h"
#include "base/reduce_kernels.h"
#include "transport/transport.h"

namespace weft::collectives::internal {

namespace {
constexpr uint64_t kMagic = 0x776566742d617232ull;  // "weft-ar2"
constexpr int kMaxRanks = 4096;
constexpr uint64_t kProbeValue = 0x70726f62652d6f6bull;  // "probe-ok"
// What peers read with process_vm_readv to learn whether they may read this process.
const volatile uint64_t g_cma_probe = kProbeValue;
}  // namespace

struct LocalArena::Header {
  std::atomic<uint64_t> magic;
  uint32_t size;
  uint32_t pad;
  uint64_t slot_bytes;
  alignas(64) std::atomic<uint32_t> sleepers;
  alignas(64) std::atomic<uint32_t> doorbell;
  alignas(64) std::atomic<int32_t> pids[kMaxRanks];
  // Address of g_cma_probe in each rank's process, and each rank's single-copy verdict
  // (0 not yet, 1 cannot read some peer, 2 can read every peer).
  alignas(64) std::atomic<uint64_t> probe_addr[kMaxRanks];
  alignas(64) std::atomic<uint8_t> cma_verdict[kMaxRanks];
};

Result<std::unique_ptr<LocalArena>> LocalArena::Attach(const Config& c, Deadline deadline) {
  if (c.size < 1 || c.size > kMaxRanks || c.rank < 0 || c.rank >= c.size || c.slot_bytes == 0) {
    return InvalidArgumentError("local arena: bad configuration");
  }
  static_assert(sizeof(Header) <= kHeaderBytes);
  std::unique_ptr<LocalArena> a(new LocalArena());
  a->name_ = c.name;
  a->rank_ = c.rank;
  a->size_ = c.size;
  a->slot_bytes_ = (c.slot_bytes + 63) / 64 * 64;
  a->spin_us_ = c.spin_us;
  // With more ranks than cores, the peer a waiter needs is often queued behind it on the same
  // core: keep yielding (cheap when others are runnable) rather than sleep.
  if (!transport::RanksFitCores(c.size)) {
    a->spin_us_ = std::max<int>(a->spin_us_, transport::kOversubscribedSpinUs);
    a->pure_spin_polls_ = 4;
  }
  a->bytes_ = kHeaderBytes + sizeof(RankFlags) * c.size + a->slot_bytes_ * (2 * c.size + 2);
  UniqueFd fd;
  if (c.rank == 0) {
    shm_unlink(c.name.c_str());  // a leftover of a crashed job with the same id
    fd.Reset(shm_open(c.name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoError("local arena: shm_open " + c.name, errno);
    int rc = posix_fallocate(fd.get(), 0, static_cast<off_t>(a->bytes_));
    if (rc != 0) {
      shm_unlink(c.name.c_str());
      return Status(StatusCode::kResourceExhausted,
                    "local arena: cannot reserve " + std::to_string(a->bytes_ >> 20) +
                        " MiB in /dev/shm (" + std::strerror(rc) +
                        "); lower WEFT_SHM_COLL_CHUNK_BYTES or enlarge /dev/shm");
    }
  } else {
    auto nap = std::chrono::microseconds(100);
    while (true) {
      fd.Reset(shm_open(c.name.c_str(), O_RDWR | O_CLOEXEC, 0600));
      if (fd.valid()) break;
      if (errno != ENOENT) return ErrnoError("local arena: shm_open " + c.name, errno);
      if (deadline.Expired()) {
        return DeadlineExceededError("local arena " + c.name +
                                     " was not created by rank 0 in time");
      }
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(20000));
    }
  }
  // Wait until the creator has sized it (a segment opened too early is still empty).
  while (true) {
    off_t end = lseek(fd.get(), 0, SEEK_END);
    if (end >= static_cast<off_t>(a->bytes_)) break;
    if (deadline.Expired()) return DeadlineExceededError("local arena " + c.name + " never sized");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  void* p = mmap(nullptr, a->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoError("local arena: mmap", errno);
  a->base_ = static_cast<uint8_t*>(p);
  a->header_ = reinterpret_cast<Header*>(a->base_);
  if (c.rank == 0) {
    a->header_->size = static_cast<uint32_t>(c.size);
    a->header_->slot_bytes = a->slot_bytes_;
    a->header_->magic.store(kMagic, std::memory_order_release);
  } else {
    while (a->header_->magic.load(std::memory_order_acquire) != kMagic) {
      if (deadline.Expired()) {
        return DeadlineExceededError("local arena " + c.name + " never initialised");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (a->header_->size != static_cast<uint32_t>(c.size) ||
        a->header_->slot_bytes != a->slot_bytes_) {
      return FailedPreconditionError("local arena " + c.name + " has a different shape");
    }
  }
  a->header_->probe_addr[c.rank].store(reinterpret_cast<uintptr_t>(&g_cma_probe),
                                       std::memory_order_relaxed);
  a->header_->pids[c.rank].store(static_cast<int32_t>(getpid()), std::memory_order_release);
  a->world_ranks_ = c.world_ranks;
  if (a->world_ranks_.size() != static_cast<size_t>(c.size)) {
    a->world_ranks_.resize(c.size);
    for (int r = 0; r < c.size; ++r) a->world_ranks_[r] = r;
  }
  a->pidfds_.resize(c.size);
  a->pids_.assign(c.size, 0);
  return a;
}

Result<bool> LocalArena::SingleCopy(Deadline deadline) {
  if (single_copy_ >= 0) return single_copy_ == 1;
  // Every rank attached (and so published its pid and probe address) before the barrier that
  // ended the communicator's creation, so both are set by the time any operation runs.
  // With more ranks than cores, single copies measured far slower than the slots (4 ranks on 2
  // cores, all-gather of 1 MiB: 1.7 ms against 0.23): every rank pulls from every other while
  // the owners wait their turn for a core. Part of the verdict, so that the ranks agree on it.
  bool mine = transport::RanksFitCores(size_);
  for (int r = 0; r < size_ && mine; ++r) {
    if (r == rank_) continue;
    uint64_t got = 0;
    const uint64_t addr = header_->probe_addr[r].load(std::memory_order_relaxed);
    mine = addr != 0 && ReadFrom(r, &got, addr, sizeof(got)).ok() && got == kProbeValue;
  }
  header_->cma_verdict[rank_].store(mine ? 2 : 1, std::memory_order_release);
  bool all = true;
  for (int r = 0; r < size_; ++r) {
    uint8_t v;
    int polls = 0;
    while ((v = header_->cma_verdict[r].load(std::memory_order_acquire)) == 0) {
      if (deadline.Expired()) {
        return DeadlineExceededError("rank " + std::to_string(world_ranks_[r]) +
                                     " never reported whether it can read its peers' memory");
      }
      if (++polls < 64) {
        sched_yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    all = all && v == 2;
  }
  single_copy_ = all ? 1 : 0;
  return all;
}

int LocalArena::SizeClass(size_t bytes) {
  int c = 0;
  for (size_t b = bytes >> 21; b != 0 && c < kSizeClasses - 1; b >>= 1) ++c;
  return c;
}

bool LocalArena::StreamingSlots(SlotUse use, size_t bytes) {
  SlotCopyStats& st = slot_copy_[static_cast<int>(use)][SizeClass(bytes)];
  const uint32_t op = st.ops++;
  if (st.ns_per_byte[0] == 0) return false;
  if (st.ns_per_byte[1] == 0) return true;
  const bool best = st.StreamingWins();
  // Where one way is far behind, probing it costs more and tells less: try it a quarter as often.
  const double lo = std::min(st.ns_per_byte[0], st.ns_per_byte[1]);
  const double hi = std::max(st.ns_per_byte[0], st.ns_per_byte[1]);
  const uint32_t every = hi > 1.5 * lo ? 4 * kProbeEvery : kProbeEvery;
  return op % every == every - 1 ? !best : best;
}

void LocalArena::ReportSlotCopy(SlotUse use, size_t bytes, bool streaming, double ns) {
  static const char* const kUse[] = {"all-reduce", "broadcast", "all-gather"};
  SlotCopyStats& st = slot_copy_[static_cast<int>(use)][SizeClass(bytes)];
  const double x = ns / static_cast<double>(std::max<size_t>(bytes, 1));
  double& avg = st.ns_per_byte[streaming ? 1 : 0];
  avg = avg == 0 ? x : 0.7 * avg + 0.3 * x;
  const bool now = st.StreamingWins();
  if (now != st.streaming) {
    st.streaming = now;
    WEFT_LOG(DEBUG) << "shm arena rank " << rank_ << ": " << kUse[static_cast<int>(use)]
                    << "s of " << bytes << " bytes now copy into the slots with "
                    << (now ? "streaming" : "ordinary") << " stores (ordinary "
                    << st.ns_per_byte[0] * 1e6 << " ns/MB, streaming " << st.ns_per_byte[1] * 1e6
                    << " ns/MB)";
  }
}

Status LocalArena::ReadFrom(int r, void* dst, uint64_t remote, size_t bytes) const {
  const int pid = header_->pids[r].load(std::memory_order_acquire);
  size_t done = 0;
  while (done < bytes) {
    iovec local{static_cast<uint8_t*>(dst) + done, bytes - done};
    iovec far{reinterpret_cast<void*>(remote + done), bytes - done};
    ssize_t n = process_vm_readv(pid, &local, 1, &far, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return ErrnoError("reading " + std::to_string(bytes) + " bytes from rank " +
                            std::to_string(world_ranks_[r]) + " (pid " + std::to_string(pid) +
                            ") with process_vm_readv",
                        n < 0 ? errno : EFAULT);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

LocalArena::~LocalArena() {
  Unlink();
  if (base_) munmap(base_, bytes_);
}

void LocalArena::Unlink() {
  if (!unlinked_ && rank_ == 0 && !name_.empty()) shm_unlink(name_.c_str());
  unlinked_ = true;
}

void LocalArena::Publish(std::atomic<uint64_t>* flag, uint64_t seq) {
  flag->store(seq, std::memory_order_release);
  wake_pending_ = false;  // this check covers earlier Post()s too
  WakeSleepers();
}

void LocalArena::WakeSleepers() {
  // Pairs with the sleeper's fence: either it sees the flag, or we see it asleep and wake it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (header_->sleepers.load(std::memory_order_relaxed) > 0) {
    header_->doorbell.fetch_add(1, std::memory_order_relaxed);
    FutexWakeAll(&header_->doorbell, FutexScope::kShared);
  }
}

bool LocalArena::AllReached(Flag f, uint64_t seq, int only_rank) const {
  if (only_rank >= 0) return Cell(only_rank, f).load(std::memory_order_acquire) >= seq;
  for (int r = 0; r < size_; ++r) {
    if (Cell(r, f).load(std::memory_order_acquire) < seq) return false;
  }
  return true;
}

void LocalArena::SleepOnce(Flag f, uint64_t seq, int only_rank) {
  uint32_t bell = header_->doorbell.load(std::memory_order_relaxed);
  header_->sleepers.fetch_add(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!AllReached(f, seq, only_rank)) {
    // 10 ms: bounds how late death or a deadline is noticed.
    FutexWait(&header_->doorbell, bell, std::chrono::milliseconds(10), FutexScope::kShared);
  }
  header_->sleepers.fetch_sub(1, std::memory_order_relaxed);
}

std::string LocalArena::Missing(Flag f, uint64_t seq, int only_rank, bool* dead) const {
  std::string out;
  auto* self = const_cast<LocalArena*>(this);
  for (int r = 0; r < size_; ++r) {
    if (only_rank >= 0 && r != only_rank) continue;
    if (Cell(r, f).load(std::memory_order_acquire) >= seq) continue;
    int pid = header_->pids[r].load(std::memory_order_acquire);
    bool gone = false;
    if (pid > 0) {
      if (self->pids_[r] != pid) {
        self->pids_[r] = pid;
        self->pidfds_[r].Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
      }
      if (self->pidfds_[r].valid()) {
        pollfd p{self->pidfds_[r].get(), POLLIN, 0};
        gone = poll(&p, 1, 0) > 0;
      } else {
        gone = kill(pid, 0) != 0 && errno == ESRCH;
      }
    }
    if (gone) {
      *dead = true;
      return "rank " + std::to_string(world_ranks_[r]) + " (pid " + std::to_string(pid) +
             ") exited";
    }
    out += (out.empty() ? "rank " : ", ") + std::to_string(world_ranks_[r]);
  }
  return out;
}

}  // namespace weft::collectives::internal
