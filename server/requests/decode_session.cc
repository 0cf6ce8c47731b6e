#include "server/requests/decode_session.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/attention/sdpa_options.h"
#include "core/base/status_macros.h"

namespace attnserve {

bool KvCacheBudget::TryReserve(int64_t bytes) {
  if (bytes_.fetch_add(bytes) + bytes > max_bytes_) {
    bytes_ -= bytes;
    if (observers_.refused) observers_.refused();
    return false;
  }
  Observe();
  return true;
}

void KvCacheBudget::Release(int64_t bytes) { bytes_ -= bytes; }

void KvCacheBudget::OpenStream() {
  ++streams_;
  Observe();
}

void KvCacheBudget::CloseStream() {
  --streams_;
  Observe();
}

void KvCacheBudget::Observe() const {
  if (observers_.changed) observers_.changed(streams_.load(), bytes_.load());
}

BudgetHold& BudgetHold::operator=(BudgetHold&& other) noexcept {
  Release();
  budget_ = std::exchange(other.budget_, nullptr);
  session_bytes_ = std::exchange(other.session_bytes_, nullptr);
  bytes_ = std::exchange(other.bytes_, 0);
  return *this;
}

void BudgetHold::Release() {
  if (budget_ == nullptr) return;
  budget_->Release(bytes_);
  *session_bytes_ -= bytes_;
  budget_ = nullptr;
}

DecodeSession::DecodeSession(const LoadedModel& model, const ServiceLimits& limits,
                             KvCacheBudget& budget)
    : model_(model),
      budget_(budget),
      max_positions_(model.config.max_positions() > 0
                         ? std::min(model.config.max_positions(), limits.max_sequence_length)
                         : limits.max_sequence_length) {
  budget_.OpenStream();
}

namespace {

// One stream's checked step. The steps of streams on the same model instance with the same
// compute type run as one DecodeBatch, each against its own cache.
class DecodeMember final : public BatchMember {
 public:
  DecodeMember(const LoadedModel& model, const DecodeInputs& inputs, KvCache* cache, float* out,
               float* probs)
      : BatchMember("Decode", model.config.name(),
                    absl::StrCat("Decode/", reinterpret_cast<uintptr_t>(model.layer.get()), "/",
                                 static_cast<int>(inputs.compute)),
                    inputs.new_tokens),
        layer_(*model.layer),
        step_{&inputs, cache, out, probs} {}

  bool IsStreamStep() const override { return true; }

  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) override {
    std::vector<DecodeBatchMember> steps;
    for (BatchMember* member : batch) steps.push_back(static_cast<DecodeMember*>(member)->step_);
    return layer_.DecodeBatch(steps);
  }

 private:
  const MultiHeadAttention& layer_;
  const DecodeBatchMember step_;
};

}  // namespace

DecodeSession::~DecodeSession() {
  budget_.Release(reserved_);
  budget_.CloseStream();
}

absl::Status DecodeSession::CheckStep(const RequestContext& context, const DecodeStep& step,
                                      const FloatTensor& query) const {
  const AttentionConfig& config = model_.layer->config();
  const std::vector<int64_t>& shape = query.shape;
  if (shape[0] != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("query.shape[0]=", shape[0], " must be 1 (one sequence per stream)"));
  }
  if (shape[2] != config.d_model) {
    return absl::InvalidArgumentError(
        absl::StrCat("query.shape[2]=", shape[2], " must equal d_model=", config.d_model));
  }
  const int64_t n = shape[1];
  if (n > max_positions_ - cache_.length) {
    return absl::OutOfRangeError(absl::StrCat(
        "query.shape[1]=", n, " new tokens after ", cache_.length, " would pass the stream's ",
        max_positions_, " positions (model max_positions or --max_sequence_length)"));
  }
  const int64_t total = cache_.length + n;
  RETURN_IF_ERROR(CheckLimits(context.limits, 1, config.num_heads, n, total,
                              /*scores_held=*/step.return_attention,
                              "query.shape[1]", "cached + new tokens"));
  RETURN_IF_ERROR(CheckFlops(context.limits, LayerFlops(config, 1, n, total, true),
                             CopeWorkFlops(config.encoding, 1, config.num_heads, n, total)));
  if (step.return_attention) {
    RETURN_IF_ERROR(CheckResponseSize(context.limits, "return_attention", "attention",
                                      {1, config.num_heads, n, total}, n * config.d_model * 4));
  }
  return absl::OkStatus();
}

absl::Status DecodeSession::Reserve(int64_t room, int64_t transient) {
  const AttentionConfig& config = model_.layer->config();
  const int64_t growth =
      KvCache::Bytes(room, config.num_kv_heads, config.head_dim) + transient - reserved_;
  if (!budget_.TryReserve(growth)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "K/V cache with room for ", room, " tokens (", reserved_ + growth,
        " bytes) does not fit --max_kv_cache_bytes=", budget_.max_bytes(),
        " with the other streams' caches"));
  }
  reserved_ += growth;
  return absl::OkStatus();
}

absl::StatusOr<WorkDone> DecodeSession::Step(const RequestContext& context, DecodeStep& step,
                                             DecodeStepResult* result) {
  if (!step.model.empty() && step.model != model_name()) {
    return absl::InvalidArgumentError(absl::StrCat("model=\"", step.model,
                                                   "\" differs from the stream's model=\"",
                                                   model_name(), "\""));
  }
  ASSIGN_OR_RETURN(const FloatTensor query, std::move(step.query));
  RETURN_IF_ERROR(CheckStep(context, step, query));
  const AttentionConfig& config = model_.layer->config();
  const int64_t n = query.shape[1];
  const int64_t total = cache_.length + n;
  const int64_t room = KvCache::GrownCapacity(cache_.capacity, total, max_positions_);
  // While the cache moves to larger arrays, the old ones are held too.
  const int64_t transient =
      room != cache_.capacity ? KvCache::Bytes(cache_.capacity, config.num_kv_heads,
                                               config.head_dim)
                              : 0;
  RETURN_IF_ERROR(Reserve(room, transient));
  // Whatever happens in the step, the transient copy is given back after it (result->transient).
  result->transient = BudgetHold(&budget_, &reserved_, transient);

  DecodeInputs inputs;
  inputs.query = query.values.data();
  inputs.new_tokens = n;
  inputs.max_length = max_positions_;
  inputs.is_cancelled = context.is_cancelled;
  result->position = cache_.length;
  result->output_shape = query.shape;
  result->output.resize(n * config.d_model);
  result->attention.shape = {1, config.num_heads, n, total};
  if (step.return_attention) result->attention.values.resize(config.num_heads * n * total);
  DecodeMember member(model_, inputs, &cache_, result->output.data(),
                      step.return_attention ? result->attention.values.data() : nullptr);
  RETURN_IF_ERROR(Compute(context, member));
  return WorkDone{n, LayerFlops(config, 1, n, total, true)};
}

}  // namespace attnserve
