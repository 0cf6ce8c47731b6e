// MemoryBudget and MemoryHold: reservations up to the budget, refusals that reserve nothing and
// say why, bytes returned when a hold is cleared or destroyed, the observer's last value.
#include "server/requests/memory_budget.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

TEST(MemoryBudgetTest, ReservesUpToTheBudgetAndRefusesPastIt) {
  MemoryBudget budget(1000);
  MemoryHold first(&budget), second(&budget);
  ASSERT_TRUE(first.Add(600).ok());
  ASSERT_TRUE(second.Add(400).ok());  // exactly the budget
  EXPECT_EQ(budget.bytes(), 1000);
  const absl::Status refused = second.Add(1);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("needs 1 more bytes"));
  EXPECT_THAT(refused.message(), HasSubstr("hold 1000 of the 1000 allowed"));
  EXPECT_THAT(refused.message(), HasSubstr("--max_request_memory_bytes"));
  EXPECT_EQ(second.bytes(), 400);  // the refusal reserved nothing
  EXPECT_EQ(budget.bytes(), 1000);
}

TEST(MemoryBudgetTest, ARequestLargerThanTheWholeBudgetSaysSo) {
  MemoryBudget budget(1000);
  MemoryHold hold(&budget);
  EXPECT_THAT(hold.Add(1001).message(), HasSubstr("more than the whole budget"));
  EXPECT_EQ(budget.bytes(), 0);
}

TEST(MemoryBudgetTest, BytesReturnWhenAHoldIsClearedOrDestroyed) {
  MemoryBudget budget(1000);
  {
    MemoryHold hold(&budget);
    ASSERT_TRUE(hold.Add(300).ok());
    ASSERT_TRUE(hold.Add(200).ok());
    EXPECT_EQ(hold.bytes(), 500);
    hold.Clear();
    EXPECT_EQ(hold.bytes(), 0);
    EXPECT_EQ(budget.bytes(), 0);
    ASSERT_TRUE(hold.Add(700).ok());
    EXPECT_EQ(budget.bytes(), 700);
  }
  EXPECT_EQ(budget.bytes(), 0);
  MemoryHold hold(&budget);
  EXPECT_TRUE(hold.Add(1000).ok());
  EXPECT_TRUE(hold.Add(0).ok());  // nothing asked: never refused
}

TEST(MemoryBudgetTest, ConcurrentHoldsNeverPassTheBudgetAndTheObserverSettles) {
  std::atomic<int64_t> observed{-1};
  std::atomic<int64_t> most{0};
  MemoryBudget budget(10'000, [&](int64_t bytes) {
    observed = bytes;
    int64_t seen = most.load();
    while (bytes > seen && !most.compare_exchange_weak(seen, bytes)) {
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&budget] {
      for (int i = 0; i < 2000; ++i) {
        MemoryHold hold(&budget);
        if (hold.Add(1500).ok()) hold.Add(1000).IgnoreError();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(budget.bytes(), 0);
  EXPECT_EQ(observed.load(), 0);
  EXPECT_LE(most.load(), 10'000);
  EXPECT_GT(most.load(), 0);
}

}  // namespace
}  // namespace attnserve
