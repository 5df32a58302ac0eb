#include "transport/ucx/ucx_request.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <ctime>

#include "base/env.h"

namespace weft::transport::ucx {
namespace {

WEFT_ENV_KNOB(kWaitSpinUs, "WEFT_UCX_WAIT_SPIN_US", "50",
              "microseconds a UCX request Wait() spins (driving the UCP worker) before it sleeps");

uint32_t* FutexWord(std::atomic<uint32_t>& a) { return reinterpret_cast<uint32_t*>(&a); }

}  // namespace

std::string HexTag(uint64_t tag) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(tag));
  return buf;
}

std::string UcxRequest::Describe() const {
  return std::string(kind_ == Kind::kSend ? "ucx send of " : "ucx receive of ") +
         std::to_string(size_) + " bytes (tag " + HexTag(tag_) + ") " +
         (kind_ == Kind::kSend ? "to" : "from") + " rank " + std::to_string(peer_);
}

Status UcxRequest::status() const {
  if (done_.load(std::memory_order_acquire) == 0) {
    return Status(StatusCode::kUnknown, Describe() + " is still pending");
  }
  return status_;
}

bool UcxRequest::Complete(Status s) {
  if (claimed_.exchange(true, std::memory_order_acq_rel)) return false;
  status_ = std::move(s);
  // seq_cst pairs with the waiter's increment of waiters_ and its re-check of done_.
  done_.store(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) {
    syscall(SYS_futex, FutexWord(done_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }
  return true;
}

Status UcxRequest::Wait(Deadline deadline) {
  if (Test()) return status_;
  // Waking a sleeping thread costs tens of microseconds here, so the waiter first drives the
  // worker itself: a small-message round trip then involves no thread hand-off at all. The
  // progress thread still guarantees progress when nobody spins.
  static const int64_t spin_us = kWaitSpinUs.GetInt();
  if (spin_us > 0) {
    Deadline spin_end = Deadline::After(std::chrono::microseconds(spin_us)).Min(deadline);
    std::shared_ptr<Progressor> progressor = progressor_.lock();
    if (progressor) progressor->BeginSpin();
    int i = 0;
    while (!Test()) {
      if (progressor) progressor->PollOnce();
      if (Test()) break;
      // Keeps the spin cheap when threads outnumber cores: whoever must run gets the core.
      sched_yield();
      if ((++i & 3) == 0 && spin_end.Expired()) break;
    }
    if (progressor) progressor->EndSpin(Test());
    if (Test()) return status_;
  }
  while (true) {
    if (Test()) return status_;
    if (deadline.Expired()) {
      return DeadlineExceededError(Describe() + " is still pending at the deadline");
    }
    // At most a second per sleep, so a clock oddity never strands a waiter.
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

}  // namespace weft::transport::ucx
