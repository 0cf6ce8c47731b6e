// A batch of scaled dot-product attention calls computed together: the variable-length form of
// ScaledDotProductAttention (FlashAttention's "varlen" API). Each member keeps its own shape,
// causal alignment, key lengths, positions and encoding; the batch shares the threads.
#ifndef ATTNSERVE_CORE_ATTENTION_SDPA_BATCH_H_
#define ATTNSERVE_CORE_ATTENTION_SDPA_BATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/attention/sdpa_options.h"

namespace attnserve {

// One member: what ScaledDotProductAttention takes for one call. T is float, or uint16_t for
// bf16 bits (then probs must be null). Members usually point into packed buffers, one region per
// member (see MultiHeadAttention::ForwardBatch).
//   q, out: [B, H, Sq, hd]; k, v: [B, Hkv, Sk, hd]; probs: [B, H, Sq, Sk] or nullptr
template <typename T>
struct SdpaBatchMember {
  SdpaShape shape;
  const SdpaOptions* options = nullptr;  // must outlive the call
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* out = nullptr;
  float* probs = nullptr;
};

// Runs every member; statuses[i] is member i's, and its output equals ScaledDotProductAttention
// on it alone bit for bit (the same work items, computed in the same order; only which thread
// runs them changes). A member that fails (invalid, cancelled through its own is_cancelled, out of
// memory) fails alone. Members whose work exceeds an even share of the batch run one after
// another on all threads; the others run side by side, one member per thread, largest first.
std::vector<absl::Status> ScaledDotProductAttentionBatch(
    absl::Span<const SdpaBatchMember<float>> members);
std::vector<absl::Status> ScaledDotProductAttentionBatch(
    absl::Span<const SdpaBatchMember<uint16_t>> members);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_SDPA_BATCH_H_
