#include "server/requests/memory_budget.h"

#include "absl/strings/str_cat.h"

namespace attnserve {

absl::Status MemoryBudget::TryReserve(int64_t bytes) {
  // Compare-and-swap: a refusal never changes the total, even for a moment (adding and taking
  // back would refuse others that fit, and lose the wake-up of calls waiting for room).
  int64_t before = bytes_.load();
  do {
    if (before + bytes > max_bytes_) {
      const absl::string_view why =
          bytes > max_bytes_ ? "more than the whole budget" : "retry later or on another replica";
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request needs ", bytes, " more bytes of memory while calls hold ", before,
          " of the ", max_bytes_, " allowed (--max_request_memory_bytes); ", why));
    }
  } while (!bytes_.compare_exchange_weak(before, before + bytes));
  Observe();
  return absl::OkStatus();
}

void MemoryBudget::Release(int64_t bytes) {
  bytes_ -= bytes;
  Observe();
  if (released_) released_();
}

void MemoryBudget::Observe() {
  if (!changed_) return;
  // Loaded under the lock: whichever change observes last reports a total that includes every
  // change before it, so the gauge settles on the true value.
  std::lock_guard<std::mutex> lock(observe_mutex_);
  changed_(bytes_.load());
}

MemoryHold::~MemoryHold() { Clear(); }

void MemoryHold::Clear() { ShrinkTo(0); }

void MemoryHold::ShrinkTo(int64_t bytes) {
  if (bytes >= bytes_) return;
  budget_->Release(bytes_ - bytes);
  bytes_ = bytes;
}

absl::Status MemoryHold::ResizeTo(int64_t bytes) {
  if (bytes <= bytes_) {
    ShrinkTo(bytes);
    return absl::OkStatus();
  }
  return Add(bytes - bytes_);
}

absl::Status MemoryHold::Add(int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  if (absl::Status status = budget_->TryReserve(bytes); !status.ok()) return status;
  bytes_ += bytes;
  return absl::OkStatus();
}

}  // namespace attnserve
