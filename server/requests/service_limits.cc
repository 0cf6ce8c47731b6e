#include "server/requests/service_limits.h"

#include <string>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "server/requests/tensors.h"

namespace attnserve {

absl::Status CheckLimits(const ServiceLimits& limits, int64_t batch, int64_t heads, int64_t q_len,
                         int64_t kv_len, bool scores_held, absl::string_view q_field,
                         absl::string_view kv_field) {
  if (batch > limits.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch=", batch, " exceeds --max_batch=", limits.max_batch));
  }
  for (const auto& [field, len] : {std::pair<absl::string_view, int64_t>{q_field, q_len},
                                    std::pair<absl::string_view, int64_t>{kv_field, kv_len}}) {
    if (len > limits.max_sequence_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "=", len, " exceeds --max_sequence_length=", limits.max_sequence_length));
    }
  }
  // Each factor is bounded above, so the product cannot overflow int64.
  const int64_t scores = batch * heads * q_len * kv_len;
  if (scores_held && scores > limits.max_attention_elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch·heads·q_len·kv_len=", batch, "·", heads, "·", q_len, "·", kv_len, "=", scores,
        " exceeds --max_attention_elements=", limits.max_attention_elements,
        " (the scores are held whole: probabilities returned or a position bias)"));
  }
  return absl::OkStatus();
}

double CopeWorkFlops(const PositionalEncoding& encoding, int64_t batch, int64_t heads,
                     int64_t q_len, int64_t kv_len) {
  if (!std::holds_alternative<CopeParams>(encoding)) return 0;
  return kCopeFlopsPerScore * static_cast<double>(batch) * heads * q_len * kv_len;
}

absl::Status CheckFlops(const ServiceLimits& limits, double flops, double cope_flops) {
  const double work = flops + cope_flops;
  if (work <= limits.max_request_flops) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the request needs ", work, " FLOPs",
      cope_flops > 0 ? absl::StrCat(" (", cope_flops, " of them CoPE's, ", kCopeFlopsPerScore,
                                    " a score)")
                     : "",
      "; exceeds --max_request_flops=", limits.max_request_flops));
}

absl::Status CheckResponseSize(const ServiceLimits& limits, absl::string_view field,
                               absl::string_view tensor, const std::vector<int64_t>& shape,
                               int64_t other_bytes) {
  // Room for the protobuf framing around the tensors (tags, lengths, dtype, shape).
  constexpr int64_t kFramingBytes = 1024;
  int64_t bytes = sizeof(float);
  for (int64_t dim : shape) bytes *= dim;  // bounded by CheckLimits
  if (bytes + other_bytes + kFramingBytes <= limits.max_response_bytes) return absl::OkStatus();
  std::string message = absl::StrCat(field, ": ", tensor, " ", FormatShape(shape),
                                     " FLOAT32 is ", bytes, " bytes");
  if (other_bytes > 0) absl::StrAppend(&message, ", ", bytes + other_bytes, " with the output");
  absl::StrAppend(&message, "; exceeds --max_message_bytes=", limits.max_response_bytes);
  return absl::InvalidArgumentError(message);
}

}  // namespace attnserve
