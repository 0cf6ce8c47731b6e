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
    auto first = FirstTakeable();
    while (first == queue_.end() && !stopping_) {
      idle.woken = false;
      idle_workers_.push_back(&idle);
      idle.woken_up.wait(lock, [&idle] { return idle.woken; });
      first = FirstTakeable();
    }
    // Stopping, and nothing left that this worker may take (the worker running a key's stream
    // steps takes the rest of them when its batch ends).
    if (first == queue_.end()) return;
    if (WaitForBatch(lock, **first)) continue;
    const std::vector<Task*> batch = TakeBatch(first);
    if (!batch.empty() && batch.front()->member.IsStreamStep()) {
      StartStepBatch(batch.front()->member.key());
    }
    // Requests it left (another key, past the limits) need a worker of their own.
    if (FirstTakeable() != queue_.end()) WakeIdleWorker();
    if (!batch.empty()) RunBatch(lock, batch);  // empty: what it found was cancelled
  }
}

void ComputePool::RunBatch(std::unique_lock<std::mutex>& lock, const std::vector<Task*>& batch) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<BatchMember*> members;
  for (Task* task : batch) {
    task->started = true;
    if (task->started_at != nullptr) *task->started_at = now;
    members.push_back(&task->member);
  }
  const BatchMember& lead = *members.front();
  ++busy_;
  Notify();
  if (batch_observer_ && !lead.key().empty()) batch_observer_(members);
  for (Task* task : batch) task->changed.notify_one();
  lock.unlock();
  std::vector<absl::Status> results;
  {
    RunningComputation running;
    results = RunCaught(members);
  }
  lock.lock();
  --busy_;
  if (lead.IsStreamStep()) EndStepBatch(lead.key(), static_cast<int>(batch.size()));
  Notify();
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i]->result = i < results.size()
                           ? std::move(results[i])
                           : absl::InternalError("the batch computed no status for this request");
    batch[i]->done = true;
    batch[i]->changed.notify_one();
  }
}

bool ComputePool::EndIfCancelled(Task* task) {
  if (!task->is_cancelled || !task->is_cancelled()) return false;
  task->result = absl::CancelledError("cancelled while waiting for a compute worker");
  task->done = true;
  task->changed.notify_one();
  return true;
}

bool ComputePool::Takeable(const BatchMember& member) const {
  if (!member.key().empty() && held_keys_.count(member.key()) > 0) return false;
  if (!member.IsStreamStep()) return true;
  const auto steps = stream_steps_.find(member.key());
  return steps == stream_steps_.end() || !steps->second.running;
}

std::deque<ComputePool::Task*>::iterator ComputePool::FirstTakeable() {
  return std::find_if(queue_.begin(), queue_.end(),
                      [this](const Task* task) { return Takeable(task->member); });
}

bool ComputePool::WaitForBatch(std::unique_lock<std::mutex>& lock, const Task& front) {
  // A copy: `front` may leave the queue (cancelled) while this worker waits.
  const std::string key = front.member.key();
  if (limits_.max_requests <= 1 || key.empty() || stopping_) return false;
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
  const auto until = HoldUntil(front, requests);
  if (std::chrono::steady_clock::now() >= until) return false;
  held_keys_.insert(key);
  batch_queue_changed_.wait_until(lock, until);
  held_keys_.erase(key);
  return true;
}

std::chrono::steady_clock::time_point ComputePool::HoldUntil(const Task& front,
                                                             int waiting) const {
  auto until = front.queued + limits_.timeout;
  if (front.member.IsStreamStep()) {
    const auto steps = stream_steps_.find(front.member.key());
    // The last batch's streams come back within a round trip of their answers: from the first
    // of them (or from the end, for steps that waited through the batch), the rest get
    // step_wait. A step arriving later than that after the end starts a new round.
    if (steps != stream_steps_.end() && waiting < steps->second.expected &&
        front.queued <= steps->second.ended + limits_.step_wait) {
      until = std::max(until, std::max(front.queued, steps->second.ended) + limits_.step_wait);
    }
  }
  return until;
}

void ComputePool::StartStepBatch(const std::string& key) {
  // The keys of models since unloaded would stay forever: forget the idle ones past a few dozen.
  constexpr size_t kMaxKeys = 64;
  if (stream_steps_.size() >= kMaxKeys && stream_steps_.count(key) == 0) {
    for (auto it = stream_steps_.begin(); it != stream_steps_.end();) {
      it = it->second.running ? std::next(it) : stream_steps_.erase(it);
    }
  }
  stream_steps_[key].running = true;
}

void ComputePool::EndStepBatch(const std::string& key, int members) {
  StreamSteps& steps = stream_steps_[key];
  steps.running = false;
  steps.ended = std::chrono::steady_clock::now();
  steps.expected = members + static_cast<int>(std::count_if(
                                 queue_.begin(), queue_.end(),
                                 [&key](const Task* task) { return task->member.key() == key; }));
}

std::vector<ComputePool::Task*> ComputePool::TakeBatch(std::deque<Task*>::iterator first) {
  Task* lead = *first;
  auto it = queue_.erase(first);
  Notify();
  if (EndIfCancelled(lead)) return {};
  std::vector<Task*> batch = {lead};
  const std::string& key = lead->member.key();
  if (key.empty()) return batch;
  int64_t tokens = lead->member.tokens();
  // The tasks before `first` wait for a running batch of their own key, so none has this one.
  while (it != queue_.end() && static_cast<int>(batch.size()) < limits_.max_requests) {
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
  // A step of streams whose batch is running waits for it to end (its worker takes it then), and
  // one of a key held open joins that batch (its worker is told below).
  if (Takeable(member)) WakeIdleWorker();
  batch_queue_changed_.notify_all();
  while (!task.started && !task.done) {
    const auto now = std::chrono::system_clock::now();
    const bool expired = now >= deadline;
    if (expired || (is_cancelled && is_cancelled())) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &task));
      Notify();
      batch_queue_changed_.notify_all();  // it may have been the batch held open
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
