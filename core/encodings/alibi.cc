#include "core/encodings/alibi.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attnserve {
namespace {

// Largest power of two <= n, for n >= 1.
int64_t LargestPowerOfTwoAtMost(int64_t n) {
  int64_t c = 1;
  while (c <= n / 2) c *= 2;
  return c;
}

}  // namespace

absl::Status ValidateAlibi(const AlibiParams& params, int64_t num_heads) {
  if (!std::isfinite(params.max_bias) || params.max_bias <= 0.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("alibi.max_bias=", params.max_bias, " must be finite and > 0"));
  }
  if (num_heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_heads=", num_heads, " must be >= 1"));
  }
  return absl::OkStatus();
}

std::vector<double> AlibiSlopes(const AlibiParams& params, int64_t num_heads) {
  std::vector<double> slopes;
  if (num_heads < 1) return slopes;
  slopes.reserve(num_heads);
  // Press et al. / BLOOM build_alibi_tensor: the geometric sequence of the largest power of two
  // c <= n, m_h = 2^(−max_bias·(h+1)/c) ...
  const int64_t c = LargestPowerOfTwoAtMost(num_heads);
  for (int64_t h = 0; h < c; ++h) {
    slopes.push_back(
        std::exp2(-params.max_bias * static_cast<double>(h + 1) / static_cast<double>(c)));
  }
  // ... then, when n is not a power of two, the first n − c odd-indexed terms (1-based exponents
  // 1, 3, 5, …) of the sequence for 2c, which interleave between the slopes above. n − c < c, so
  // there are always enough of them.
  for (int64_t i = 0; i < num_heads - c; ++i) {
    slopes.push_back(
        std::exp2(-params.max_bias * static_cast<double>(2 * i + 1) / static_cast<double>(2 * c)));
  }
  return slopes;
}

void AlibiBias(const AlibiParams& params, int64_t num_heads, const int64_t* q_positions,
               int64_t q_len, const int64_t* k_positions, int64_t kv_len, bool causal,
               float* bias) {
  const std::vector<double> slopes = AlibiSlopes(params, num_heads);
  for (int64_t h = 0; h < num_heads; ++h) {
    const double m = slopes[h];
    float* head = bias + h * q_len * kv_len;  // [q_len, kv_len]
    for (int64_t i = 0; i < q_len; ++i) {
      float* row = head + i * kv_len;
      for (int64_t j = 0; j < kv_len; ++j) {
        const double distance = static_cast<double>(q_positions[i] - k_positions[j]);
        // Causal: −m·(p_i − k_j) for every entry. Where k_j > p_i this is positive; the attention
        // mask removes those entries, and the plain formula is written there anyway (rather than
        // 0 or −inf) so the map stays a pure function of p_i − k_j and masking stays the mask's
        // job.
        row[j] = static_cast<float>(-m * (causal ? distance : std::fabs(distance)));
      }
    }
  }
}

}  // namespace attnserve
