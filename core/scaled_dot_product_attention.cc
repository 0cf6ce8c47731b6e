#include "core/scaled_dot_product_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/onednn_ops.h"

namespace attnserve {
namespace {

// Number of visible keys for query row i of batch element b: keys [0, VisibleKeys) are seen.
int64_t VisibleKeys(const SdpaShape& shape, const SdpaOptions& options, int64_t b, int64_t i) {
  int64_t visible = options.key_lengths.empty() ? shape.kv_len : options.key_lengths[b];
  if (options.causal) visible = std::min(visible, i + shape.kv_len - shape.q_len + 1);
  return std::max<int64_t>(visible, 0);
}

bool NeedsMask(const SdpaShape& shape, const SdpaOptions& options) {
  if (options.causal) return true;
  for (int64_t length : options.key_lengths) {
    if (length < shape.kv_len) return true;
  }
  return false;
}

}  // namespace

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
  return absl::OkStatus();
}

absl::Status ScaledDotProductAttention(const SdpaShape& shape, const SdpaOptions& options,
                                       const float* q, const float* k, const float* v, float* out,
                                       float* probs) {
  if (absl::Status status = ValidateSdpa(shape, options); !status.ok()) return status;
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  // The `group` query heads of one kv head are contiguous in q: [B, Hkv, group·Sq, hd].
  const int64_t rows = group * shape.q_len;
  const int64_t sk = shape.kv_len;
  const float scale = options.scale.value_or(1.0f / std::sqrt(static_cast<float>(shape.head_dim)));

  std::vector<float> own_probs;
  if (probs == nullptr) {
    own_probs.resize(shape.batch * shape.num_heads * shape.q_len * sk);
    probs = own_probs.data();
  }

  // mask: [B, 1, group·Sq, Sk], 0 where visible and −inf where masked.
  std::vector<float> mask;
  if (NeedsMask(shape, options)) {
    mask.assign(shape.batch * rows * sk, 0.0f);
    for (int64_t b = 0; b < shape.batch; ++b) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t visible = VisibleKeys(shape, options, b, r % shape.q_len);
        float* mask_row = mask.data() + (b * rows + r) * sk;
        std::fill(mask_row + visible, mask_row + sk, -std::numeric_limits<float>::infinity());
      }
    }
  }

  if (absl::Status status = AttentionScoresSoftmax(q, k, mask.empty() ? nullptr : mask.data(),
                                                   shape.batch, shape.num_kv_heads, rows, sk,
                                                   shape.head_dim, scale, probs);
      !status.ok()) {
    return status;
  }
  // oneDNN's softmax of an all −inf row is NaN; such rows attend to nothing.
  if (!mask.empty()) {
    for (int64_t b = 0; b < shape.batch; ++b) {
      for (int64_t i = 0; i < shape.q_len; ++i) {
        if (VisibleKeys(shape, options, b, i) > 0) continue;
        for (int64_t h = 0; h < shape.num_heads; ++h) {
          float* row = probs + ((b * shape.num_heads + h) * shape.q_len + i) * sk;
          std::fill(row, row + sk, 0.0f);
        }
      }
    }
  }
  return ProbsTimesValues(probs, v, shape.batch, shape.num_kv_heads, rows, sk, shape.head_dim, out);
}

}  // namespace attnserve
