// Rotary position embedding (RoPE; Su et al., RoFormer) with the Hugging Face rope_scaling
// variants. Plain parameter structs and functions over row-major float buffers.
#ifndef ATTNSERVE_CORE_ENCODINGS_ROPE_H_
#define ATTNSERVE_CORE_ENCODINGS_ROPE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "core/encodings/position_table_cache.h"

namespace attnserve {

enum class RopeLayout {
  kHalfSplit,    // NeoX / HF LLaMA rotate_half: dim k pairs with dim k + r/2.
  kInterleaved,  // GPT-J / Meta LLaMA: dims (2k, 2k+1) pair.
};

enum class RopeScalingType { kNone, kLinear, kDynamicNtk, kYarn, kLlama3, kLongRope };

// Fields used by each type (others ignored). Defaults follow Hugging Face modeling_rope_utils.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;                  // linear, dynamic NTK, YaRN, llama3; finite, > 0
  int64_t original_max_positions = 0;   // dynamic NTK, YaRN, llama3 (0 = 8192), longrope; >= 1
  double beta_fast = 32.0;              // YaRN
  double beta_slow = 1.0;               // YaRN
  double mscale = 0.0;                  // YaRN; 0 = unset (DeepSeek-style mscale)
  double mscale_all_dim = 0.0;          // YaRN; 0 = unset
  bool yarn_truncate = true;            // YaRN: floor/ceil the correction range (HF `truncate`)
  std::optional<double> attention_factor;  // YaRN, longrope: overrides the derived factor
  double low_freq_factor = 1.0;         // llama3
  double high_freq_factor = 4.0;        // llama3; > low_freq_factor
  std::vector<double> short_factor;     // longrope: r/2 values, each > 0
  std::vector<double> long_factor;      // longrope: r/2 values, each > 0
  int64_t max_positions = 0;            // longrope: extended context; >= original_max_positions
};

struct RopeParams {
  double theta = 10000.0;   // frequency base; finite, > 1
  int64_t rotary_dim = 0;   // r: rotated dims per head; 0 = head_dim; even, 2 <= r <= head_dim
  RopeLayout layout = RopeLayout::kHalfSplit;
  RopeScaling scaling;
};

// Checks the parameters for heads of width head_dim. Messages name the parameter as
// "rope.<name>=<value>" (scalings: "rope.yarn.factor=…").
absl::Status ValidateRope(const RopeParams& params, int64_t head_dim);

struct RopeFrequencies {
  std::vector<double> inv_freq;   // [r/2]: the rotation of pair k at position p is p·inv_freq[k]
  double attention_factor = 1.0;  // multiplies cos and sin (YaRN, longrope)
};

// The frequencies used for a sequence whose largest position is seq_len − 1 (dynamic NTK and
// longrope depend on it; others ignore it). Parameters must be valid.
RopeFrequencies ComputeRopeFrequencies(const RopeParams& params, int64_t head_dim, int64_t seq_len);

// Rotates x in place: x: [tokens, num_heads, head_dim] row-major; token t is at positions[t]
// (>= 0). Pair (a, b) of head dims becomes (a·c − b·s, b·c + a·s) with c = f·cos(p·inv_k),
// s = f·sin(p·inv_k), f = attention_factor; dims r..head_dim−1 pass through.
// seq_len as in ComputeRopeFrequencies; 0 = max(positions) + 1. With `tables`, the cos/sin rows
// come from a table cached per frequency set; without (or past the cache's limits) they are
// computed per token. Either way cos and sin are computed in double and rounded to float.
absl::Status ApplyRope(const RopeParams& params, float* x, const int64_t* positions,
                       int64_t tokens, int64_t num_heads, int64_t head_dim, int64_t seq_len,
                       PositionTableCache* tables = nullptr);

// The same rotation for head-major tensors, into out: out[b, h, s, :] ← x[b, h, s, :] rotated by
// positions[b·seq + s], for x and out [batch, heads, seq, head_dim]; x is f32 (out may be x: in
// place) or bf16 bits (widened exactly). One set of frequencies and one parallel loop for every
// head, reading x once. seq_len and tables as above.
absl::Status ApplyRopeHeadMajor(const RopeParams& params, const float* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, float* out);
absl::Status ApplyRopeHeadMajor(const RopeParams& params, const uint16_t* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, float* out);
// bf16 in and out: rotated in f32 and rounded to nearest even (as ScaleRowIntoBfloat16 rounds:
// subnormals flushed where it uses AVX512-BF16), so out equals the f32 result rounded, bit for bit.
// x and out must not overlap.
absl::Status ApplyRopeHeadMajor(const RopeParams& params, const uint16_t* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, uint16_t* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_ROPE_H_
