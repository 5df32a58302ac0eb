// TcpRequest: the Request returned by TCP sends and receives. The progress thread (or an abort)
// completes it exactly once; any thread observes it through Test(). Wait() first spins briefly,
// helping its peer's sockets along, then sleeps on a futex until the progress thread completes it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport::tcp {

// What a spinning waiter may help along: the peer whose sockets will complete the request.
class ProgressSource {
 public:
  virtual ~ProgressSource() = default;
  // Moves whatever data is ready without blocking; returns at once if another thread is busy.
  virtual void PollOnce() = 0;
};

// Thread-safe. Holds no buffer: the peer state that will complete it holds a shared_ptr to it, so
// dropping the caller's handle early is harmless; it refers back to that peer only weakly.
class TcpRequest final : public Request {
 public:
  enum class Kind { kSend, kRecv };
  TcpRequest(Kind kind, int peer, uint64_t tag, size_t size, std::weak_ptr<ProgressSource> source)
      : kind_(kind), peer_(peer), tag_(tag), size_(size), source_(std::move(source)) {}

  bool Test() override { return done_.load(std::memory_order_acquire) != 0; }
  // DeadlineExceeded (naming the operation, size, tag and peer) while still pending.
  Status Wait(Deadline deadline) override;
  Status status() const override;

  // Completes the request with `s` and wakes its waiters; false if it had already completed.
  bool Complete(Status s);

 private:
  std::string Describe() const;

  const Kind kind_;
  const int peer_;
  const uint64_t tag_;
  const size_t size_;
  const std::weak_ptr<ProgressSource> source_;
  std::atomic<bool> claimed_{false};
  // 0 while pending, 1 once status_ is final; the futex word Wait() sleeps on.
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> waiters_{0};
  Status status_;  // written once, before done_ is set
};

// "0x2a": tags are printed in hex everywhere in this transport.
std::string TagString(uint64_t tag);

}  // namespace weft::transport::tcp
