#include <gtest/gtest.h>

#include "base/deadline.h"
#include "base/status.h"

namespace weft {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("odd " + std::to_string(x));
  return x / 2;
}

Status UseHalf(int x, int* out) {
  WEFT_ASSIGN_OR_RETURN(*out, Half(x));
  return Status::Ok();
}

TEST(Status, OkAndErrors) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = InvalidArgumentError("count -3 for allreduce on rank 2");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ToString(), "INVALID_ARGUMENT: count -3 for allreduce on rank 2");
  EXPECT_EQ(s.WithContext("init").message(), "init: count -3 for allreduce on rank 2");
  EXPECT_EQ(static_cast<int>(StatusCode::kUnauthenticated), 16);  // canonical numbering
}

TEST(Status, ResultAndMacros) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  Status s = UseHalf(7, &v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd 7");
  EXPECT_EQ(ErrnoError("connect", ECONNREFUSED).code(), StatusCode::kUnavailable);
}

TEST(Deadline, Basics) {
  EXPECT_FALSE(Deadline::Infinite().Expired());
  EXPECT_TRUE(Deadline::AfterMs(-1).Expired());
  Deadline d = Deadline::AfterMs(10000);
  EXPECT_GT(d.RemainingMsForPoll(), 9000);
  EXPECT_EQ(d.RemainingMsForPoll(50), 50);
  EXPECT_EQ(d.Min(Deadline::AfterMs(5)).RemainingMsForPoll() <= 5, true);
}

}  // namespace
}  // namespace weft
