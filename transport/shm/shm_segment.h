// A rank's POSIX shared-memory segment for the shm transport: its layout (header, per-peer
// "mapped" flags, one inbound ring per peer rank) and an RAII mapping that creates, opens,
// unlinks and unmaps it. Used only by shm_transport.cc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/hmac.h"
#include "base/status.h"
#include "transport/shm/shm_ring.h"

namespace weft::transport::shm {

inline constexpr uint64_t kSegmentMagic = 0x31746d6873746677ULL;  // "wftshmt1"
inline constexpr uint32_t kSegmentVersion = 1;

// Values a connector stores in the owner's mapped flag for its rank.
enum MappedFlag : uint32_t {
  kNotMapped = 0,
  kMappedNoCma = 1,  // mapped; cannot read the owner's memory with process_vm_readv
  kMappedCma = 2,    // mapped; reads the owner's memory with process_vm_readv
};

// At offset 0 of every segment. The owner fills every field, then sets `ready` (release);
// connectors read nothing before they see `ready` == 1 (acquire).
struct SegmentHeader {
  uint64_t magic;
  uint32_t version;
  int32_t rank;
  int32_t world_size;
  int32_t pid;
  uint64_t ring_capacity;
  uint64_t total_bytes;
  // A word in the owner's memory and its value: a connector that can read it with
  // process_vm_readv may pull large messages straight from the owner's buffers.
  uint64_t cma_probe_addr;
  uint64_t cma_probe_value;
  // HMAC(job secret, segment name): a connector refuses a segment made without the secret.
  uint8_t secret_digest[32];
  alignas(64) std::atomic<uint32_t> ready;
  // Futex word every writer into this segment bumps; the owner's threads sleep on it. `sleepers`
  // counts owner threads that are asleep or about to be, so writers skip FUTEX_WAKE otherwise.
  alignas(64) std::atomic<uint32_t> doorbell;
  std::atomic<uint32_t> sleepers;
};

struct SegmentParams {
  int rank = 0;
  int world_size = 1;
  uint64_t ring_capacity = 0;  // multiple of kFrameAlign
  uint64_t cma_probe_addr = 0;
  uint64_t cma_probe_value = 0;
  Digest256 secret_digest{};
};

// One mapping of a segment, owned (created by this process) or opened (a peer's). Movable, not
// copyable; unmaps on destruction, and the owner unlinks the name then too if it has not yet.
// Not thread-safe; the header's atomics are what processes share.
class SharedSegment {
 public:
  SharedSegment() = default;
  ~SharedSegment();
  SharedSegment(SharedSegment&& o) noexcept;
  SharedSegment& operator=(SharedSegment&& o) noexcept;
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;

  // Creates `name` (mode 0600) and initialises it. A leftover segment whose owner process is gone
  // is replaced; one whose owner lives gives AlreadyExists (job_id not unique).
  static Result<SharedSegment> Create(const std::string& name, const SegmentParams& params);
  // Maps an existing segment. NotFound while it does not exist or its owner has not finished
  // initialising it (callers retry); FailedPrecondition for a segment that is not weft's.
  static Result<SharedSegment> Open(const std::string& name);

  bool valid() const { return base_ != nullptr; }
  const std::string& name() const { return name_; }
  SegmentHeader* header() const { return reinterpret_cast<SegmentHeader*>(base_); }
  // The flag connector `rank` sets in this (the owner's) segment once it has mapped it.
  std::atomic<uint32_t>& mapped_flag(int rank) const;
  // The view of the ring carrying messages from `from_rank` to this segment's owner.
  RingView Ring(int from_rank) const;
  // Removes the name (owner only; idempotent). Mappings stay valid.
  void Unlink();

 private:
  void Reset();

  std::string name_;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool linked_ = false;  // this process created the name and has not unlinked it
};

// Rings the owner's doorbell: bumps it, then wakes sleepers if any. Call after publishing work for
// the owner (ring data, flags) so a sleeper cannot miss it.
void RingDoorbell(SegmentHeader* header);

}  // namespace weft::transport::shm
