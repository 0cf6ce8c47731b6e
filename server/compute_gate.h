// Admission control for computations: at most `workers` run at once, at most `queue_depth` wait;
// a request that finds the queue full is refused at once, and one whose deadline passes (or that
// is cancelled) while waiting is never computed.
#ifndef ATTNSERVE_SERVER_COMPUTE_GATE_H_
#define ATTNSERVE_SERVER_COMPUTE_GATE_H_

#include <chrono>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace attnserve {

class ComputeGate {
 public:
  // workers >= 1 computations at once; queue_depth >= 0 waiting.
  ComputeGate(int workers, int queue_depth) : workers_(workers), queue_depth_(queue_depth) {}

  // A running slot; returned to the gate when destroyed.
  class Slot {
   public:
    explicit Slot(ComputeGate* gate) : gate_(gate) {}
    Slot(Slot&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() {
      if (gate_ != nullptr) gate_->Release();
    }

   private:
    ComputeGate* gate_;
  };

  // Waits for a slot until `deadline`. RESOURCE_EXHAUSTED at once when `queue_depth` requests
  // already wait; DEADLINE_EXCEEDED when the deadline passes first; CANCELLED when
  // `is_cancelled` (polled every few milliseconds while waiting) turns true.
  absl::StatusOr<Slot> Acquire(std::chrono::system_clock::time_point deadline,
                               const std::function<bool()>& is_cancelled);

  int running() const;
  int waiting() const;

 private:
  void Release();

  const int workers_;
  const int queue_depth_;
  mutable absl::Mutex mutex_;
  int running_ ABSL_GUARDED_BY(mutex_) = 0;
  int waiting_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_COMPUTE_GATE_H_
