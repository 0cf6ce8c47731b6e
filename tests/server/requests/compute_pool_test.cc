#include "server/requests/compute_pool.h"

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
constexpr std::chrono::seconds kLong(30);

// Occupies the pool's worker until release() (run from its own thread).
class Blocker {
 public:
  explicit Blocker(ComputePool& pool) : pool_(pool) {
    result_ = std::async(std::launch::async, [this] {
      return pool_.Run(In(kLong), kNeverCancelled, [this] {
        running_ = true;
        while (!released_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return absl::OkStatus();
      });
    });
    while (!running_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  absl::Status Release() {
    released_ = true;
    return result_.get();
  }

 private:
  ComputePool& pool_;
  std::atomic<bool> running_{false}, released_{false};
  std::future<absl::Status> result_;
};

TEST(ComputePoolTest, RunsOnOneLongLivedWorkerThread) {
  ComputePool pool(1, 4);
  std::thread::id first, second;
  ASSERT_TRUE(pool.Run(In(kLong), kNeverCancelled, [&] {
                    first = std::this_thread::get_id();
                    return absl::OkStatus();
                  }).ok());
  ASSERT_TRUE(pool.Run(In(kLong), kNeverCancelled, [&] {
                    second = std::this_thread::get_id();
                    return absl::OkStatus();
                  }).ok());
  EXPECT_NE(first, std::this_thread::get_id());
  EXPECT_EQ(first, second);
  EXPECT_EQ(pool.Run(In(kLong), kNeverCancelled, [] { return absl::NotFoundError("x"); }).code(),
            absl::StatusCode::kNotFound);  // the work's own status comes back
}

TEST(ComputePoolTest, FullQueueIsRefusedAtOnceNamingTheFlags) {
  ComputePool pool(1, 0);
  Blocker blocker(pool);
  bool ran = false;
  const auto start = Clock::now();
  absl::Status status = pool.Run(In(kLong), kNeverCancelled, [&] {
    ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("--compute_workers=1, --compute_queue_depth=0"));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  EXPECT_FALSE(ran);
  EXPECT_TRUE(blocker.Release().ok());
  EXPECT_TRUE(pool.Run(In(kLong), kNeverCancelled, [] { return absl::OkStatus(); }).ok());
}

TEST(ComputePoolTest, QueuedWorkRunsWhenTheWorkerFrees) {
  ComputePool pool(1, 1);
  Blocker blocker(pool);
  auto queued = std::async(std::launch::async, [&] {
    return pool.Run(In(kLong), kNeverCancelled, [] { return absl::OkStatus(); });
  });
  while (pool.waiting() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // The queue (depth 1) is full now.
  EXPECT_EQ(pool.Run(In(kLong), kNeverCancelled, [] { return absl::OkStatus(); }).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocker.Release().ok());
  EXPECT_TRUE(queued.get().ok());
}

TEST(ComputePoolTest, DeadlineOrCancellationWhileQueuedNeverRunsTheWork) {
  ComputePool pool(1, 4);
  Blocker blocker(pool);
  bool ran = false;
  const auto start = Clock::now();
  absl::Status expired = pool.Run(In(std::chrono::milliseconds(50)), kNeverCancelled, [&] {
    ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(expired.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(50));
  std::atomic<int> polls{0};
  absl::Status cancelled = pool.Run(In(kLong), [&polls] { return ++polls >= 3; }, [&] {
    ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(cancelled.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(ran);
  EXPECT_EQ(pool.waiting(), 0);
  EXPECT_TRUE(blocker.Release().ok());
}

}  // namespace
}  // namespace attnserve
