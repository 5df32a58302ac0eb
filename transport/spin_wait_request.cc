#include "transport/spin_wait_request.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "base/cpu_relax.h"
#include "base/futex.h"

namespace weft::transport {
namespace {

}  // namespace

std::string HexTag(uint64_t tag) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(tag));
  return buf;
}

std::string SpinWaitRequest::Describe() const {
  return std::string(transport_) + (kind_ == Kind::kSend ? " send of " : " receive of ") +
         std::to_string(size_) + " bytes (tag " + HexTag(tag_) + ") " +
         (kind_ == Kind::kSend ? "to" : "from") + " rank " + std::to_string(peer_);
}

bool SpinWaitRequest::Test() {
  if (done()) return true;
  if (std::shared_ptr<ProgressHook> hook = hook_.lock()) hook->PollOnce();
  return done();
}

Status SpinWaitRequest::status() const {
  if (!done()) return Status(StatusCode::kUnknown, Describe() + " is still pending");
  return status_;
}

bool SpinWaitRequest::Complete(Status s) {
  if (claimed_.exchange(true, std::memory_order_acq_rel)) return false;
  status_ = std::move(s);
  // seq_cst pairs with the waiter's seq_cst increment of waiters_ and its re-check of done_:
  // either the waiter sees done_ set, or this side sees the waiter and wakes it.
  done_.store(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) {
    FutexWakeAll(&done_);
  }
  return true;
}

Status SpinWaitRequest::Wait(Deadline deadline) {
  if (done()) return status_;
  // Waking a sleeping thread costs tens of microseconds on these machines, twice per message
  // (the engine's thread, then the waiter). So the waiter first spins, driving the engine itself,
  // which takes the hand-offs out of a small message's path. The engine's own thread still
  // guarantees progress when nobody spins.
  if (spin_us_ > 0) {
    std::shared_ptr<ProgressHook> hook = hook_.lock();
    if (hook) hook->BeginSpin();
    // Up to two phases. Where the engine allows it (ProgressHook::SpinTight: ranks do not
    // outnumber cores), first a tight poll, without system calls, for a few microseconds: a
    // small message's answer usually comes that soon, and a yield (a system call that, on a
    // loaded machine, hands the core to another process for a time slice) would only delay
    // noticing it. Then, for the rest of the spin, a yield after every poll: a longer wait (a
    // large transfer, a late peer) must leave the core to whoever has to run to complete it; with
    // more ranks than cores that is from the start (measured: 4 ranks on 2 cores over tcp, the
    // tight phase doubled an 8-byte all-reduce). The tight phase is bounded in time, not polls,
    // because a poll's cost differs by engine (a system call over tcp); its clock is first read
    // on the fourth poll, sparing the shortest waits.
    constexpr auto kTightSpin = std::chrono::microseconds(5);
    Clock::time_point tight_end{};
    bool tight = hook && hook->SpinTight();
    Deadline spin_end = tight ? Deadline::Infinite()
                              : Deadline::After(std::chrono::microseconds(spin_us_)).Min(deadline);
    for (int polls = 1; !done(); ++polls) {
      if (hook) hook->PollOnce();
      if (done()) break;
      if (tight) {
        if ((polls & 3) == 0) {
          const Clock::time_point now = Clock::now();
          if (polls == 4) {
            tight_end = now + kTightSpin;
          } else if (now >= tight_end) {
            tight = false;
            spin_end = Deadline::After(std::chrono::microseconds(spin_us_)).Min(deadline);
          }
        }
        if (tight) {
          CpuRelax();
          continue;
        }
      } else if ((polls & 3) == 0 && spin_end.Expired()) {
        break;
      }
      sched_yield();
    }
    if (hook) hook->EndSpin(done());
    if (done()) return status_;
    if (hook) {
      Status s = Sleep(deadline);
      hook->EndSleep();
      return s;
    }
  }
  return Sleep(deadline);
}

Status SpinWaitRequest::Sleep(Deadline deadline) {
  while (true) {
    if (done()) return status_;
    if (deadline.Expired()) {
      return DeadlineExceededError(Describe() + " is still pending at the deadline");
    }
    // Sleep at most a second at a time so a clock oddity never strands a waiter.
    auto left = std::min<std::chrono::nanoseconds>(deadline.Remaining(), std::chrono::seconds(1));
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    if (done_.load(std::memory_order_seq_cst) == 0) FutexWait(&done_, 0, left);
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace weft::transport
