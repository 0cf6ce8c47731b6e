#include "server/compute_gate.h"

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::system_clock;

Clock::time_point In(std::chrono::milliseconds delay) { return Clock::now() + delay; }
const std::function<bool()> kNeverCancelled = [] { return false; };

void WaitUntilWaiting(const ComputeGate& gate, int count) {
  while (gate.waiting() != count) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST(ComputeGateTest, FullQueueIsRefusedAtOnceNamingTheFlags) {
  ComputeGate gate(1, 0);
  {
    absl::StatusOr<ComputeGate::Slot> first = gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled);
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(gate.running(), 1);
    const auto start = Clock::now();
    absl::StatusOr<ComputeGate::Slot> second =
        gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(std::string(second.status().message()),
                HasSubstr("--compute_workers=1, --compute_queue_depth=0"));
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));  // refused, not waited
  }
  EXPECT_EQ(gate.running(), 0);  // the slot went back with its holder
  EXPECT_TRUE(gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled).ok());
}

TEST(ComputeGateTest, WaiterRunsWhenASlotIsReleased) {
  ComputeGate gate(1, 1);
  auto first = std::make_unique<absl::StatusOr<ComputeGate::Slot>>(
      gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled));
  ASSERT_TRUE(first->ok());
  auto waiter = std::async(std::launch::async, [&] {
    return gate.Acquire(In(std::chrono::seconds(30)), kNeverCancelled).status();
  });
  WaitUntilWaiting(gate, 1);
  // A second waiter finds the queue (depth 1) full.
  EXPECT_EQ(gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled).status().code(),
            absl::StatusCode::kResourceExhausted);
  first.reset();  // release
  EXPECT_TRUE(waiter.get().ok());
  EXPECT_EQ(gate.waiting(), 0);
}

TEST(ComputeGateTest, DeadlinePassingWhileQueuedIsDeadlineExceeded) {
  ComputeGate gate(1, 4);
  absl::StatusOr<ComputeGate::Slot> held = gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled);
  ASSERT_TRUE(held.ok());
  const auto start = Clock::now();
  absl::Status status = gate.Acquire(In(std::chrono::milliseconds(50)), kNeverCancelled).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(50));
  EXPECT_EQ(gate.waiting(), 0);
}

TEST(ComputeGateTest, CancelledWhileQueuedIsCancelled) {
  ComputeGate gate(1, 4);
  absl::StatusOr<ComputeGate::Slot> held = gate.Acquire(In(std::chrono::seconds(5)), kNeverCancelled);
  ASSERT_TRUE(held.ok());
  std::atomic<int> polls{0};
  absl::Status status =
      gate.Acquire(In(std::chrono::seconds(30)), [&polls] { return ++polls >= 3; }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_GE(polls, 3);
  EXPECT_EQ(gate.waiting(), 0);
}

}  // namespace
}  // namespace attnserve
