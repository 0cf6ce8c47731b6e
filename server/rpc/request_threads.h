// The threads that run the unary RPCs' bodies. The service answers those RPCs on gRPC's callback
// API, whose threads must never block, while a body blocks: it waits for its batch on a compute
// worker (ComputePool). So each body runs on a thread of its own from here, started on demand and
// kept for the next body when few are idle. (gRPC's synchronous server, which did the same with
// its own threads, cost about 0.3 ms more CPU per call on the 2-core development machine:
// docs/performance.md.)
#ifndef ATTNSERVE_SERVER_RPC_REQUEST_THREADS_H_
#define ATTNSERVE_SERVER_RPC_REQUEST_THREADS_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace attnserve {

class RequestThreads {
 public:
  struct Options {
    int max_threads = 0;        // bodies running at once (--rpc_threads); 0: no cap
    int max_idle_threads = 32;  // threads kept waiting for the next body after a burst
  };

  explicit RequestThreads(Options options);
  // Waits for every body scheduled to end.
  ~RequestThreads();
  RequestThreads(const RequestThreads&) = delete;
  RequestThreads& operator=(const RequestThreads&) = delete;

  // Runs `body` on a thread of its own: an idle one, else a new one. False, and `body` is not
  // run, when max_threads bodies are running or the system refuses a new thread.
  bool TrySchedule(std::function<void()> body);

  // Threads alive now (running a body or idle), and those idle.
  int threads() const;
  int idle_threads() const;

 private:
  // A thread's life: bodies until none is queued and max_idle_threads others are idle.
  void Serve();

  const Options options_;
  mutable std::mutex mutex_;
  std::condition_variable body_queued_;   // for idle threads
  std::condition_variable thread_ended_;  // for the destructor
  std::deque<std::function<void()>> queue_;
  int threads_ = 0;  // alive
  // Each queued body has a thread to take it: an idle one or one starting (which another
  // thread may beat to it: it is then idle).
  int idle_ = 0;      // waiting for a body
  int starting_ = 0;  // started, not yet taking bodies
  bool stopping_ = false;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_REQUEST_THREADS_H_
