#include "transport/shm/shm_segment.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

#include "base/futex.h"

namespace weft::transport::shm {
namespace {

constexpr uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Byte offsets inside a segment; both sides derive them from the header's world_size and ring
// capacity, so the layout itself is never stored.
struct Layout {
  uint64_t flags_offset;
  uint64_t rings_offset;
  uint64_t ring_stride;
  uint64_t total;
};

Layout LayoutFor(int world_size, uint64_t ring_capacity) {
  Layout l;
  l.flags_offset = RoundUp(sizeof(SegmentHeader), 64);
  l.rings_offset = l.flags_offset + RoundUp(sizeof(std::atomic<uint32_t>) * world_size, 64);
  l.ring_stride = sizeof(RingControl) + RoundUp(ring_capacity, 64);
  l.total = l.rings_offset + l.ring_stride * static_cast<uint64_t>(world_size);
  return l;
}

// True when `pid` certainly no longer exists (a stale segment's owner).
bool ProcessGone(int pid) { return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH; }

}  // namespace

SharedSegment::~SharedSegment() { Reset(); }

SharedSegment::SharedSegment(SharedSegment&& o) noexcept
    : name_(std::move(o.name_)),
      base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      linked_(std::exchange(o.linked_, false)) {}

SharedSegment& SharedSegment::operator=(SharedSegment&& o) noexcept {
  if (this != &o) {
    Reset();
    name_ = std::move(o.name_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    linked_ = std::exchange(o.linked_, false);
  }
  return *this;
}

void SharedSegment::Reset() {
  Unlink();
  if (base_ != nullptr) munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

void SharedSegment::Unlink() {
  if (linked_) shm_unlink(name_.c_str());
  linked_ = false;
}

Result<SharedSegment> SharedSegment::Create(const std::string& name, const SegmentParams& params) {
  const Layout layout = LayoutFor(params.world_size, params.ring_capacity);
  int fd = -1;
  for (int attempt = 0; attempt < 2 && fd < 0; ++attempt) {
    fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) break;
    if (errno != EEXIST) return ErrnoError("shm: creating segment " + name, errno);
    // A segment left by a crashed run with the same job_id is replaced; a live owner is a
    // configuration error that must not be clobbered.
    auto old = Open(name);
    int owner = old.ok() ? old->header()->pid : 0;
    if (attempt == 0 && old.ok() && ProcessGone(owner)) {
      shm_unlink(name.c_str());
      continue;
    }
    return AlreadyExistsError("shm: segment " + name + " already exists" +
                              (owner > 0 ? " (owner pid " + std::to_string(owner) + ")" : "") +
                              "; is job_id unique per job?");
  }
  if (fd < 0) return AlreadyExistsError("shm: segment " + name + " keeps reappearing");
  SharedSegment seg;
  seg.name_ = name;
  seg.linked_ = true;  // from here on, failures unlink the name via the destructor
  if (ftruncate(fd, static_cast<off_t>(layout.total)) != 0) {
    int err = errno;
    close(fd);
    return ErrnoError(
        "shm: sizing segment " + name + " to " + std::to_string(layout.total) + " bytes", err);
  }
  // Reserve the pages now: on a full tmpfs (a container's small /dev/shm) a later write into an
  // unbacked page would be SIGBUS instead of this error.
  if (int rc = posix_fallocate(fd, 0, static_cast<off_t>(layout.total));
      rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
    close(fd);
    return ResourceExhaustedError("shm: cannot reserve " + std::to_string(layout.total) +
                                  " bytes for segment " + name + " (" + std::strerror(rc) +
                                  "); enlarge /dev/shm or lower WEFT_SHM_RING_BYTES");
  }
  void* p = mmap(nullptr, layout.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) return ErrnoError("shm: mapping segment " + name, err);
  seg.base_ = static_cast<uint8_t*>(p);
  seg.size_ = layout.total;

  // ftruncate zero-filled the file: the atomics already hold 0; construct them to say so.
  auto* h = new (seg.base_) SegmentHeader{};
  h->magic = kSegmentMagic;
  h->version = kSegmentVersion;
  h->rank = params.rank;
  h->world_size = params.world_size;
  h->pid = static_cast<int32_t>(getpid());
  h->ring_capacity = params.ring_capacity;
  h->total_bytes = layout.total;
  h->cma_probe_addr = params.cma_probe_addr;
  h->cma_probe_value = params.cma_probe_value;
  std::memcpy(h->secret_digest, params.secret_digest.data(), sizeof(h->secret_digest));
  for (int r = 0; r < params.world_size; ++r) {
    new (&seg.mapped_flag(r)) std::atomic<uint32_t>(kNotMapped);
    uint8_t* ring = seg.base_ + layout.rings_offset + layout.ring_stride * r;
    new (ring) RingControl{};
  }
  h->ready.store(1, std::memory_order_release);
  return seg;
}

Result<SharedSegment> SharedSegment::Open(const std::string& name) {
  int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError("shm: segment " + name + " does not exist yet");
    return ErrnoError("shm: opening segment " + name, errno);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ErrnoError("shm: stat of segment " + name, err);
  }
  // Size 0: the owner created the name but has not sized it yet.
  if (static_cast<uint64_t>(st.st_size) < sizeof(SegmentHeader)) {
    close(fd);
    return NotFoundError("shm: segment " + name + " is not initialised yet");
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) return ErrnoError("shm: mapping segment " + name, err);
  SharedSegment seg;
  seg.name_ = name;
  seg.base_ = static_cast<uint8_t*>(p);
  seg.size_ = size;
  SegmentHeader* h = seg.header();
  if (h->ready.load(std::memory_order_acquire) != 1) {
    return NotFoundError("shm: segment " + name + " is not initialised yet");
  }
  if (h->magic != kSegmentMagic || h->version != kSegmentVersion) {
    return FailedPreconditionError("shm: " + name + " is not a weft shm segment of version " +
                                   std::to_string(kSegmentVersion));
  }
  if (h->world_size <= 0 || h->rank < 0 || h->rank >= h->world_size ||
      h->ring_capacity % kFrameAlign != 0 || h->ring_capacity < 2 * FrameBytes(0) ||
      LayoutFor(h->world_size, h->ring_capacity).total != size || h->total_bytes != size) {
    return FailedPreconditionError("shm: segment " + name + " has an inconsistent header");
  }
  return seg;
}

std::atomic<uint32_t>& SharedSegment::mapped_flag(int rank) const {
  const Layout l = LayoutFor(header()->world_size, header()->ring_capacity);
  return reinterpret_cast<std::atomic<uint32_t>*>(base_ + l.flags_offset)[rank];
}

RingView SharedSegment::Ring(int from_rank) const {
  const Layout l = LayoutFor(header()->world_size, header()->ring_capacity);
  uint8_t* ring = base_ + l.rings_offset + l.ring_stride * from_rank;
  return RingView(reinterpret_cast<RingControl*>(ring), ring + sizeof(RingControl),
                  header()->ring_capacity);
}

void RingDoorbell(SegmentHeader* header) {
  // seq_cst on both sides (here and in the sleeper's sleepers++ before FUTEX_WAIT) makes it a
  // Dekker pair: either the sleeper sees the new doorbell value, or we see it sleeping.
  header->doorbell.fetch_add(1, std::memory_order_seq_cst);
  if (header->sleepers.load(std::memory_order_seq_cst) != 0) {
    FutexWakeAll(&header->doorbell, FutexScope::kShared);
  }
}

}  // namespace weft::transport::shm
