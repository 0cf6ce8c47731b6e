#include "server/rpc/request_threads.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/eventually.h"

namespace attnserve {
namespace {

using testing::Eventually;

// A gate the bodies wait at until the test opens it.
class Gate {
 public:
  void Wait() { opened_.wait(); }
  void Open() { open_.set_value(); }

 private:
  std::promise<void> open_;
  std::shared_future<void> opened_ = open_.get_future().share();
};

// Each body gets a thread of its own: bodies that wait for one another all run at once (a fixed
// pool smaller than the bodies would never open the gate below).
TEST(RequestThreadsTest, EveryBodyRunsAtOnceOnAThreadOfItsOwn) {
  constexpr int kBodies = 40;
  std::atomic<int> arrived{0};
  Gate gate;
  std::mutex mutex;
  std::set<std::thread::id> ids;
  RequestThreads threads({});  // last: it goes first, waiting for the bodies that use the above
  for (int i = 0; i < kBodies; ++i) {
    ASSERT_TRUE(threads.TrySchedule([&] {
      {
        std::lock_guard<std::mutex> lock(mutex);
        ids.insert(std::this_thread::get_id());
      }
      ++arrived;
      gate.Wait();
    }));
  }
  EXPECT_TRUE(Eventually([&] { return arrived == kBodies; })) << arrived << " of " << kBodies;
  EXPECT_EQ(threads.threads(), kBodies);
  gate.Open();
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(ids.size(), kBodies);
}

// A body scheduled while a thread is idle runs on that thread instead of starting one.
TEST(RequestThreadsTest, AnIdleThreadTakesTheNextBody) {
  std::set<std::thread::id> ids;
  RequestThreads threads({});
  for (int i = 0; i < 20; ++i) {
    std::promise<std::thread::id> ran;
    ASSERT_TRUE(threads.TrySchedule([&ran] { ran.set_value(std::this_thread::get_id()); }));
    ids.insert(ran.get_future().get());
    ASSERT_TRUE(Eventually([&] { return threads.idle_threads() == 1; }));
    ASSERT_EQ(threads.threads(), 1) << "after body " << i;
  }
  EXPECT_EQ(ids.size(), 1);
}

// Past max_threads bodies running, a body is refused (not queued); once one ends, a body runs.
TEST(RequestThreadsTest, RefusesPastMaxThreads) {
  std::atomic<int> arrived{0};
  Gate gate;
  bool ran = false;
  std::promise<void> later;
  RequestThreads threads({.max_threads = 3});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(threads.TrySchedule([&] {
      ++arrived;
      gate.Wait();
    }));
  }
  EXPECT_TRUE(Eventually([&] { return arrived == 3; }));
  EXPECT_FALSE(threads.TrySchedule([&ran] { ran = true; }));
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return threads.TrySchedule([&later] { later.set_value(); }); }));
  later.get_future().wait();
  EXPECT_FALSE(ran);
  EXPECT_LE(threads.threads(), 3);
}

// After a burst, threads beyond max_idle_threads end; those kept serve the next bodies.
TEST(RequestThreadsTest, KeepsAtMostMaxIdleThreadsAfterABurst) {
  std::atomic<int> arrived{0};
  Gate gate;
  RequestThreads threads({.max_threads = 0, .max_idle_threads = 2});
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(threads.TrySchedule([&] {
      ++arrived;
      gate.Wait();
    }));
  }
  EXPECT_TRUE(Eventually([&] { return arrived == 10; }));
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return threads.threads() == 2; })) << threads.threads();
}

// The destructor waits for the bodies running and for those scheduled behind idle threads.
TEST(RequestThreadsTest, DestructionWaitsForEveryBody) {
  std::atomic<int> finished{0};
  {
    RequestThreads threads({});
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(threads.TrySchedule([&finished] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        ++finished;
      }));
    }
  }
  EXPECT_EQ(finished, 8);
}

}  // namespace
}  // namespace attnserve
