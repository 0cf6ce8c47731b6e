#include "server/requests/compute_pool.h"

#include <algorithm>
#include <exception>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/kernels/onednn_ops.h"

namespace attnserve {
namespace {

// How often a waiting request checks whether its client gave up. Workers check every request
// they consider for a batch, so this is only a backstop for requests left waiting long; waking
// every waiter every few milliseconds took CPU from the computation.
constexpr std::chrono::milliseconds kCancellationPoll{50};

// Work that runs alone (an empty key).
class LoneWork final : public BatchMember {
 public:
  explicit LoneWork(absl::FunctionRef<absl::Status()> work)
      : BatchMember("", "", "", 0), work_(work) {}
  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const>) override {
    return {work_()};
  }

 private:
  absl::FunctionRef<absl::Status()> work_;
};

// The batch's statuses; an exception out of it (memory for its buffers) fails its members
// instead of the process.
std::vector<absl::Status> RunCaught(absl::Span<BatchMember* const> batch) {
  try {
    return batch.front()->RunBatch(batch);
  } catch (const std::bad_alloc&) {
    return std::vector<absl::Status>(batch.size(),
                                     absl::ResourceExhaustedError("out of memory for the batch"));
  } catch (const std::exception& e) {
    return std::vector<absl::Status>(batch.size(), absl::InternalError(e.what()));
  }
}

}  // namespace

ComputePool::ComputePool(int workers, int queue_depth, Observer observer, BatchLimits limits,
                         BatchObserver batch_observer)
    : workers_(std::max(workers, 1)),
      queue_depth_(std::max(queue_depth, 0)),
      observer_(std::move(observer)),
      limits_(limits),
      batch_observer_(std::move(batch_observer)) {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

ComputePool::~ComputePool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    while (!idle_workers_.empty()) WakeIdleWorker();
  }
  batch_queue_changed_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void ComputePool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  IdleWorker idle;
  while (true) {
    while (queue_.empty() && !stopping_) {
      idle.woken = false;
      idle_workers_.push_back(&idle);
      idle.woken_up.wait(lock, [&idle] { return idle.woken; });
    }
    if (queue_.empty()) return;  // stopping, and nothing left to run
    if (WaitForBatch(lock)) continue;
    const std::vector<Task*> batch = TakeBatch();
    // Requests it left (another key, past the limits) need a worker of their own.
    if (!queue_.empty()) WakeIdleWorker();
    if (batch.empty()) continue;  // all it found was cancelled
    const auto now = std::chrono::steady_clock::now();
    std::vector<BatchMember*> members;
    for (Task* task : batch) {
      task->started = true;
      if (task->started_at != nullptr) *task->started_at = now;
      members.push_back(&task->member);
    }
    ++busy_;
    Notify();
    if (batch_observer_ && !members.front()->key().empty()) batch_observer_(members);
    for (Task* task : batch) task->changed.notify_one();
    lock.unlock();
    std::vector<absl::Status> results;
    {
      RunningComputation running;
      results = RunCaught(members);
    }
    lock.lock();
    --busy_;
    Notify();
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i]->result = i < results.size()
                             ? std::move(results[i])
                             : absl::InternalError("the batch computed no status for this request");
      batch[i]->done = true;
      batch[i]->changed.notify_one();
    }
  }
}

bool ComputePool::EndIfCancelled(Task* task) {
  if (!task->is_cancelled || !task->is_cancelled()) return false;
  task->result = absl::CancelledError("cancelled while waiting for a compute worker");
  task->done = true;
  task->changed.notify_one();
  return true;
}

bool ComputePool::WaitForBatch(std::unique_lock<std::mutex>& lock) {
  const Task* front = queue_.front();
  const std::string& key = front->member.key();
  if (limits_.timeout.count() <= 0 || limits_.max_requests <= 1 || key.empty() || stopping_) {
    return false;
  }
  const auto until = front->queued + limits_.timeout;
  if (std::chrono::steady_clock::now() >= until) return false;
  int requests = 0;
  int64_t tokens = 0;
  for (const Task* task : queue_) {
    if (task->member.key() != key) continue;
    ++requests;
    tokens += task->member.tokens();
  }
  if (requests >= limits_.max_requests || (limits_.max_tokens > 0 && tokens >= limits_.max_tokens)) {
    return false;  // full already
  }
  batch_queue_changed_.wait_until(lock, until);
  return true;
}

std::vector<ComputePool::Task*> ComputePool::TakeBatch() {
  std::vector<Task*> batch;
  while (batch.empty() && !queue_.empty()) {
    Task* first = queue_.front();
    queue_.pop_front();
    if (!EndIfCancelled(first)) batch.push_back(first);
  }
  Notify();
  if (batch.empty() || batch.front()->member.key().empty()) return batch;
  const std::string& key = batch.front()->member.key();
  int64_t tokens = batch.front()->member.tokens();
  for (auto it = queue_.begin();
       it != queue_.end() && static_cast<int>(batch.size()) < limits_.max_requests;) {
    if ((*it)->member.key() == key && EndIfCancelled(*it)) {
      it = queue_.erase(it);
      continue;
    }
    const int64_t more = (*it)->member.tokens();
    // One that would overflow the tokens stays first in line for the next batch; smaller ones
    // behind it may still join this one.
    if ((*it)->member.key() != key || (limits_.max_tokens > 0 && tokens + more > limits_.max_tokens)) {
      ++it;
      continue;
    }
    tokens += more;
    batch.push_back(*it);
    it = queue_.erase(it);
  }
  return batch;
}

absl::Status ComputePool::Run(std::chrono::system_clock::time_point deadline,
                              const std::function<bool()>& is_cancelled, BatchMember& member,
                              std::chrono::steady_clock::time_point* started) {
  Task task(member, is_cancelled, started);
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
  WakeIdleWorker();
  batch_queue_changed_.notify_all();
  while (!task.started && !task.done) {
    const auto now = std::chrono::system_clock::now();
    const bool expired = now >= deadline;
    if (expired || (is_cancelled && is_cancelled())) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &task));
      Notify();
      return expired ? absl::DeadlineExceededError(
                           "deadline passed while waiting for a compute worker")
                     : absl::CancelledError("cancelled while waiting for a compute worker");
    }
    task.changed.wait_until(lock, std::min(deadline, now + kCancellationPoll));
  }
  task.changed.wait(lock, [&task] { return task.done; });
  return task.result;
}

absl::Status ComputePool::Run(std::chrono::system_clock::time_point deadline,
                              const std::function<bool()>& is_cancelled,
                              absl::FunctionRef<absl::Status()> work,
                              std::chrono::steady_clock::time_point* started) {
  LoneWork lone(work);
  return Run(deadline, is_cancelled, lone, started);
}

void ComputePool::WakeIdleWorker() {
  if (idle_workers_.empty()) return;
  IdleWorker* worker = idle_workers_.back();
  idle_workers_.pop_back();
  worker->woken = true;
  worker->woken_up.notify_one();
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
