// UcxRequest: the Request returned by UCX sends and receives. The transport completes it exactly
// once (from whichever thread is driving the UCP worker, or from an abort); any thread observes
// it. Wait() first spins briefly, driving the worker itself, then sleeps on a futex.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport::ucx {

// What a spinning waiter may drive: the transport's UCP worker.
class Progressor {
 public:
  virtual ~Progressor() = default;
  // Progresses the worker once without blocking; returns at once if another thread holds it.
  virtual void PollOnce() = 0;
  // Bracket a waiter's spin (see "Progress modes" in ucx_transport.cc). `completed`: the
  // request finished while spinning; false means the waiter is about to sleep.
  virtual void BeginSpin() {}
  virtual void EndSpin(bool completed) {}
};

// Thread-safe. Holds no buffer; refers to its transport only weakly, so it may outlive it.
class UcxRequest final : public Request {
 public:
  enum class Kind { kSend, kRecv };
  UcxRequest(Kind kind, int peer, uint64_t tag, size_t size, std::weak_ptr<Progressor> progressor)
      : kind_(kind), peer_(peer), tag_(tag), size_(size), progressor_(std::move(progressor)) {}

  bool Test() override { return done_.load(std::memory_order_acquire) != 0; }
  // DeadlineExceeded (naming the operation, size, tag and peer) while still pending.
  Status Wait(Deadline deadline) override;
  Status status() const override;

  // Completes the request with `s` and wakes its waiters; false if it had already completed.
  bool Complete(Status s);
  bool done() const { return done_.load(std::memory_order_acquire) != 0; }
  // "ucx receive of 8 bytes (tag 0x2a) from rank 1"
  std::string Describe() const;

 private:
  const Kind kind_;
  const int peer_;
  const uint64_t tag_;
  const size_t size_;
  const std::weak_ptr<Progressor> progressor_;
  std::atomic<bool> claimed_{false};
  // 0 while pending, 1 once status_ is final; the futex word Wait() sleeps on.
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> waiters_{0};
  Status status_;  // written once, before done_ is set
};

// "0x2a"
std::string HexTag(uint64_t tag);

}  // namespace weft::transport::ucx
