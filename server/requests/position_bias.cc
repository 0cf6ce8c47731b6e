#include "server/requests/position_bias.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/field_status.h"
#include "core/base/status_macros.h"
#include "core/encodings/positions.h"

namespace attnserve {
namespace {

// The most heads PositionBias computes a map for.
constexpr int64_t kMaxBiasHeads = 65536;

// PositionBias serves the kinds with a fixed score bias map: ALiBi and T5.
absl::Status RequireFixedBias(const PositionalEncoding& encoding) {
  if (HasFixedBiasMap(encoding)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("encoding.", EncodingName(encoding),
                   " has no fixed score bias; PositionBias serves alibi and t5"));
}

absl::Status UseModelEncoding(const LoadedModel& model, PositionBiasCall& call,
                              PositionalEncoding& encoding) {
  const int64_t model_heads = model.layer->config().num_heads;
  if (call.num_heads != 0 && call.num_heads != model_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_heads=", call.num_heads, " differs from num_heads=", model_heads, " of model=\"",
        model.config.name(), "\"; leave num_heads 0 with `model`"));
  }
  encoding = model.layer->config().encoding;
  call.num_heads = model_heads;
  return RequireFixedBias(encoding);
}

absl::Status UseInlineEncoding(PositionBiasCall& call, PositionalEncoding& encoding) {
  if (call.num_heads < 1 || call.num_heads > kMaxBiasHeads) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads=", call.num_heads, " must be in [1, ", kMaxBiasHeads, "]"));
  }
  ASSIGN_OR_RETURN(encoding, std::move(call.encoding));
  // The kind first: only T5's table comes with this request.
  RETURN_IF_ERROR(RequireFixedBias(encoding));
  const TableLayerShape layer{call.num_heads, call.num_heads, 1};
  return AttachRequestTable(std::move(call.table), layer, encoding);
}

}  // namespace

absl::StatusOr<WorkDone> RunPositionBias(const RequestContext& context, PositionBiasCall& call,
                                         PositionBiasResult* result) {
  PositionalEncoding encoding;
  RETURN_IF_ERROR(call.model != nullptr ? UseModelEncoding(*call.model, call, encoding)
                                        : UseInlineEncoding(call, encoding));
  const int64_t heads = call.num_heads;
  RETURN_IF_ERROR(WithFieldPrefix(ValidateEncoding(encoding, heads, heads, 1), "encoding"));
  const int64_t q_len = call.q_len;
  const int64_t kv_len = call.kv_len != 0 ? call.kv_len : q_len;
  if (q_len < 1 || kv_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("q_len=", q_len, " and kv_len=", kv_len, " must be >= 1"));
  }
  RETURN_IF_ERROR(CheckLimits(context.limits, 1, heads, q_len, kv_len, /*scores_held=*/true));
  result->shape = {heads, q_len, kv_len};
  RETURN_IF_ERROR(
      CheckResponseSize(context.limits, "num_heads·q_len·kv_len", "bias", result->shape, 0));

  // The bias and its copy in the answer.
  RETURN_IF_ERROR(ReserveMemory(context, 2 * heads * q_len * kv_len * int64_t{sizeof(float)}));
  // Bottom-right aligned from position 0: the last query and the last key share a position.
  std::vector<int64_t> q_positions, k_positions;
  BottomRightPositions(std::max<int64_t>(q_len - kv_len, 0), 1, q_len, kv_len, &q_positions,
                       &k_positions);
  result->bias.resize(heads * q_len * kv_len);
  RETURN_IF_ERROR(PositionBiasMap(encoding, heads, q_positions.data(), q_len,
                                  k_positions.data(), kv_len, call.causal, result->bias.data()));
  return WorkDone{};
}

}  // namespace attnserve
