// InlineFn (collectives/internal/comm_impl.h), the callable an operation's body is stored in:
// small callables live inline, large ones on the heap; both call, move and destroy their captures
// exactly once.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <utility>

#include "collectives/internal/comm_impl.h"

namespace weft::collectives::internal {
namespace {

using Fn = InlineFn<int, int&>;

// Counts live copies of a capture, to see that every one is destroyed once.
struct Tracker {
  explicit Tracker(int* live) : live(live) { ++*live; }
  Tracker(const Tracker& o) : live(o.live) { ++*live; }
  Tracker(Tracker&& o) noexcept : live(o.live) { ++*live; }
  ~Tracker() { --*live; }
  int* live;
};

TEST(InlineFn, SmallCallableIsCalledWithItsArgument) {
  int base = 40;
  Fn f = [base](int& x) { return base + x++; };
  ASSERT_TRUE(f);
  int x = 2;
  EXPECT_EQ(f(x), 42);
  EXPECT_EQ(x, 3);  // the argument is passed by reference
}

TEST(InlineFn, LargeCallableGoesToTheHeapAndStillWorks) {
  std::array<int, 64> big{};  // 256 bytes: over the inline size
  big[63] = 5;
  static_assert(sizeof(big) > Fn::kInlineBytes);
  Fn f = [big](int& x) { return big[63] * x; };
  int x = 3;
  EXPECT_EQ(f(x), 15);
}

TEST(InlineFn, MoveLeavesTheSourceEmptyAndDestroysCapturesOnce) {
  for (bool large : {false, true}) {
    int live = 0;
    {
      Tracker t(&live);
      std::array<char, 200> pad{};
      Fn a = large ? Fn([t, pad](int&) { return static_cast<int>(pad.size()); })
                   : Fn([t](int&) { return 1; });
      EXPECT_EQ(live, 2) << "large " << large;  // t and the captured copy
      Fn b = std::move(a);
      EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
      ASSERT_TRUE(b);
      EXPECT_EQ(live, 2) << "large " << large;
      int x = 0;
      EXPECT_EQ(b(x), large ? 200 : 1);
      Fn c;
      c = std::move(b);
      EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move)
      EXPECT_EQ(live, 2) << "large " << large;
    }
    EXPECT_EQ(live, 0) << "large " << large;
  }
}

TEST(InlineFn, AssigningOverAFullOneDestroysTheOld) {
  int live = 0;
  Tracker t(&live);
  Fn a = [t](int&) { return 1; };
  EXPECT_EQ(live, 2);
  a = Fn([](int&) { return 2; });
  EXPECT_EQ(live, 1);  // the first callable's capture is gone
  int x = 0;
  EXPECT_EQ(a(x), 2);
}

TEST(InlineFn, MoveOnlyCapturesWork) {
  auto p = std::make_unique<int>(9);
  Fn f = [p = std::move(p)](int& x) { return *p + x; };
  Fn g = std::move(f);
  int x = 1;
  EXPECT_EQ(g(x), 10);
}

}  // namespace
}  // namespace weft::collectives::internal
