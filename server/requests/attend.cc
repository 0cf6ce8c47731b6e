#include "server/requests/attend.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/attention/sdpa_options.h"
#include "core/base/status_macros.h"

namespace attnserve {
namespace {

// The context's shape against the model's width and the query's batch.
absl::Status CheckContext(const AttendCall& call, const std::optional<FloatTensor>& context,
                          int64_t d_model) {
  if (!context.has_value()) return absl::OkStatus();
  const std::vector<int64_t>& shape = context->shape;
  if (shape[0] != call.query.shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat(call.context_field, ".shape[0]=", shape[0],
                                                   " must equal ", call.query_field,
                                                   ".shape[0]=", call.query.shape[0]));
  }
  if (shape[2] != d_model) {
    return absl::InvalidArgumentError(absl::StrCat(call.context_field, ".shape[2]=", shape[2],
                                                   " must equal d_model=", d_model));
  }
  return absl::OkStatus();
}

// One checked Attend call. Calls on the same model instance with the same compute type run as
// one ForwardBatch; the rest of a call (causal, key lengths, positions, context, probabilities)
// is its own.
class AttendMember final : public BatchMember {
 public:
  AttendMember(const LoadedModel& model, const AttendInputs& inputs, float* out, float* probs)
      : BatchMember("Attend", model.config.name(),
                    absl::StrCat("Attend/", reinterpret_cast<uintptr_t>(model.layer.get()), "/",
                                 static_cast<int>(inputs.compute)),
                    inputs.batch * inputs.q_len),
        layer_(*model.layer),
        inputs_(inputs),
        out_(out),
        probs_(probs) {}

  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) override {
    // Alone, the plain layer: no packing copies.
    if (batch.size() == 1) return {layer_.Forward(inputs_, out_, probs_)};
    std::vector<LayerBatchMember> members;
    for (BatchMember* member : batch) {
      const auto* attend = static_cast<const AttendMember*>(member);
      members.push_back({&attend->inputs_, attend->out_, attend->probs_});
    }
    return layer_.ForwardBatch(members);
  }

 private:
  const MultiHeadAttention& layer_;
  const AttendInputs& inputs_;
  float* const out_;
  float* const probs_;
};

}  // namespace

absl::StatusOr<WorkDone> RunAttend(const RequestContext& context, AttendCall& call,
                                   AttendResult* result) {
  const AttentionConfig& config = call.model->layer->config();
  if (call.query.shape[2] != config.d_model) {
    return absl::InvalidArgumentError(absl::StrCat(call.query_field, ".shape[2]=",
                                                   call.query.shape[2], " must equal d_model=",
                                                   config.d_model));
  }
  ASSIGN_OR_RETURN(const std::optional<FloatTensor> kv_source, std::move(call.context));
  RETURN_IF_ERROR(CheckContext(call, kv_source, config.d_model));
  const int64_t batch = call.query.shape[0], q_len = call.query.shape[1];
  const int64_t kv_len = kv_source.has_value() ? kv_source->shape[1] : q_len;
  ASSIGN_OR_RETURN(const ComputeType compute, call.compute);
  const std::string q_len_field = absl::StrCat(call.query_field, ".shape[1]");
  RETURN_IF_ERROR(CheckLimits(
      context.limits, batch, config.num_heads, q_len, kv_len,
      /*scores_held=*/call.return_attention, q_len_field,
      kv_source.has_value() ? absl::StrCat(call.context_field, ".shape[1]") : q_len_field));
  const double flops = LayerFlops(config, batch, q_len, kv_len, call.causal);
  RETURN_IF_ERROR(CheckFlops(context.limits, flops,
                             CopeWorkFlops(config.encoding, batch, config.num_heads, q_len, kv_len)));
  result->attention.shape = {batch, config.num_heads, q_len, kv_len};
  if (call.return_attention) {
    RETURN_IF_ERROR(CheckResponseSize(context.limits, "return_attention", "attention",
                                      result->attention.shape, call.output_bytes));
  }
  // The output and its copy in the answer; q, k, v and the heads' context; the attention's
  // workspace (scores held, rotated or rounded copies), and a returned map's copy in the answer.
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  const SdpaShape heads_shape{batch, config.num_heads, config.num_kv_heads, q_len, kv_len,
                              config.head_dim};
  const int64_t floats =
      2 * batch * q_len * config.d_model + 2 * batch * q_len * q_width +
      2 * batch * kv_len * kv_width +
      SdpaWorkspaceElements(heads_shape, config.encoding, compute, call.return_attention) +
      (call.return_attention ? batch * config.num_heads * q_len * kv_len : 0);
  RETURN_IF_ERROR(ReserveMemory(context, floats * int64_t{sizeof(float)}));
  ASSIGN_OR_RETURN(const std::vector<int64_t> positions, std::move(call.positions));

  AttendInputs inputs;
  inputs.query = call.query.values.data();
  inputs.batch = batch;
  inputs.q_len = q_len;
  inputs.context = kv_source.has_value() ? kv_source->values.data() : nullptr;
  inputs.kv_len = kv_len;
  inputs.positions = positions.data();
  inputs.causal = call.causal;
  inputs.key_lengths = call.key_lengths;
  inputs.compute = compute;
  inputs.is_cancelled = context.is_cancelled;

  result->output.resize(batch * q_len * config.d_model);
  if (call.return_attention) {
    result->attention.values.resize(batch * config.num_heads * q_len * kv_len);
  }
  AttendMember member(*call.model, inputs, result->output.data(),
                      call.return_attention ? result->attention.values.data() : nullptr);
  RETURN_IF_ERROR(Compute(context, member));
  return WorkDone{batch * q_len, flops};
}

}  // namespace attnserve
