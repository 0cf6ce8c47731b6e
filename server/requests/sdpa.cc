#include "server/requests/sdpa.h"

#include <cfloat>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/attention/sdpa_options.h"
#include "core/base/field_status.h"
#include "core/attention/sdpa_batch.h"
#include "core/base/status_macros.h"
#include "core/encodings/positions.h"

namespace attnserve {
namespace {

// The kernel's shape from q, k and v, which must agree in B and hd, k and v alike, Hkv | H.
template <class T>
absl::StatusOr<SdpaShape> ShapeOf(const QkvTensors<T>& qkv) {
  const std::vector<int64_t>& q = qkv.q.shape;
  const std::vector<int64_t>& k = qkv.k.shape;
  if (k[0] != q[0] || k[3] != q[3]) {
    return absl::InvalidArgumentError(absl::StrCat("k.shape=", FormatShape(k),
                                                   " must match q.shape=", FormatShape(q),
                                                   " in B and hd"));
  }
  if (qkv.v.shape != k) {
    return absl::InvalidArgumentError(absl::StrCat("v.shape=", FormatShape(qkv.v.shape),
                                                   " must equal k.shape=", FormatShape(k)));
  }
  if (q[1] % k[1] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("k.shape[1]=", k[1], " must divide q.shape[1]=", q[1]));
  }
  return SdpaShape{q[0], q[1], k[1], q[2], k[2], q[3]};
}

// Checked as a double: converting one outside float's range is undefined.
absl::StatusOr<float> CheckedScale(double scale) {
  if (!std::isfinite(scale) || std::fabs(scale) > FLT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale=", scale, " must be finite and fit in float32"));
  }
  return static_cast<float>(scale);
}

// The encoding (with the request's table) and the tokens' positions: keys at position_offset + j,
// queries bottom-right aligned. The offset's range is checked before any position arithmetic
// (Sk and Sq are bounded by CheckLimits).
absl::Status PlaceEncoding(const SdpaShape& shape, SdpaCall& call, SdpaOptions& options) {
  const int64_t offset = call.position_offset;
  const int64_t max_offset = kMaxPosition - shape.kv_len + 1;
  if (offset < 0 || offset > max_offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        "position_offset=", offset, " must be in [0, ", max_offset,
        "]: the last key's position, position_offset + Sk − 1, must be <= ", kMaxPosition));
  }
  ASSIGN_OR_RETURN(options.encoding, std::move(call.encoding));
  if (std::holds_alternative<NoPositionalEncoding>(options.encoding)) return absl::OkStatus();
  if (IsAdditive(options.encoding)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoding.", EncodingName(options.encoding),
        " is added to embeddings, not applied inside attention; ScaledDotProductAttention "
        "takes none, rope, alibi, t5 or cope"));
  }
  const TableLayerShape layer{shape.num_heads * shape.head_dim, shape.num_heads, shape.head_dim};
  RETURN_IF_ERROR(AttachRequestTable(std::move(call.table), layer, options.encoding));
  RETURN_IF_ERROR(WithFieldPrefix(
      ValidateEncoding(options.encoding, layer.d_model, shape.num_heads, shape.head_dim),
      "encoding"));
  if (offset + shape.kv_len - shape.q_len < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "position_offset=", offset, " must be >= Sq − Sk=", shape.q_len - shape.kv_len,
        " with an encoding (query i is at position_offset + Sk − Sq + i, which must be >= 0)"));
  }
  BottomRightPositions(offset, shape.batch, shape.q_len, shape.kv_len, &options.q_positions,
                       &options.k_positions);
  return absl::OkStatus();
}

absl::StatusOr<SdpaOptions> OptionsFor(const RequestContext& context, const SdpaShape& shape,
                                       SdpaCall& call) {
  SdpaOptions options;
  ASSIGN_OR_RETURN(options.compute, call.compute);
  options.is_cancelled = context.is_cancelled;
  options.tables = &context.tables;
  options.causal = call.causal;
  options.key_lengths = call.key_lengths;
  if (call.scale.has_value()) {
    ASSIGN_OR_RETURN(options.scale, CheckedScale(*call.scale));
  }
  RETURN_IF_ERROR(PlaceEncoding(shape, call, options));
  RETURN_IF_ERROR(ValidateSdpa(shape, options));
  return options;
}

// One checked call. Calls on tensors of the same type with the same compute type run as one
// ScaledDotProductAttentionBatch; everything else (shape, mask, encoding, tables) is their own.
template <typename T>
class SdpaMember final : public BatchMember {
 public:
  SdpaMember(const SdpaBatchMember<T>& call, int64_t tokens)
      : BatchMember("ScaledDotProductAttention", "inline",
                    absl::StrCat("ScaledDotProductAttention/", sizeof(T) == 2 ? "bf16" : "f32",
                                 "/", static_cast<int>(call.options->compute)),
                    tokens),
        call_(call) {}

  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) override {
    std::vector<SdpaBatchMember<T>> calls;
    for (BatchMember* member : batch) calls.push_back(static_cast<SdpaMember*>(member)->call_);
    return ScaledDotProductAttentionBatch(calls);
  }

 private:
  const SdpaBatchMember<T> call_;
};

// The output (and probabilities) of the call allocated in `result`, then computed through
// context.compute.
template <typename T>
absl::Status Compute(const RequestContext& context, const SdpaShape& shape,
                     const SdpaOptions& options, const QkvTensors<T>& qkv, bool return_attention,
                     SdpaResult* result) {
  std::vector<T>& out = result->output.template emplace<std::vector<T>>(qkv.q.values.size());
  if (return_attention) {
    result->attention.values.resize(shape.batch * shape.num_heads * shape.q_len * shape.kv_len);
  }
  SdpaMember<T> member(
      SdpaBatchMember<T>{shape, &options, qkv.q.values.data(), qkv.k.values.data(),
                         qkv.v.values.data(), out.data(),
                         return_attention ? result->attention.values.data() : nullptr},
      shape.batch * shape.q_len);
  return attnserve::Compute(context, member);
}

}  // namespace

absl::StatusOr<WorkDone> RunSdpa(const RequestContext& context, SdpaCall& call,
                                 SdpaResult* result) {
  ASSIGN_OR_RETURN(const SdpaShape shape,
                   std::visit([](const auto& qkv) { return ShapeOf(qkv); }, call.qkv));
  RETURN_IF_ERROR(CheckLimits(context.limits, shape.batch, shape.num_heads, shape.q_len,
                              shape.kv_len, /*scores_held=*/call.return_attention, "q.shape[2]",
                              "k.shape[2]"));
  // An encoding or compute type that failed to convert is reported by OptionsFor, below.
  const PositionalEncoding& encoding = call.encoding.ok() ? *call.encoding : PositionalEncoding();
  const double flops = AttentionFlops(shape.batch, shape.num_heads, shape.q_len, shape.kv_len,
                                      shape.head_dim, call.causal);
  RETURN_IF_ERROR(CheckFlops(
      context.limits, flops,
      CopeWorkFlops(encoding, shape.batch, shape.num_heads, shape.q_len, shape.kv_len)));
  result->attention.shape = {shape.batch, shape.num_heads, shape.q_len, shape.kv_len};
  if (call.return_attention) {
    RETURN_IF_ERROR(CheckResponseSize(context.limits, "return_attention", "attention",
                                      result->attention.shape, call.output_bytes));
  }
  // The output and its copy in the answer; the workspace (scores held, rotated or rounded
  // copies), and a returned map's copy in the answer. Counted as f32 whatever the dtype: an
  // estimate from above.
  const int64_t floats =
      2 * shape.batch * shape.num_heads * shape.q_len * shape.head_dim +
      SdpaWorkspaceElements(shape, encoding,
                            call.compute.ok() ? *call.compute : ComputeType::kFloat32,
                            call.return_attention) +
      (call.return_attention ? shape.batch * shape.num_heads * shape.q_len * shape.kv_len : 0);
  RETURN_IF_ERROR(ReserveMemory(context, floats * int64_t{sizeof(float)}));
  ASSIGN_OR_RETURN(const SdpaOptions options, OptionsFor(context, shape, call));
  result->output_shape = {shape.batch, shape.num_heads, shape.q_len, shape.head_dim};
  RETURN_IF_ERROR(std::visit(
      [&](const auto& qkv) {
        return Compute(context, shape, options, qkv, call.return_attention, result);
      },
      call.qkv));
  return WorkDone{shape.batch * shape.q_len, flops};
}

}  // namespace attnserve
