// The compute workers: every computation runs on one of `workers` long-lived threads, so each
// keeps one warm OpenMP thread pool (computing on gRPC's own handler threads gave each of them a
// pool of its own, and cost about 1 ms per request in contention). At most `queue_depth` requests
// wait; a request that finds the queue full is refused at once, and one whose deadline passes (or
// that is cancelled) while waiting is never computed.
#ifndef ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_
#define ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace attnserve {

class ComputePool {
 public:
  // Called with (busy workers, waiting requests) whenever either changes, under the pool's lock
  // (keep it cheap: it feeds metrics gauges).
  using Observer = std::function<void(int busy, int waiting)>;

  // Starts `workers` (>= 1) threads; `queue_depth` >= 0 requests may wait for one.
  ComputePool(int workers, int queue_depth, Observer observer = nullptr);
  // Lets queued work finish, then stops the threads.
  ~ComputePool();

  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  // Runs `work` on a worker thread and returns its status. RESOURCE_EXHAUSTED at once when every
  // worker is busy and `queue_depth` requests already wait; DEADLINE_EXCEEDED or CANCELLED (polled
  // every few milliseconds through `is_cancelled`) when that happens before a worker takes it —
  // then `work` never runs. Once running, `work` is waited for (it polls cancellation itself).
  absl::Status Run(std::chrono::system_clock::time_point deadline,
                   const std::function<bool()>& is_cancelled,
                   absl::FunctionRef<absl::Status()> work);

  int busy() const;
  int waiting() const;

 private:
  struct Task {
    explicit Task(absl::FunctionRef<absl::Status()> work) : work(work) {}
    absl::FunctionRef<absl::Status()> work;
    absl::Status result;
    bool started = false;
    bool done = false;
  };

  void WorkerLoop();
  // Requires mutex_.
  void Notify();

  const int workers_;
  const int queue_depth_;
  const Observer observer_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer intercepts it, whereas Debian's absl is
  // not instrumented, so TSan could not see absl's locking (scripts/sanitize.sh thread).
  mutable std::mutex mutex_;
  std::condition_variable work_queued_;  // queue_ gained a task, or stopping_ was set
  std::condition_variable task_changed_;  // some task was started or finished
  // Guarded by mutex_:
  std::deque<Task*> queue_;
  int busy_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_
