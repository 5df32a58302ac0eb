// SpinWaitRequest: the Request that transports with their own progress engine hand out (tcp,
// ucx). The engine (or an abort) completes it exactly once; any thread observes it through Test().
// Wait() first spins briefly, letting the waiter drive the engine itself through a ProgressHook,
// then sleeps on a futex until the engine completes it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport {

// What a spinning waiter may drive: the part of the transport that will complete the request.
class ProgressHook {
 public:
  virtual ~ProgressHook() = default;
  // Moves whatever is ready without blocking; returns at once if another thread is busy.
  virtual void PollOnce() = 0;
  // Bracket a waiter's spin. `completed`: the request finished while spinning; false means the
  // waiter is about to sleep, and EndSleep() follows when it stops sleeping (for any reason).
  virtual void BeginSpin() {}
  virtual void EndSpin(bool completed) {}
  virtual void EndSleep() {}
  // Whether a waiter may poll without yielding for its first few microseconds: true only where
  // every rank of this host can have a core of its own, since a waiter that keeps its core then
  // delays no one it waits for.
  virtual bool SpinTight() const { return false; }
};

// Thread-safe. Holds no buffer; refers to its engine only weakly, so it may outlive it.
class SpinWaitRequest : public Request {
 public:
  enum class Kind { kSend, kRecv };
  // `transport` names it in messages ("tcp send of 8 bytes (tag 0x2a) to rank 1"); `spin_us` is
  // how long Wait() spins before sleeping.
  SpinWaitRequest(const char* transport, Kind kind, int peer, uint64_t tag, size_t size,
                  std::weak_ptr<ProgressHook> hook, int64_t spin_us)
      : transport_(transport),
        kind_(kind),
        peer_(peer),
        tag_(tag),
        size_(size),
        hook_(std::move(hook)),
        spin_us_(spin_us) {}

  // Not done yet: first lets the engine move what is ready (without blocking), as a spinning
  // Wait() would, so a caller that only tests still makes progress when the engine's own thread
  // is not listening (poll mode).
  bool Test() override;
  bool Done() const override { return done(); }
  // DeadlineExceeded (naming the operation, size, tag and peer) while still pending.
  Status Wait(Deadline deadline) override;
  Status status() const override;

  // Completes the request with `s` and wakes its waiters; false if it had already completed.
  bool Complete(Status s);
  bool done() const { return done_.load(std::memory_order_acquire) != 0; }
  size_t size() const { return size_; }
  std::string Describe() const;

 private:
  // Sleeps on the futex until done or the deadline.
  Status Sleep(Deadline deadline);

  const char* transport_;
  const Kind kind_;
  const int peer_;
  const uint64_t tag_;
  const size_t size_;
  const std::weak_ptr<ProgressHook> hook_;
  const int64_t spin_us_;
  std::atomic<bool> claimed_{false};
  // 0 while pending, 1 once status_ is final; the futex word Wait() sleeps on.
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> waiters_{0};
  Status status_;  // written once, before done_ is set
};

// "0x2a": tags are printed in hex in every transport's messages.
std::string HexTag(uint64_t tag);

}  // namespace weft::transport
