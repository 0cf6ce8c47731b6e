#include "core/attention/sdpa_options.h"

#include <algorithm>
#include <cmath>
#include <variant>

#include "absl/strings/str_cat.h"
#include "core/encodings/positions.h"

namespace attnserve {

int64_t VisibleKeyCount(const SdpaShape& shape, const SdpaOptions& options, int64_t b, int64_t i) {
  int64_t visible = options.key_lengths.empty() ? shape.kv_len : options.key_lengths[b];
  if (options.causal) visible = std::min(visible, i + shape.kv_len - shape.q_len + 1);
  return std::max<int64_t>(visible, 0);
}

float EffectiveScale(const SdpaShape& shape, const SdpaOptions& options) {
  if (options.scale.has_value()) return *options.scale;
  if (std::holds_alternative<T5BiasParams>(options.encoding)) return 1.0f;
  return 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
}

int64_t CopeBlockRows(const SdpaShape& shape, int64_t cope_block_elements) {
  const int64_t rows = shape.num_heads / shape.num_kv_heads * shape.q_len;
  return std::clamp<int64_t>(cope_block_elements / shape.kv_len, 1, rows);
}

int64_t ScoreElementsHeld(const SdpaShape& shape, const PositionalEncoding& encoding,
                          bool returns_probabilities) {
  if (returns_probabilities) {
    return shape.batch * shape.num_heads * shape.q_len * shape.kv_len;
  }
  if (std::holds_alternative<CopeParams>(encoding)) {
    return CopeBlockRows(shape, kCopeBlockElements) * shape.kv_len;
  }
  return 0;
}

int64_t SdpaWorkspaceElements(const SdpaShape& shape, const PositionalEncoding& encoding,
                              ComputeType compute, bool returns_probabilities) {
  const int64_t q = shape.batch * shape.num_heads * shape.q_len * shape.head_dim;
  const int64_t kv = shape.batch * shape.num_kv_heads * shape.kv_len * shape.head_dim;
  const bool tiled = !returns_probabilities && !std::holds_alternative<CopeParams>(encoding);
  int64_t elements = ScoreElementsHeld(shape, encoding, returns_probabilities);
  if (std::holds_alternative<RopeParams>(encoding)) elements += q + kv;
  if (!tiled && compute == ComputeType::kBfloat16) elements += q + 2 * kv;
  return elements;
}

absl::Status ValidateSdpa(const SdpaShape& shape, const SdpaOptions& options) {
  const struct {
    const char* name;
    int64_t value;
  } dims[] = {{"batch", shape.batch},   {"num_heads", shape.num_heads},
              {"num_kv_heads", shape.num_kv_heads}, {"q_len", shape.q_len},
              {"kv_len", shape.kv_len}, {"head_dim", shape.head_dim}};
  for (const auto& dim : dims) {
    if (dim.value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(dim.name, "=", dim.value, " must be >= 1"));
    }
  }
  if (shape.kv_stride != 0 && shape.kv_stride < shape.kv_len) {
    return absl::InvalidArgumentError(absl::StrCat("kv_stride=", shape.kv_stride,
                                                   " must be 0 or >= kv_len=", shape.kv_len));
  }
  if (shape.num_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_heads=", shape.num_kv_heads,
                                                   " must divide num_heads=", shape.num_heads));
  }
  if (!options.key_lengths.empty()) {
    if (static_cast<int64_t>(options.key_lengths.size()) != shape.batch) {
      return absl::InvalidArgumentError(absl::StrCat("key_lengths has ", options.key_lengths.size(),
                                                     " entries; must equal batch=", shape.batch));
    }
    for (size_t b = 0; b < options.key_lengths.size(); ++b) {
      const int64_t length = options.key_lengths[b];
      if (length < 0 || length > shape.kv_len) {
        return absl::InvalidArgumentError(absl::StrCat("key_lengths[", b, "]=", length,
                                                       " must be in [0, kv_len=", shape.kv_len,
                                                       "]"));
      }
    }
  }
  if (options.scale.has_value() && !std::isfinite(*options.scale)) {
    return absl::InvalidArgumentError(absl::StrCat("scale=", *options.scale, " must be finite"));
  }
  if (std::holds_alternative<NoPositionalEncoding>(options.encoding)) return absl::OkStatus();
  if (IsAdditive(options.encoding)) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoding.", EncodingName(options.encoding),
                     " is added to embeddings; it cannot be applied inside attention"));
  }
  if (absl::Status status = ValidateEncoding(options.encoding, shape.num_heads * shape.head_dim,
                                             shape.num_heads, shape.head_dim);
      !status.ok()) {
    return status;
  }
  const struct {
    const char* name;
    const std::vector<int64_t>& positions;
    int64_t expected;
  } position_sets[] = {{"q_positions", options.q_positions, shape.batch * shape.q_len},
                       {"k_positions", options.k_positions, shape.batch * shape.kv_len}};
  for (const auto& set : position_sets) {
    if (static_cast<int64_t>(set.positions.size()) != set.expected) {
      return absl::InvalidArgumentError(absl::StrCat(set.name, " has ", set.positions.size(),
                                                     " entries; must be ", set.expected));
    }
    if (absl::Status status = CheckPositions(set.positions.data(),
                                             static_cast<int64_t>(set.positions.size()), set.name);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace attnserve
