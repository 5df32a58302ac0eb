// Deadline: a point on the monotonic clock by which a wait must end. Every blocking call in weft
// takes one; Deadline::Infinite() exists for callers that really mean it (tests only, mostly).
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace weft {

using Clock = std::chrono::steady_clock;

class Deadline {
 public:
  static Deadline After(std::chrono::nanoseconds d) { return Deadline(Clock::now() + d); }
  static Deadline AfterMs(int64_t ms) { return After(std::chrono::milliseconds(ms)); }
  static Deadline Infinite() { return Deadline(Clock::time_point::max()); }
  static Deadline At(Clock::time_point t) { return Deadline(t); }

  Clock::time_point when() const { return when_; }
  bool infinite() const { return when_ == Clock::time_point::max(); }
  bool Expired() const { return !infinite() && Clock::now() >= when_; }
  // Time left, never negative; a large value for an infinite deadline.
  std::chrono::nanoseconds Remaining() const {
    if (infinite()) return std::chrono::hours(24 * 365);
    auto left = when_ - Clock::now();
    return left.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(left)
                            : std::chrono::nanoseconds(0);
  }
  // Milliseconds left, clamped to [0, cap], for poll()/epoll_wait().
  int RemainingMsForPoll(int cap_ms = 1 << 30) const {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Remaining()).count();
    if (!infinite() && ms == 0 && !Expired()) ms = 1;  // round a sub-millisecond rest up
    return ms > cap_ms ? cap_ms : static_cast<int>(ms);
  }
  // The earlier of the two.
  Deadline Min(Deadline other) const { return other.when_ < when_ ? other : *this; }

 private:
  explicit Deadline(Clock::time_point t) : when_(t) {}
  Clock::time_point when_;
};

}  // namespace weft
