#include "server/requests/decode_session.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace attnserve {

bool KvCacheBudget::TryReserve(int64_t bytes) {
  if (bytes_.fetch_add(bytes) + bytes > max_bytes_) {
    bytes_ -= bytes;
    if (metrics_ != nullptr) metrics_->RecordRejected("kv_cache_budget");
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
  if (metrics_ != nullptr) metrics_->ObserveDecode(streams_.load(), bytes_.load());
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

DecodeSession::~DecodeSession() {
  budget_.Release(reserved_);
  budget_.CloseStream();
}

absl::Status DecodeSession::CheckStep(const RequestContext& context,
                                      const DecodeStep& step) const {
  const AttentionConfig& config = model_.layer->config();
  const std::string& name = model_.config.name();
  if (!step.model.empty() && step.model != name) {
    return absl::InvalidArgumentError(absl::StrCat("model=\"", step.model,
                                                   "\" differs from the stream's model=\"", name,
                                                   "\""));
  }
  const std::vector<int64_t>& shape = step.query.shape;
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
  RETURN_IF_ERROR(CheckLimits(context.limits, 1, config.num_heads, n, total, "query.shape[1]",
                              "cached + new tokens"));
  if (step.return_attention) {
    RETURN_IF_ERROR(CheckResponseSize(context.limits, "return_attention", "attention",
                                      {1, config.num_heads, n, total}, n * config.d_model * 4));
  }
  return absl::OkStatus();
}

absl::Status DecodeSession::Reserve(int64_t total, int64_t transient) {
  const AttentionConfig& config = model_.layer->config();
  const int64_t growth =
      KvCache::Bytes(total, config.num_kv_heads, config.head_dim) + transient - reserved_;
  if (!budget_.TryReserve(growth)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "K/V cache of ", total, " tokens (", reserved_ + growth,
        " bytes) does not fit --max_kv_cache_bytes=", budget_.max_bytes(),
        " with the other streams' caches"));
  }
  reserved_ += growth;
  return absl::OkStatus();
}

absl::StatusOr<WorkDone> DecodeSession::Step(const RequestContext& context,
                                             const DecodeStep& step, RunOnWorker run,
                                             DecodeStepResult* result) {
  RETURN_IF_ERROR(CheckStep(context, step));
  const AttentionConfig& config = model_.layer->config();
  const int64_t n = step.query.shape[1];
  const int64_t total = cache_.length + n;
  const int64_t transient = KvCache::Bytes(cache_.length, config.num_kv_heads, config.head_dim);
  RETURN_IF_ERROR(Reserve(total, transient));
  // Whatever happens in the step, the transient copy is gone after it.
  absl::Cleanup release_transient = [this, transient] {
    budget_.Release(transient);
    reserved_ -= transient;
  };

  DecodeInputs inputs;
  inputs.query = step.query.values.data();
  inputs.new_tokens = n;
  inputs.is_cancelled = context.is_cancelled;
  result->position = cache_.length;
  result->output_shape = step.query.shape;
  result->output.resize(n * config.d_model);
  result->attention.shape = {1, config.num_heads, n, total};
  if (step.return_attention) result->attention.values.resize(config.num_heads * n * total);
  RETURN_IF_ERROR(run([&] {
    return model_.layer->Decode(inputs, &cache_, result->output.data(),
                                step.return_attention ? result->attention.values.data() : nullptr);
  }));
  return WorkDone{n, LayerFlops(config, 1, n, total, true)};
}

}  // namespace attnserve
