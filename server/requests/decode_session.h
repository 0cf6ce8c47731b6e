// Decode, transport-neutral: one stream's incremental decoding and the K/V cache budget all
// streams share.
#ifndef ATTNSERVE_SERVER_REQUESTS_DECODE_SESSION_H_
#define ATTNSERVE_SERVER_REQUESTS_DECODE_SESSION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "core/attention/multi_head_attention.h"
#include "server/models/loaded_model.h"
#include "server/requests/request_context.h"
#include "server/requests/tensors.h"

namespace attnserve {

// All Decode streams' K/V caches together, held to --max_kv_cache_bytes, and the number of open
// streams. Shared by every DecodeSession (thread-safe).
class KvCacheBudget {
 public:
  struct Observers {
    // The open streams and the bytes held, after each change but a release.
    std::function<void(int64_t streams, int64_t bytes)> changed;
    // A reservation refused.
    std::function<void()> refused;
  };

  // `observers` may be empty.
  KvCacheBudget(int64_t max_bytes, Observers observers)
      : max_bytes_(max_bytes), observers_(std::move(observers)) {}

  int64_t max_bytes() const { return max_bytes_; }
  // Adds `bytes` unless the total would pass max_bytes (then adds nothing: false).
  bool TryReserve(int64_t bytes);
  void Release(int64_t bytes);
  void OpenStream();
  void CloseStream();

 private:
  void Observe() const;

  const int64_t max_bytes_;
  const Observers observers_;
  std::atomic<int64_t> bytes_{0};
  std::atomic<int64_t> streams_{0};
};

// One message of a stream: the sequence's next tokens. `query` holds what the front end
// decoded, or why it could not (reported after the model check, see EncodeCall).
struct DecodeStep {
  std::string model;                  // empty, or the stream's model
  absl::StatusOr<FloatTensor> query = absl::InternalError("query not decoded");  // [1, n, d]
  bool return_attention = false;
};

// Bytes of a KvCacheBudget held by a session until this is destroyed (move-only): a step's
// transient bytes (the old arrays of a cache that moved to larger ones), which the front end keeps
// until the step's response is out.
class BudgetHold {
 public:
  BudgetHold() = default;
  BudgetHold(KvCacheBudget* budget, int64_t* session_bytes, int64_t bytes)
      : budget_(budget), session_bytes_(session_bytes), bytes_(bytes) {}
  BudgetHold(BudgetHold&& other) noexcept { *this = std::move(other); }
  BudgetHold& operator=(BudgetHold&& other) noexcept;
  ~BudgetHold() { Release(); }

 private:
  void Release();

  KvCacheBudget* budget_ = nullptr;
  int64_t* session_bytes_ = nullptr;  // the session's count of what it holds
  int64_t bytes_ = 0;
};

struct DecodeStepResult {
  BudgetHold transient;                  // given back when the result goes
  int64_t position = 0;                  // the first new token's position
  std::vector<int64_t> output_shape;     // the query's
  std::vector<float> output;             // [1, new_tokens, d_model]
  AttentionMap attention;                // [1, num_heads, new_tokens, cached + new]
};

// One Decode stream: its model (the snapshot it started with), its K/V cache and the share of
// the budget the cache holds, given back when the session ends however the stream ends.
class DecodeSession {
 public:
  // `model` and `budget` must outlive the session.
  DecodeSession(const LoadedModel& model, const ServiceLimits& limits, KvCacheBudget& budget);
  ~DecodeSession();
  DecodeSession(const DecodeSession&) = delete;
  DecodeSession& operator=(const DecodeSession&) = delete;

  const std::string& model_name() const { return model_.config.name(); }

  // Checks the step (model, shape, the stream's positions, limits, response size), reserves the
  // cache's growth (RESOURCE_EXHAUSTED past the budget), then runs the layer through
  // context.compute: continuous batching, one DecodeBatch with the steps of the model's other
  // streams that wait with it. Positions continue the sequence; causal is implied. The step's
  // transient reservation stays with `result` (result->transient), as long as the front end
  // keeps it.
  absl::StatusOr<WorkDone> Step(const RequestContext& context, DecodeStep& step,
                                DecodeStepResult* result);

 private:
  absl::Status CheckStep(const RequestContext& context, const DecodeStep& step,
                         const FloatTensor& query) const;
  // Reserves what the step needs on top of what the session holds: a cache with room for `room`
  // tokens plus `transient` bytes (the old arrays while the cache moves to larger ones),
  // released after the step by the caller.
  absl::Status Reserve(int64_t room, int64_t transient);

  const LoadedModel& model_;
  KvCacheBudget& budget_;
  const int64_t max_positions_;  // model max_positions or --max_sequence_length, the smaller
  KvCache cache_;
  int64_t reserved_ = 0;  // bytes of the budget this session holds
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_DECODE_SESSION_H_
