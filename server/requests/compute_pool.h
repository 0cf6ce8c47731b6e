// The compute workers: every computation runs on one of `workers` long-lived threads, so each
// keeps one warm OpenMP thread pool (computing on gRPC's own handler threads gave each of them a
// pool of its own, and cost about 1 ms per request in contention). At most `queue_depth` requests
// wait; a request that finds the queue full is refused at once, and one whose deadline passes (or
// that is cancelled) while waiting is never computed.
//
// Batching: when a worker takes a request whose BatchMember key is not empty, the requests with
// the same key waiting behind it join it, in arrival order, up to the batch limits, and the
// worker computes them together (BatchMember::RunBatch). A request never waits for others while a
// worker is free, unless the batch timeout asks for it. Steps of streams (Decode) run one batch
// per key at a time, and the next may be held open for the streams of the last
// (BatchLimits::step_wait). One worker holds a batch open; the others take what waits behind it
// (other keys).
//
// An idle worker that is woken is the one that went idle last, so light traffic keeps landing on
// the same warm thread (its OpenMP team, oneDNN primitives and buffers); each computation counts
// as a RunningComputation, so the workers busy at once share the compute threads
// (SetComputeThreads) instead of each spreading over all of them.
#ifndef ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_
#define ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "server/requests/batch_member.h"
#include "server/requests/service_limits.h"

namespace attnserve {

class ComputePool {
 public:
  // Called with (busy workers, waiting requests) whenever either changes, under the pool's lock
  // (keep it cheap: it feeds metrics gauges).
  using Observer = std::function<void(int busy, int waiting)>;
  // Called as a batch of members with a key starts (a lone one too), with its members, under
  // the pool's lock.
  using BatchObserver = std::function<void(absl::Span<BatchMember* const> batch)>;

  // Starts `workers` (>= 1) threads; `queue_depth` >= 0 requests may wait for one.
  ComputePool(int workers, int queue_depth, Observer observer = nullptr, BatchLimits limits = {},
              BatchObserver batch_observer = nullptr);
  // Lets queued work finish, then stops the threads.
  ~ComputePool();

  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  // Computes `member` on a worker, in a batch with others of its key when they wait together,
  // and returns its status. RESOURCE_EXHAUSTED at once when every worker is busy and
  // `queue_depth` requests already wait; DEADLINE_EXCEEDED or CANCELLED when that happens before
  // its batch starts — then it is never computed. Cancellation is polled through `is_cancelled`
  // by the worker forming a batch, and by the waiting caller every 50 ms. Once started, the
  // member is waited for (it polls cancellation itself). `started`, when given, is set to when
  // its batch started.
  absl::Status Run(std::chrono::system_clock::time_point deadline,
                   const std::function<bool()>& is_cancelled, BatchMember& member,
                   std::chrono::steady_clock::time_point* started = nullptr);
  // The same for work that always runs alone.
  absl::Status Run(std::chrono::system_clock::time_point deadline,
                   const std::function<bool()>& is_cancelled,
                   absl::FunctionRef<absl::Status()> work,
                   std::chrono::steady_clock::time_point* started = nullptr);

  int busy() const;
  int waiting() const;

 private:
  struct Task {
    Task(BatchMember& member, const std::function<bool()>& is_cancelled,
         std::chrono::steady_clock::time_point* started)
        : member(member), is_cancelled(is_cancelled), started_at(started) {}
    BatchMember& member;
    const std::function<bool()>& is_cancelled;  // may be unset
    std::chrono::steady_clock::time_point* started_at;  // may be null
    std::chrono::steady_clock::time_point queued = std::chrono::steady_clock::now();
    // Signalled when the task starts or ends (its waiter alone wakes).
    std::condition_variable changed;
    absl::Status result;
    bool started = false;
    bool done = false;
  };

  void WorkerLoop();
  // Requires mutex_ (released while computing): runs `batch`, taken from the queue, and ends
  // its tasks with their statuses.
  void RunBatch(std::unique_lock<std::mutex>& lock, const std::vector<Task*>& batch);
  // Requires mutex_: the first queued task a worker may take now (not a stream step whose key
  // has a batch running, nor one of a key another worker holds open), or queue_.end().
  std::deque<Task*>::iterator FirstTakeable();
  // Requires mutex_: whether `member` may be taken now (see FirstTakeable).
  bool Takeable(const BatchMember& member) const;
  // Requires mutex_: holds the batch `front` (a waiting task) would lead open while the batch
  // timeout or the step wait applies to it (true: the queue may have changed, look again),
  // else false.
  bool WaitForBatch(std::unique_lock<std::mutex>& lock, const Task& front);
  // Requires mutex_: until when the batch `front` leads, with `waiting` tasks of its key queued,
  // may be held open.
  std::chrono::steady_clock::time_point HoldUntil(const Task& front, int waiting) const;
  // Requires mutex_: a batch of stream steps of `key` starts; one of `members` steps ends.
  void StartStepBatch(const std::string& key);
  void EndStepBatch(const std::string& key, int members);
  // Requires mutex_: removes `first` and the waiting tasks that may join its batch. Tasks found
  // cancelled on the way are removed and ended CANCELLED (their waiters poll only rarely); empty
  // when `first` itself was.
  std::vector<Task*> TakeBatch(std::deque<Task*>::iterator first);
  // Requires mutex_: whether `task` was cancelled; if so it is ended CANCELLED (not started).
  bool EndIfCancelled(Task* task);
  // Requires mutex_.
  void Notify();
  // Requires mutex_: wakes the worker that went idle last, if one is idle.
  void WakeIdleWorker();

  // A worker waiting for work.
  struct IdleWorker {
    std::condition_variable woken_up;
    bool woken = false;  // guarded by mutex_
  };

  const int workers_;
  const int queue_depth_;
  const Observer observer_;
  const BatchLimits limits_;
  const BatchObserver batch_observer_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer intercepts it, whereas Debian's absl is
  // not instrumented, so TSan could not see absl's locking (scripts/sanitize.sh thread).
  mutable std::mutex mutex_;
  // Workers holding a batch open (WaitForBatch) wait on this for queue_ to gain a task.
  std::condition_variable batch_queue_changed_;
  // Guarded by mutex_:
  std::deque<Task*> queue_;
  std::vector<IdleWorker*> idle_workers_;  // the last to go idle at the back
  // The steps of one key's streams (BatchMember::IsStreamStep) run one batch at a time, as
  // continuous batching does (a second worker would split the streams and read the weights
  // twice), and the next batch may be held open for the streams of the last (step_wait).
  struct StreamSteps {
    bool running = false;
    int expected = 0;  // steps coming: the last batch's, and those that waited through it
    std::chrono::steady_clock::time_point ended;  // of the last batch
  };
  std::unordered_map<std::string, StreamSteps> stream_steps_;  // by key: models × dtypes
  std::unordered_set<std::string> held_keys_;  // the keys of batches a worker holds open
  int busy_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_COMPUTE_POOL_H_
