#include "server/requests/compute_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attnserve {
namespace {

// How often a waiting request checks whether its client gave up.
constexpr std::chrono::milliseconds kCancellationPoll{5};

}  // namespace

ComputePool::ComputePool(int workers, int queue_depth, Observer observer)
    : workers_(std::max(workers, 1)),
      queue_depth_(std::max(queue_depth, 0)),
      observer_(std::move(observer)) {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

ComputePool::~ComputePool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_queued_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void ComputePool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_queued_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    Task* task = queue_.front();
    queue_.pop_front();
    task->started = true;
    ++busy_;
    Notify();
    task_changed_.notify_all();
    lock.unlock();
    absl::Status result = task->work();
    lock.lock();
    --busy_;
    Notify();
    task->result = std::move(result);
    task->done = true;
    task_changed_.notify_all();
  }
}

absl::Status ComputePool::Run(std::chrono::system_clock::time_point deadline,
                              const std::function<bool()>& is_cancelled,
                              absl::FunctionRef<absl::Status()> work) {
  Task task(work);
  std::unique_lock<std::mutex> lock(mutex_);
  // Tasks queued beyond the free workers are the ones that really wait.
  const int free_workers = workers_ - busy_;
  if (static_cast<int>(queue_.size()) - free_workers >= queue_depth_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "server busy: ", busy_, " computations running and ", queue_.size(),
        " waiting (--compute_workers=", workers_, ", --compute_queue_depth=", queue_depth_, ")"));
  }
  queue_.push_back(&task);
  Notify();
  work_queued_.notify_one();
  while (!task.started) {
    const auto now = std::chrono::system_clock::now();
    const bool expired = now >= deadline;
    if (expired || (is_cancelled && is_cancelled())) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &task));
      Notify();
      return expired ? absl::DeadlineExceededError(
                           "deadline passed while waiting for a compute worker")
                     : absl::CancelledError("cancelled while waiting for a compute worker");
    }
    task_changed_.wait_until(lock, std::min(deadline, now + kCancellationPoll));
  }
  task_changed_.wait(lock, [&task] { return task.done; });
  return task.result;
}

void ComputePool::Notify() {
  if (observer_) observer_(busy_, static_cast<int>(queue_.size()));
}

int ComputePool::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return busy_;
}

int ComputePool::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(queue_.size());
}

}  // namespace attnserve
