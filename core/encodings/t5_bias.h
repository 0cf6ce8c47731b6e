// T5 relative position bias (Raffel et al.): bucketed j − i indexes a learned per-head table.
#ifndef ATTNSERVE_CORE_ENCODINGS_T5_BIAS_H_
#define ATTNSERVE_CORE_ENCODINGS_T5_BIAS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace attnserve {

struct T5BiasParams {
  int64_t num_buckets = 32;    // >= 2; even and >= 4 when bidirectional
  int64_t max_distance = 128;  // > max_exact = num_buckets/2 (/4 when bidirectional)
  bool bidirectional = true;   // encoder (true) or decoder/causal (false) buckets
  // Learned table [num_buckets, num_heads] row-major (HF relative_attention_bias.weight).
  std::shared_ptr<const std::vector<float>> table;
};

// Checks num_buckets and max_distance (not the table). "t5.<name>=…" messages.
absl::Status ValidateT5BiasParams(const T5BiasParams& params);

// ValidateT5BiasParams, then that the table has num_buckets·num_heads values.
absl::Status ValidateT5Bias(const T5BiasParams& params, int64_t num_heads);

// Hugging Face T5Attention._relative_position_bucket for relative_position = j − i, including its
// float32 arithmetic for the logarithmic buckets so bucket boundaries match exactly.
int64_t T5RelativeBucket(int64_t relative_position, bool bidirectional, int64_t num_buckets,
                         int64_t max_distance);

// bias: [num_heads, q_len, kv_len] ← table[bucket(k_j − p_i), h].
// q_positions: [q_len]; k_positions: [kv_len].
void T5Bias(const T5BiasParams& params, int64_t num_heads, const int64_t* q_positions,
            int64_t q_len, const int64_t* k_positions, int64_t kv_len, float* bias);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_T5_BIAS_H_
