#include "server/compute_gate.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace attnserve {
namespace {

// How often a waiting request checks whether its client gave up.
constexpr absl::Duration kCancellationPoll = absl::Milliseconds(5);

}  // namespace

absl::StatusOr<ComputeGate::Slot> ComputeGate::Acquire(
    std::chrono::system_clock::time_point deadline, const std::function<bool()>& is_cancelled) {
  absl::MutexLock lock(&mutex_);
  if (running_ < workers_ && waiting_ == 0) {
    ++running_;
    return Slot(this);
  }
  // Refused only when no slot is free and the queue is full (a slot just released but not yet
  // taken by a waiter still counts as free).
  if (running_ >= workers_ && waiting_ >= queue_depth_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "server busy: ", running_, " computations running and ", waiting_,
        " waiting (--compute_workers=", workers_, ", --compute_queue_depth=", queue_depth_, ")"));
  }
  ++waiting_;
  const absl::Time until = absl::FromChrono(deadline);
  const auto slot_free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return running_ < workers_;
  };
  while (!slot_free()) {
    if (absl::Now() >= until) {
      --waiting_;
      return absl::DeadlineExceededError("deadline passed while waiting for a compute slot");
    }
    if (is_cancelled && is_cancelled()) {
      --waiting_;
      return absl::CancelledError("cancelled while waiting for a compute slot");
    }
    mutex_.AwaitWithDeadline(absl::Condition(&slot_free), std::min(until, absl::Now() + kCancellationPoll));
  }
  --waiting_;
  ++running_;
  return Slot(this);
}

void ComputeGate::Release() {
  absl::MutexLock lock(&mutex_);
  --running_;
}

int ComputeGate::running() const {
  absl::MutexLock lock(&mutex_);
  return running_;
}

int ComputeGate::waiting() const {
  absl::MutexLock lock(&mutex_);
  return waiting_;
}

}  // namespace attnserve
