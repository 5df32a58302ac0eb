#include "base/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>

namespace weft {

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout,
               FutexScope scope) {
  const int64_t ns = timeout.count() > 0 ? timeout.count() : 0;
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word),
          scope == FutexScope::kProcess ? FUTEX_WAIT_PRIVATE : FUTEX_WAIT, expected, &ts, nullptr,
          0);
}

void FutexWakeAll(std::atomic<uint32_t>* word, FutexScope scope) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word),
          scope == FutexScope::kProcess ? FUTEX_WAKE_PRIVATE : FUTEX_WAKE, INT_MAX, nullptr,
          nullptr, 0);
}

}  // namespace weft
