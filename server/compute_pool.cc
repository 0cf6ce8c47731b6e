#include "server/compute_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace attnserve {
namespace {

// How often a waiting request checks whether its client gave up.
constexpr absl::Duration kCancellationPoll = absl::Milliseconds(5);

}  // namespace

ComputePool::ComputePool(int workers, int queue_depth, Observer observer)
    : workers_(std::max(workers, 1)),
      queue_depth_(std::max(queue_depth, 0)),
      observer_(std::move(observer)) {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

ComputePool::~ComputePool() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void ComputePool::WorkerLoop() {
  absl::MutexLock lock(&mutex_);
  while (true) {
    mutex_.Await(absl::Condition(
        +[](ComputePool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mutex_) {
          return !pool->queue_.empty() || pool->stopping_;
        },
        this));
    if (queue_.empty()) return;  // stopping, and nothing left to run
    Task* task = queue_.front();
    queue_.pop_front();
    task->started = true;
    ++busy_;
    Notify();
    mutex_.Unlock();
    absl::Status result = task->work();
    mutex_.Lock();
    --busy_;
    Notify();
    task->result = std::move(result);
    task->done = true;
  }
}

absl::Status ComputePool::Run(std::chrono::system_clock::time_point deadline,
                              const std::function<bool()>& is_cancelled,
                              absl::FunctionRef<absl::Status()> work) {
  Task task(work);
  absl::MutexLock lock(&mutex_);
  // Tasks queued beyond the free workers are the ones that really wait.
  const int free_workers = workers_ - busy_;
  if (static_cast<int>(queue_.size()) - free_workers >= queue_depth_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "server busy: ", busy_, " computations running and ", queue_.size(),
        " waiting (--compute_workers=", workers_, ", --compute_queue_depth=", queue_depth_, ")"));
  }
  queue_.push_back(&task);
  Notify();
  const absl::Time until = absl::FromChrono(deadline);
  const auto started = [&task]() { return task.started; };
  while (!task.started) {
    const bool expired = absl::Now() >= until;
    if (expired || (is_cancelled && is_cancelled())) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &task));
      Notify();
      return expired ? absl::DeadlineExceededError(
                           "deadline passed while waiting for a compute worker")
                     : absl::CancelledError("cancelled while waiting for a compute worker");
    }
    mutex_.AwaitWithDeadline(absl::Condition(&started), std::min(until, absl::Now() + kCancellationPoll));
  }
  mutex_.Await(absl::Condition(&task.done));
  return task.result;
}

void ComputePool::Notify() {
  if (observer_) observer_(busy_, static_cast<int>(queue_.size()));
}

int ComputePool::busy() const {
  absl::MutexLock lock(&mutex_);
  return busy_;
}

int ComputePool::waiting() const {
  absl::MutexLock lock(&mutex_);
  return static_cast<int>(queue_.size());
}

}  // namespace attnserve
