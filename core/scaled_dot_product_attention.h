// Scaled dot-product attention over head-major tensors, with causal and padding masks and
// grouped K/V heads (GQA/MQA).
#ifndef ATTNSERVE_CORE_SCALED_DOT_PRODUCT_ATTENTION_H_
#define ATTNSERVE_CORE_SCALED_DOT_PRODUCT_ATTENTION_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"

namespace attnserve {

struct SdpaShape {
  int64_t batch = 1;         // B
  int64_t num_heads = 1;     // H, query heads
  int64_t num_kv_heads = 1;  // Hkv; divides H. Query head h uses kv head h / (H / Hkv).
  int64_t q_len = 1;         // Sq
  int64_t kv_len = 1;        // Sk
  int64_t head_dim = 1;      // hd
};

struct SdpaOptions {
  // Bottom-right aligned causal mask: query i sees keys j <= i + Sk − Sq.
  bool causal = false;
  // Valid keys per batch element (keys j >= key_lengths[b] are masked); empty = all Sk keys.
  std::vector<int64_t> key_lengths;
  // Score multiplier; unset = 1/sqrt(head_dim).
  std::optional<float> scale;
};

// Checks shape (every dim >= 1, H % Hkv == 0) and options (key_lengths size B, values in [0, Sk],
// scale finite). Messages name the offending field.
absl::Status ValidateSdpa(const SdpaShape& shape, const SdpaOptions& options);

// out = softmax(q·kᵀ·scale + mask)·v per head.
//   q: [B, H, Sq, hd]; k, v: [B, Hkv, Sk, hd]; out: [B, H, Sq, hd]
//   probs: [B, H, Sq, Sk] ← the softmax, or nullptr if not wanted.
// A query row whose keys are all masked gets zero probabilities and a zero output row.
absl::Status ScaledDotProductAttention(const SdpaShape& shape, const SdpaOptions& options,
                                       const float* q, const float* k, const float* v, float* out,
                                       float* probs);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_SCALED_DOT_PRODUCT_ATTENTION_H_
