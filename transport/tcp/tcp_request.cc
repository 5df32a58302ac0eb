#include "transport/tcp/tcp_request.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <ctime>

#include "base/env.h"

namespace weft::transport::tcp {
namespace {

WEFT_ENV_KNOB(kWaitSpinUs, "WEFT_TCP_WAIT_SPIN_US", "50",
              "microseconds a TCP request Wait() spins (polling its peer) before it sleeps");

// std::atomic<uint32_t> is a plain 32-bit word on Linux, which is what the futex calls want.
uint32_t* FutexWord(std::atomic<uint32_t>& a) { return reinterpret_cast<uint32_t*>(&a); }

}  // namespace

std::string TagString(uint64_t tag) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(tag));
  return buf;
}

std::string TcpRequest::Describe() const {
  return std::string(kind_ == Kind::kSend ? "tcp send of " : "tcp receive of ") +
         std::to_string(size_) + " bytes (tag " + TagString(tag_) + ") " +
         (kind_ == Kind::kSend ? "to" : "from") + " rank " + std::to_string(peer_);
}

Status TcpRequest::status() const {
  if (done_.load(std::memory_order_acquire) == 0) {
    return Status(StatusCode::kUnknown, Describe() + " is still pending");
  }
  return status_;
}

bool TcpRequest::Complete(Status s) {
  if (claimed_.exchange(true, std::memory_order_acq_rel)) return false;
  status_ = std::move(s);
  // seq_cst pairs with the waiter's seq_cst increment of waiters_ and its re-check of done_:
  // either the waiter sees done_ set, or this side sees the waiter and wakes it.
  done_.store(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) {
    syscall(SYS_futex, FutexWord(done_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }
  return true;
}

Status TcpRequest::Wait(Deadline deadline) {
  if (Test()) return status_;
  // Waking a sleeping thread costs tens of microseconds on these machines, twice per message
  // (the progress thread, then the waiter). So the waiter first spins, and while it spins it moves
  // its peer's ready data itself, which makes small-message round trips close to raw sockets.
  // The progress thread still guarantees progress; this only takes the hand-offs out of the path.
  static const int64_t spin_us = kWaitSpinUs.GetInt();
  if (spin_us > 0) {
    Deadline spin_end = Deadline::After(std::chrono::microseconds(spin_us)).Min(deadline);
    std::shared_ptr<ProgressSource> source = source_.lock();
    int i = 0;
    while (!Test()) {
      if (source) source->PollOnce();
      // Yielding keeps the spin cheap when threads outnumber cores (several ranks per core, or
      // a test pinned to one): whoever must run to complete this request gets the core. With
      // nothing else runnable it returns at once.
      sched_yield();
      if ((++i & 3) == 0 && spin_end.Expired()) break;
    }
    if (Test()) return status_;
  }
  while (true) {
    if (Test()) return status_;
    if (deadline.Expired()) {
      return DeadlineExceededError(Describe() + " is still pending at the deadline");
    }
    // Sleep at most a second at a time so a clock oddity never strands a waiter.
    auto left = std::min<std::chrono::nanoseconds>(deadline.Remaining(), std::chrono::seconds(1));
    timespec ts;
    ts.tv_sec = static_cast<time_t>(left.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(left.count() % 1000000000);
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    if (done_.load(std::memory_order_seq_cst) == 0) {
      syscall(SYS_futex, FutexWord(done_), FUTEX_WAIT_PRIVATE, 0, &ts, nullptr, 0);
    }
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace weft::transport::tcp
