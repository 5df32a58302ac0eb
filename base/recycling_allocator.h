// A standard allocator for objects made and dropped at a high rate on the latency path (a Work
// state per collective, a request per message): freed blocks of one size wait in a small
// per-thread cache for the next allocation of that size instead of going back to malloc. With
// std::allocate_shared (MakeRecycled) the shared_ptr control block and the object are one block.
// A block freed on another thread joins that thread's cache.
//
// The cache is trivially destructible, so an object released late in a thread's exit (or during
// static destruction) still finds it; a second thread-local's destructor returns the cached blocks
// to the heap at thread exit, after which that thread stops caching.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace weft {
namespace recycling_internal {

struct Cache {
  static constexpr int kMax = 64;
  void* blocks[kMax];
  int count;
  bool closed;
};

// One cache per block size (zero-initialised: no constructor runs).
template <size_t kSize>
inline thread_local Cache t_cache;

template <size_t kSize>
struct Reaper {
  Reaper() = default;
  ~Reaper() {
    Cache& c = t_cache<kSize>;
    for (int i = 0; i < c.count; ++i) ::operator delete(c.blocks[i]);
    c.count = 0;
    c.closed = true;
  }
};

template <size_t kSize>
inline thread_local Reaper<kSize> t_reaper;

}  // namespace recycling_internal

template <typename T>
struct RecyclingAllocator {
  using value_type = T;
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                "over-aligned types need an aligned allocator");
  RecyclingAllocator() = default;
  template <typename U>
  RecyclingAllocator(const RecyclingAllocator<U>&) {}  // NOLINT(google-explicit-constructor)

  T* allocate(size_t n) {
    recycling_internal::Cache& c = recycling_internal::t_cache<sizeof(T)>;
    if (n == 1 && c.count > 0) return static_cast<T*>(c.blocks[--c.count]);
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) {
    recycling_internal::Cache& c = recycling_internal::t_cache<sizeof(T)>;
    if (n == 1 && !c.closed && c.count < recycling_internal::Cache::kMax) {
      // The first block cached on this thread registers the reaper (a thread-local with a
      // destructor is constructed on first use).
      if (c.count == 0) (void)&recycling_internal::t_reaper<sizeof(T)>;
      c.blocks[c.count++] = p;
      return;
    }
    ::operator delete(p);
  }
  template <typename U>
  bool operator==(const RecyclingAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const RecyclingAllocator<U>&) const {
    return false;
  }
};

// std::make_shared through RecyclingAllocator.
template <typename T, typename... Args>
std::shared_ptr<T> MakeRecycled(Args&&... args) {
  return std::allocate_shared<T>(RecyclingAllocator<T>(), std::forward<Args>(args)...);
}

}  // namespace weft
