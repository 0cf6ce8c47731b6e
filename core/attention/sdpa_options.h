// The shape and options of one scaled dot-product attention call, shared by the public entry
// point (scaled_dot_product_attention.h) and the tiled kernel below it (flash_attention.h).
#ifndef ATTNSERVE_CORE_ATTENTION_SDPA_OPTIONS_H_
#define ATTNSERVE_CORE_ATTENTION_SDPA_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "core/encodings/position_table_cache.h"
#include "core/encodings/positional_encoding.h"
#include "core/kernels/compute_type.h"

namespace attnserve {

struct SdpaShape {
  int64_t batch = 1;         // B
  int64_t num_heads = 1;     // H, query heads
  int64_t num_kv_heads = 1;  // Hkv; divides H. Query head h uses kv head h / (H / Hkv).
  int64_t q_len = 1;         // Sq
  int64_t kv_len = 1;        // Sk
  int64_t head_dim = 1;      // hd
  // Rows from one K/V head to the next in k and v, >= Sk (a K/V cache with room to grow keeps
  // its capacity here); 0 = Sk (k, v are [B, Hkv, Sk, hd]).
  int64_t kv_stride = 0;
};

// The rows from one K/V head to the next in k and v.
inline int64_t KvHeadRows(const SdpaShape& shape) {
  return shape.kv_stride > 0 ? shape.kv_stride : shape.kv_len;
}

// CoPE's default block of scores: 2^22 f32 = 16 MiB, 512 rows of 8192 keys.
inline constexpr int64_t kCopeBlockElements = int64_t{1} << 22;

struct SdpaOptions {
  // Bottom-right aligned causal mask: query i sees keys j <= i + Sk − Sq.
  bool causal = false;
  // Valid keys per batch element (keys j >= key_lengths[b] are masked); empty = all Sk keys.
  std::vector<int64_t> key_lengths;
  // Score multiplier; unset = 1/sqrt(head_dim), or 1 with a T5 bias (T5 folds the scale into
  // its weights).
  std::optional<float> scale;
  // Position-dependent attention: RoPE rotates q and k; ALiBi and T5 add a score bias; CoPE adds
  // contextual position logits. Additive kinds (sinusoidal, learned) belong to embeddings and are
  // rejected here; none = plain attention.
  PositionalEncoding encoding;
  // Positions of the tokens, required unless encoding is none: q_positions [B·Sq],
  // k_positions [B·Sk], each >= 0.
  std::vector<int64_t> q_positions;
  std::vector<int64_t> k_positions;
  // Matrix products in f32, or with bf16 operands and f32 accumulation.
  ComputeType compute = ComputeType::kFloat32;
  // Caches RoPE's cos/sin tables across calls (thread-safe); unset = a table per call.
  PositionTableCache* tables = nullptr;
  // Polled between tiles, from any compute thread but never by two at once; when it returns
  // true the computation stops with CANCELLED. Unset = never cancelled.
  std::function<bool()> is_cancelled;
  // Scores CoPE holds at once when no probabilities are returned: it computes a block of query
  // rows at a time, max(1, this / Sk) rows (tests make it small to cross heads and tails).
  int64_t cope_block_elements = kCopeBlockElements;
};

// Keys [0, VisibleKeyCount) are visible to query row i of batch element b (causal bottom-right
// alignment and key_lengths applied); 0 means the row attends to nothing.
int64_t VisibleKeyCount(const SdpaShape& shape, const SdpaOptions& options, int64_t b, int64_t i);

// Query rows of one K/V head (group·Sq rows) that CoPE scores at once: max(1, block / Sk), at
// most all of them.
int64_t CopeBlockRows(const SdpaShape& shape, int64_t cope_block_elements);

// Score elements a call holds at once, besides the tiled kernel's tile per thread: the whole
// matrix B·H·Sq·Sk when it returns the probabilities, CoPE's block of rows otherwise (its gates
// need whole rows, not whole matrices), none for the tiled kernel. Memory grows with the
// sequence, not its square, unless the probabilities are returned.
int64_t ScoreElementsHeld(const SdpaShape& shape, const PositionalEncoding& encoding,
                          bool returns_probabilities);

// f32 elements a call allocates besides its tensors and output, for callers that budget memory
// before calling: the scores it holds (ScoreElementsHeld), RoPE's rotated q and k, and bf16
// compute's rounded copies of q, k and v where the tiled kernel does not run (probabilities
// returned, CoPE). Copies made to close gaps between K/V heads (kv_stride) are not counted.
int64_t SdpaWorkspaceElements(const SdpaShape& shape, const PositionalEncoding& encoding,
                              ComputeType compute, bool returns_probabilities);

// options.scale, else 1 for a T5 bias, else 1/sqrt(head_dim).
float EffectiveScale(const SdpaShape& shape, const SdpaOptions& options);

// Checks shape (every dim >= 1, H % Hkv == 0, kv_stride 0 or >= Sk) and options (key_lengths size B, values in [0, Sk],
// scale finite, encoding valid for the head shape, positions present). Messages name the field.
absl::Status ValidateSdpa(const SdpaShape& shape, const SdpaOptions& options);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_SDPA_OPTIONS_H_
