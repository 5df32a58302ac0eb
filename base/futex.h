// Futex waits and wakes on a std::atomic<uint32_t> (a plain 32-bit word on Linux). The callers
// keep their own sleeper counts and memory ordering; these are only the system calls.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace weft {

// kProcess: every waiter and waker is a thread of this process (FUTEX_PRIVATE, cheaper);
// kShared: the word lives in shared memory that other processes wait on or wake.
enum class FutexScope { kProcess, kShared };

// Sleeps while *word == expected, for at most `timeout`; returns on a wake, a change of the word,
// a signal or the timeout (the caller re-checks its condition either way).
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout,
               FutexScope scope = FutexScope::kProcess);
// Wakes every thread sleeping on `word`.
void FutexWakeAll(std::atomic<uint32_t>* word, FutexScope scope = FutexScope::kProcess);

}  // namespace weft
