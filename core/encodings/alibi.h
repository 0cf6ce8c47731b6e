// ALiBi (Press et al., "Train Short, Test Long"): a per-head linear penalty on query–key distance.
#ifndef ATTNSERVE_CORE_ENCODINGS_ALIBI_H_
#define ATTNSERVE_CORE_ENCODINGS_ALIBI_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace attnserve {

struct AlibiParams {
  double max_bias = 8.0;  // finite, > 0
};

// "alibi.max_bias=…" when invalid.
absl::Status ValidateAlibi(const AlibiParams& params, int64_t num_heads);

// Slopes m_h for h in [0, num_heads): 2^(−max_bias·(h+1)/n) when n is a power of two; otherwise
// the slopes of the largest power of two c < n, followed by every other slope of 2c
// (n=12 → .5 .25 … .00390625 .70711 .35355 .17678 .08839).
std::vector<double> AlibiSlopes(const AlibiParams& params, int64_t num_heads);

// bias: [num_heads, q_len, kv_len] ← −m_h·(p_i − k_j) when causal (the mask removes k_j > p_i),
// −m_h·|p_i − k_j| when bidirectional. q_positions: [q_len]; k_positions: [kv_len].
void AlibiBias(const AlibiParams& params, int64_t num_heads, const int64_t* q_positions,
               int64_t q_len, const int64_t* k_positions, int64_t kv_len, bool causal,
               float* bias);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_ALIBI_H_
