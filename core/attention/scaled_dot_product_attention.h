// Scaled dot-product attention over head-major tensors, with causal and padding masks, grouped
// K/V heads (GQA/MQA) and position-dependent attention (RoPE, ALiBi, T5 bias, CoPE).
#ifndef ATTNSERVE_CORE_ATTENTION_SCALED_DOT_PRODUCT_ATTENTION_H_
#define ATTNSERVE_CORE_ATTENTION_SCALED_DOT_PRODUCT_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "core/attention/sdpa_options.h"

namespace attnserve {

// out = softmax(q'·k'ᵀ·scale + bias + mask [+ CoPE])·v per head (q', k' rotated for RoPE).
//   q: [B, H, Sq, hd]; k, v: [B, Hkv, Sk, hd]; out: [B, H, Sq, hd]
//   probs: [B, H, Sq, Sk] ← the softmax, or nullptr if not wanted.
// A query row whose keys are all masked gets zero probabilities and a zero output row.
absl::Status ScaledDotProductAttention(const SdpaShape& shape, const SdpaOptions& options,
                                       const float* q, const float* k, const float* v, float* out,
                                       float* probs);

// The same on bf16 tensors (uint16_t bits, same layouts), out rounded to nearest even, without
// probabilities. With bf16 compute the tensors go to the tiled kernel as they are (half the
// bytes of f32, no conversions; RoPE rotates q and k in f32 and rounds them back); CoPE and f32
// compute widen them to f32 (exactly) for the version above. Either way the result equals the
// f32 version's on the widened values, rounded to bf16.
absl::Status ScaledDotProductAttention(const SdpaShape& shape, const SdpaOptions& options,
                                       const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                       uint16_t* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_SCALED_DOT_PRODUCT_ATTENTION_H_
