#include "core/base/field_status.h"

#include "absl/status/statusor.h"
#include "core/base/status_macros.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

TEST(FieldStatusTest, WithFieldPrefixPrependsToErrorsOnly) {
  EXPECT_TRUE(WithFieldPrefix(absl::OkStatus(), "encoding").ok());
  const absl::Status status =
      WithFieldPrefix(absl::OutOfRangeError("learned.rows=4"), "encoding");
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(status.message(), "encoding.learned.rows=4");
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

// Adds the halves of a and b, returning early at the first error.
absl::StatusOr<int> SumOfHalves(int a, int b, int* steps) {
  ASSIGN_OR_RETURN(const int half_a, Half(a));
  ++*steps;
  ASSIGN_OR_RETURN(const int half_b, Half(b));
  ++*steps;
  RETURN_IF_ERROR(half_a + half_b > 100 ? absl::OutOfRangeError("too big") : absl::OkStatus());
  return half_a + half_b;
}

TEST(StatusMacrosTest, ReturnEarlyWithTheFirstError) {
  int steps = 0;
  EXPECT_EQ(*SumOfHalves(4, 6, &steps), 5);
  EXPECT_EQ(steps, 2);
  steps = 0;
  EXPECT_EQ(SumOfHalves(3, 6, &steps).status().message(), "odd");
  EXPECT_EQ(steps, 0);
  EXPECT_EQ(SumOfHalves(4, 7, &steps).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(SumOfHalves(400, 2, &steps).status().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace attnserve
