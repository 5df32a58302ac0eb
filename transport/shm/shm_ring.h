// The lock-free single-producer single-consumer byte ring that carries shm transport traffic, and
// the frame header written through it. One ring per ordered rank pair lives in the receiver's
// segment; producer and consumer may be different processes mapping it at different addresses.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace weft::transport::shm {

// Control block at the start of each ring, shared between processes. `head` counts bytes ever
// published by the producer and `tail` bytes ever consumed; both only grow (64-bit: no wrap in
// practice). They sit on separate cache lines so the two sides do not false-share.
struct RingControl {
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
};
static_assert(sizeof(RingControl) == 128);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// Frame kinds. A message sent through the ring is one kMsg frame (carrying the total size and the
// first bytes) followed by kData frames until the total is reached; frames of different messages
// never interleave in one ring. kRts announces a single-copy message the receiver pulls from the
// sender's memory; kFin tells the sender that pull is over.
enum FrameKind : uint32_t {
  kFrameMsg = 1,
  kFrameData = 2,
  kFrameRts = 3,
  kFrameFin = 4,
};

// kFin result codes (FrameHeader::aux).
enum FinCode : uint64_t {
  kFinOk = 0,
  kFinSizeMismatch = 1,  // FrameHeader::total holds the receive's size
  kFinCopyFailed = 2,    // FrameHeader::total holds the errno of process_vm_readv
};

// Fixed-size header in front of every frame's payload. Frames start 8-byte aligned.
struct FrameHeader {
  uint32_t kind = 0;
  uint32_t len = 0;    // payload bytes following this header in this frame
  uint64_t tag = 0;    // kMsg, kRts
  uint64_t total = 0;  // message size (kMsg, kRts); see FinCode for kFin
  uint64_t id = 0;     // sender's message id (kRts, kFin)
  uint64_t aux = 0;    // kRts: the sender's buffer address; kFin: a FinCode
};
static_assert(sizeof(FrameHeader) == 40);

inline constexpr uint64_t kFrameAlign = 8;
inline constexpr uint64_t AlignFrame(uint64_t n) {
  return (n + kFrameAlign - 1) & ~(kFrameAlign - 1);
}
inline constexpr uint64_t FrameBytes(uint64_t payload) {
  return AlignFrame(sizeof(FrameHeader) + payload);
}

// One side's view of a ring: either the producer's or the consumer's, never both. Not
// thread-safe; the shm transport uses each view under its engine mutex. The capacity must be a
// multiple of kFrameAlign, so free space is always a multiple of it too.
class RingView {
 public:
  RingView() = default;
  RingView(RingControl* ctl, uint8_t* data, uint64_t capacity)
      : ctl_(ctl),
        data_(data),
        cap_(capacity),
        head_(ctl->head.load(std::memory_order_acquire)),
        tail_(ctl->tail.load(std::memory_order_acquire)) {}

  uint64_t capacity() const { return cap_; }

  // Producer: bytes that can be written now.
  uint64_t Free() {
    tail_ = ctl_->tail.load(std::memory_order_acquire);
    return cap_ - (head_ - tail_);
  }
  // Producer: writes one frame and publishes it. The caller checked Free() >= FrameBytes(len).
  void WriteFrame(const FrameHeader& h, const void* payload, uint64_t len) {
    CopyIn(head_, &h, sizeof(h));
    if (len > 0) CopyIn(head_ + sizeof(h), payload, len);
    head_ += FrameBytes(len);
    ctl_->head.store(head_, std::memory_order_release);
  }

  // Consumer: bytes published and not yet consumed.
  uint64_t Readable() {
    head_ = ctl_->head.load(std::memory_order_acquire);
    return head_ - tail_;
  }
  // Consumer: copies n bytes starting `offset` bytes past the consumed position.
  void ReadAt(uint64_t offset, void* dst, uint64_t n) const { CopyOut(tail_ + offset, dst, n); }
  // Consumer: releases n bytes to the producer.
  void Consume(uint64_t n) {
    tail_ += n;
    ctl_->tail.store(tail_, std::memory_order_release);
  }

 private:
  void CopyIn(uint64_t pos, const void* src, uint64_t n) {
    uint64_t at = pos % cap_;
    uint64_t first = std::min(n, cap_ - at);
    std::memcpy(data_ + at, src, first);
    if (n > first) std::memcpy(data_, static_cast<const uint8_t*>(src) + first, n - first);
  }
  void CopyOut(uint64_t pos, void* dst, uint64_t n) const {
    uint64_t at = pos % cap_;
    uint64_t first = std::min(n, cap_ - at);
    std::memcpy(dst, data_ + at, first);
    if (n > first) std::memcpy(static_cast<uint8_t*>(dst) + first, data_, n - first);
  }

  RingControl* ctl_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t head_ = 0;  // producer: own published head; consumer: last head seen
  uint64_t tail_ = 0;  // producer: last tail seen; consumer: own consumed position
};

}  // namespace weft::transport::shm
