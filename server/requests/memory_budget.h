// The bytes that the calls being served hold together, bounded (--max_request_memory_bytes). A
// call reserves what reading its message will hold before the read, then what its message holds,
// then, once its shapes are checked and before anything request-sized is allocated, what its
// computation and answer will hold (ReserveMemory in request_context.h); a reservation past the
// budget is refused with RESOURCE_EXHAUSTED, which the caller turns into waiting or a refusal
// (server/rpc/unary_call.h), so a flood of large requests is answered instead of exhausting
// memory. A call's bytes return when it ends (its answer sent or abandoned).
#ifndef ATTNSERVE_SERVER_REQUESTS_MEMORY_BUDGET_H_
#define ATTNSERVE_SERVER_REQUESTS_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

#include "absl/status/status.h"

namespace attnserve {

class MemoryBudget {
 public:
  // `changed` (may be null) gets the bytes held after each change; `released` (may be null) is
  // called after bytes return, outside any lock of the budget (it may reserve).
  explicit MemoryBudget(int64_t max_bytes, std::function<void(int64_t bytes)> changed = nullptr,
                        std::function<void()> released = nullptr)
      : max_bytes_(max_bytes), changed_(std::move(changed)), released_(std::move(released)) {}

  int64_t max_bytes() const { return max_bytes_; }
  int64_t bytes() const { return bytes_.load(); }

 private:
  friend class MemoryHold;
  // Adds `bytes` unless the total would pass max_bytes (then RESOURCE_EXHAUSTED, nothing added).
  absl::Status TryReserve(int64_t bytes);
  void Release(int64_t bytes);
  void Observe();

  const int64_t max_bytes_;
  const std::function<void(int64_t)> changed_;
  const std::function<void()> released_;
  std::atomic<int64_t> bytes_{0};
  std::mutex observe_mutex_;
};

// What one call (or stream step) holds of a MemoryBudget, returned when this is destroyed. Move-only; one thread
// at a time.
class MemoryHold {
 public:
  explicit MemoryHold(MemoryBudget* budget) : budget_(budget) {}
  MemoryHold(const MemoryHold&) = delete;
  MemoryHold& operator=(const MemoryHold&) = delete;
  ~MemoryHold();

  // Reserves `bytes` more for this call; RESOURCE_EXHAUSTED stating the bytes asked, held and
  // allowed when the budget would be passed (nothing is reserved then).
  absl::Status Add(int64_t bytes);
  int64_t bytes() const { return bytes_; }
  // Returns everything held (a stream's step is over; the next reserves anew).
  void Clear();
  // Returns what is held beyond `bytes` (an estimate from above made exact); never fails, so no
  // other call can take the bytes in between.
  void ShrinkTo(int64_t bytes);
  // Holds exactly `bytes`: shrinks, or adds the difference (RESOURCE_EXHAUSTED as Add, nothing
  // changed).
  absl::Status ResizeTo(int64_t bytes);

 private:
  MemoryBudget* const budget_;
  int64_t bytes_ = 0;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_MEMORY_BUDGET_H_
