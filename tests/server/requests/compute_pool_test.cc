#include "server/requests/compute_pool.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kernels/onednn_ops.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/eventually.h"

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

TEST(ComputePoolTest, LightTrafficStaysOnTheWorkerThatWentIdleLast) {
  constexpr int kWorkers = 3;
  ComputePool pool(kWorkers, 4);
  // Every worker busy at once first, so all of them are idle (none still starting) afterwards.
  std::atomic<int> started{0};
  std::vector<std::future<absl::Status>> all_busy;
  for (int i = 0; i < kWorkers; ++i) {
    all_busy.push_back(std::async(std::launch::async, [&] {
      return pool.Run(In(kLong), kNeverCancelled, [&] {
        ++started;
        while (started < kWorkers) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return absl::OkStatus();
      });
    }));
  }
  for (std::future<absl::Status>& busy : all_busy) ASSERT_TRUE(busy.get().ok());
  std::vector<std::thread::id> workers;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(pool.Run(In(kLong), kNeverCancelled, [&] {
                      workers.push_back(std::this_thread::get_id());
                      return absl::OkStatus();
                    }).ok());
  }
  for (const std::thread::id& worker : workers) EXPECT_EQ(worker, workers.front());
}

TEST(ComputePoolTest, BusyWorkersShareTheCores) {
  omp_set_num_threads(4);
  SetComputeThreads(0);  // share this thread's 4
  ComputePool pool(2, 4);
  int lone = 0;
  ASSERT_TRUE(pool.Run(In(kLong), kNeverCancelled, [&] {
                    lone = ApplyComputeThreads();
                    return absl::OkStatus();
                  }).ok());
  EXPECT_EQ(lone, 4);
  // Two at once, each starting its parallel work once both have started, and ending once both
  // have started it.
  std::atomic<int> started{0}, applied{0};
  auto wait_for_both = [](const std::atomic<int>& count) {
    while (count < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  auto side_by_side = [&] {
    int threads = 0;
    EXPECT_TRUE(pool.Run(In(kLong), kNeverCancelled, [&] {
                      ++started;
                      wait_for_both(started);
                      threads = ApplyComputeThreads();
                      ++applied;
                      wait_for_both(applied);
                      return absl::OkStatus();
                    }).ok());
    return threads;
  };
  auto first = std::async(std::launch::async, side_by_side);
  auto second = std::async(std::launch::async, side_by_side);
  EXPECT_EQ(first.get(), 2);
  EXPECT_EQ(second.get(), 2);
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

// A member that records the batches it was computed in: which members (by name) ran together.
// A stream step's batch, once recorded, lasts while its log holds stream steps.
class RecordingMember final : public BatchMember {
 public:
  // The batches computed so far, each as its members' names in order.
  struct Log {
    std::vector<std::vector<std::string>> Batches() {
      std::lock_guard<std::mutex> lock(mutex);
      return batches;
    }
    std::mutex mutex;
    std::vector<std::vector<std::string>> batches;
    std::atomic<bool> hold_stream_steps{false};
  };

  RecordingMember(std::string name, std::string key, int64_t tokens, Log* log,
                  bool stream_step = false)
      : BatchMember("Attend", "m", std::move(key), tokens),
        name_(std::move(name)),
        log_(log),
        stream_step_(stream_step) {}

  bool IsStreamStep() const override { return stream_step_; }

  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) override {
    std::vector<std::string> names;
    std::vector<absl::Status> statuses;
    for (BatchMember* member : batch) {
      names.push_back(static_cast<RecordingMember*>(member)->name_);
      statuses.push_back(absl::OkStatus());
    }
    {
      std::lock_guard<std::mutex> lock(log_->mutex);
      log_->batches.push_back(std::move(names));
    }
    while (stream_step_ && log_->hold_stream_steps) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return statuses;
  }

 private:
  const std::string name_;
  Log* const log_;
  const bool stream_step_;
};

using Batches = std::vector<std::vector<std::string>>;

// Whether `condition` holds within 10 s (polled every millisecond).
using testing::Eventually;

// Members submitted one after another (each queued before the next) from their own threads.
class Submitted {
 public:
  explicit Submitted(ComputePool& pool) : pool_(pool) {}
  ~Submitted() { Wait(); }

  // Queues a member and waits until the pool counts it among the waiting.
  void Add(std::unique_ptr<RecordingMember> member,
           std::function<bool()> is_cancelled = kNeverCancelled) {
    const int before = pool_.waiting();
    RecordingMember* raw = member.get();
    members_.push_back(std::move(member));
    results_.push_back(std::async(std::launch::async, [this, raw, is_cancelled] {
      return pool_.Run(In(kLong), is_cancelled, *raw);
    }));
    while (pool_.waiting() == before) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Every member's status, in submission order.
  std::vector<absl::Status> Wait() {
    std::vector<absl::Status> statuses;
    for (auto& result : results_) statuses.push_back(result.valid() ? result.get() : absl::OkStatus());
    return statuses;
  }

 private:
  ComputePool& pool_;
  std::vector<std::unique_ptr<RecordingMember>> members_;
  std::vector<std::future<absl::Status>> results_;
};

TEST(ComputePoolBatchingTest, WaitingMembersOfOneKeyRunTogetherInArrivalOrder) {
  RecordingMember::Log log;
  std::vector<int> observed;
  ComputePool pool(1, 16, nullptr, BatchLimits{8, 0, {}},
                   [&observed](absl::Span<BatchMember* const> batch) {
                     observed.push_back(static_cast<int>(batch.size()));
                   });
  Blocker blocker(pool);
  Submitted submitted(pool);
  submitted.Add(std::make_unique<RecordingMember>("a1", "A", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("b1", "B", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("a2", "A", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("lone", "", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("a3", "A", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("b2", "B", 1, &log));
  ASSERT_TRUE(blocker.Release().ok());
  for (const absl::Status& status : submitted.Wait()) EXPECT_TRUE(status.ok()) << status;
  using Names = std::vector<std::string>;
  // The worker takes the first waiting request, and those of its key join it; keys never mix,
  // and an empty key runs alone (and is not a batch for the observer).
  EXPECT_EQ(log.batches, (std::vector<Names>{{"a1", "a2", "a3"}, {"b1", "b2"}, {"lone"}}));
  EXPECT_EQ(observed, (std::vector<int>{3, 2}));
}

TEST(ComputePoolBatchingTest, BatchesKeepToTheRequestAndTokenLimits) {
  RecordingMember::Log log;
  ComputePool pool(1, 16, nullptr, BatchLimits{3, 10, {}});
  Blocker blocker(pool);
  Submitted submitted(pool);
  const std::pair<const char*, int64_t> members[] = {
      {"t4", 4}, {"t5", 5}, {"t2", 2}, {"t1", 1}, {"t12", 12}, {"t3", 3}, {"t6", 6}};
  for (const auto& [name, tokens] : members) {
    submitted.Add(std::make_unique<RecordingMember>(name, "K", tokens, &log));
  }
  ASSERT_TRUE(blocker.Release().ok());
  submitted.Wait();
  using Names = std::vector<std::string>;
  // 4+5 fit, 2 would pass 10 (it stays first in line), 1 fits: three requests, full. Then 2+3
  // (12 and 6 would pass 10); 12 alone (a lone request may exceed the tokens); 6.
  EXPECT_EQ(log.batches, (std::vector<Names>{{"t4", "t5", "t1"}, {"t2", "t3"}, {"t12"}, {"t6"}}));
}

TEST(ComputePoolBatchingTest, ACancelledMemberIsDroppedAndTheOthersRun) {
  RecordingMember::Log log;
  ComputePool pool(1, 16, nullptr, BatchLimits{8, 0, {}});
  Blocker blocker(pool);
  Submitted submitted(pool);
  std::atomic<bool> cancel{false};
  submitted.Add(std::make_unique<RecordingMember>("a1", "A", 1, &log));
  submitted.Add(std::make_unique<RecordingMember>("a2", "A", 1, &log), [&cancel] { return cancel.load(); });
  submitted.Add(std::make_unique<RecordingMember>("a3", "A", 1, &log));
  cancel = true;
  while (pool.waiting() != 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(blocker.Release().ok());
  const std::vector<absl::Status> statuses = submitted.Wait();
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(statuses[2].ok());
  EXPECT_EQ(log.batches, (std::vector<std::vector<std::string>>{{"a1", "a3"}}));
}

// A batch that throws (memory for its buffers) fails its members, and the pool goes on.
TEST(ComputePoolBatchingTest, ABatchThatThrowsFailsItsMembersNotTheServer) {
  class Throwing final : public BatchMember {
   public:
    Throwing() : BatchMember("Attend", "m", "K", 1) {}
    std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const>) override {
      throw std::bad_alloc();
    }
  } throwing;
  ComputePool pool(1, 4, nullptr, BatchLimits{8, 0, {}});
  EXPECT_EQ(pool.Run(In(kLong), kNeverCancelled, throwing).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(pool.Run(In(kLong), kNeverCancelled, [] { return absl::OkStatus(); }).ok());
}

TEST(ComputePoolBatchingTest, ALoneRequestOnAnIdleWorkerDoesNotWait) {
  RecordingMember::Log log;
  ComputePool pool(1, 16, nullptr, BatchLimits{8, 0, {}});
  RecordingMember member("alone", "A", 1, &log);
  const auto start = Clock::now();
  std::chrono::steady_clock::time_point started;
  ASSERT_TRUE(pool.Run(In(kLong), kNeverCancelled, member, &started).ok());
  EXPECT_NE(started, std::chrono::steady_clock::time_point());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(log.batches, (std::vector<std::vector<std::string>>{{"alone"}}));
}

// Two members of one key submitted one after the other to an idle worker under `limits`: the
// batches they ran in, and how long that took.
std::pair<std::vector<std::vector<std::string>>, Clock::duration> TwoArrivals(BatchLimits limits) {
  RecordingMember::Log log;
  ComputePool pool(1, 16, nullptr, limits);
  const auto start = Clock::now();
  {
    Submitted submitted(pool);
    submitted.Add(std::make_unique<RecordingMember>("a1", "A", 1, &log));
    submitted.Add(std::make_unique<RecordingMember>("a2", "A", 1, &log));
  }
  return {log.batches, Clock::now() - start};
}

TEST(ComputePoolBatchingTest, TheTimeoutHoldsABatchOpenForLaterArrivals) {
  // Without the timeout the first member would run alone at once.
  const auto [batches, took] = TwoArrivals(BatchLimits{8, 0, std::chrono::seconds(2)});
  EXPECT_EQ(batches, (std::vector<std::vector<std::string>>{{"a1", "a2"}}));
  EXPECT_GE(took, std::chrono::milliseconds(1900));
}

TEST(ComputePoolBatchingTest, OneWorkerHoldsABatchOpenAndAnotherTakesWhatWaitsBehindIt) {
  RecordingMember::Log log;
  ComputePool pool(2, 16, nullptr, BatchLimits{8, 0, std::chrono::seconds(2)});
  RecordingMember a1("a1", "A", 1, &log);
  auto held = std::async(std::launch::async,
                         [&] { return pool.Run(In(kLong), kNeverCancelled, a1); });
  EXPECT_TRUE(Eventually([&pool] { return pool.waiting() == 1; }));  // a1 is held open
  const auto start = Clock::now();
  EXPECT_TRUE(pool.Run(In(kLong), kNeverCancelled, [] { return absl::OkStatus(); }).ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));  // not behind a1's timeout
  EXPECT_TRUE(held.get().ok());
  EXPECT_EQ(log.Batches(), (Batches{{"a1"}}));
}

TEST(ComputePoolBatchingTest, AFullBatchDoesNotWaitOutTheTimeout) {
  const auto [batches, took] = TwoArrivals(BatchLimits{2, 0, std::chrono::seconds(30)});
  EXPECT_EQ(batches, (std::vector<std::vector<std::string>>{{"a1", "a2"}}));
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(ComputePoolBatchingTest, StreamStepsOfOneKeyRunOneBatchAtATime) {
  RecordingMember::Log log;
  log.hold_stream_steps = true;
  ComputePool pool(2, 16, nullptr, BatchLimits{8, 0, {}, {}});
  RecordingMember s1("s1", "S", 1, &log, true), s2("s2", "S", 1, &log, true), x1("x1", "X", 1, &log);
  auto run = [&pool](RecordingMember& member) {
    return std::async(std::launch::async,
                      [&pool, &member] { return pool.Run(In(kLong), kNeverCancelled, member); });
  };
  auto first = run(s1);
  EXPECT_TRUE(Eventually([&log] { return log.Batches().size() == 1; }));  // s1 runs (and lasts)
  auto second = run(s2);
  EXPECT_TRUE(Eventually([&pool] { return pool.waiting() == 1; }));
  // The other worker is free, but s2 waits for s1's batch; x1, of another key, does not.
  auto other = run(x1);
  EXPECT_TRUE(Eventually([&other] {
    return other.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }));
  EXPECT_EQ(log.Batches(), (Batches{{"s1"}, {"x1"}}));
  EXPECT_EQ(pool.waiting(), 1);
  log.hold_stream_steps = false;
  EXPECT_TRUE(other.get().ok());
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(second.get().ok());
  EXPECT_EQ(log.Batches(), (Batches{{"s1"}, {"x1"}, {"s2"}}));
}

TEST(ComputePoolBatchingTest, TheNextStepBatchWaitsForTheStreamsOfTheLast) {
  RecordingMember::Log log;
  constexpr auto kStepWait = std::chrono::seconds(2);
  ComputePool pool(1, 16, nullptr, BatchLimits{8, 0, {}, kStepWait});
  // Three steps arriving `spacing` apart (the first at once), as three streams' next steps;
  // how long until all were answered.
  int step = 0;
  auto three_steps = [&](std::chrono::milliseconds spacing) {
    std::vector<std::unique_ptr<RecordingMember>> members;
    for (int i = 0; i < 3; ++i) {
      members.push_back(std::make_unique<RecordingMember>(
          absl::StrCat("s", ++step), "S", 1, &log, true));
    }
    std::vector<std::future<absl::Status>> results;
    const auto start = Clock::now();
    for (int i = 0; i < 3; ++i) {
      results.push_back(std::async(std::launch::async, [&pool, &members, i, spacing] {
        std::this_thread::sleep_for(i * spacing);
        return pool.Run(In(kLong), kNeverCancelled, *members[i]);
      }));
    }
    for (std::future<absl::Status>& result : results) EXPECT_TRUE(result.get().ok());
    return Clock::now() - start;
  };
  auto one_step = [&] {
    RecordingMember member(absl::StrCat("s", ++step), "S", 1, &log, true);
    const auto start = Clock::now();
    EXPECT_TRUE(pool.Run(In(kLong), kNeverCancelled, member).ok());
    return Clock::now() - start;
  };
  {
    Blocker blocker(pool);  // the first three wait together: one batch, 3 streams
    auto waiting = std::async(std::launch::async, three_steps, std::chrono::milliseconds(0));
    while (pool.waiting() != 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(blocker.Release().ok());
    waiting.get();
  }
  // Their next steps come back 50 ms apart: the batch waits for the third, not for kStepWait.
  EXPECT_LT(three_steps(std::chrono::milliseconds(50)), kStepWait * 3 / 4);
  // Two streams left: the lone step waits out kStepWait once, then no longer.
  EXPECT_GE(one_step(), kStepWait - std::chrono::milliseconds(100));
  EXPECT_LT(one_step(), kStepWait / 2);
  // (Each batch's members sorted: the first three arrive together, in any order.)
  Batches batches = log.Batches();
  for (std::vector<std::string>& batch : batches) std::sort(batch.begin(), batch.end());
  EXPECT_EQ(batches, (Batches{{"s1", "s2", "s3"}, {"s4", "s5", "s6"}, {"s7"}, {"s8"}}));
}

}  // namespace
}  // namespace attnserve
