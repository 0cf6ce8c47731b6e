#include "core/encodings/t5_bias.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/base/field_status.h"
#include "core/encodings/learned_table.h"

namespace attnserve {
namespace {

// HF's max_exact: half of the buckets of one direction (num_buckets // 2, halved once more when
// bidirectional).
int64_t MaxExact(int64_t num_buckets, bool bidirectional) {
  return (bidirectional ? num_buckets / 2 : num_buckets) / 2;
}

}  // namespace

absl::Status ValidateT5BiasParams(const T5BiasParams& params) {
  if (absl::Status s = CheckAtLeast("t5.num_buckets", params.num_buckets, 2); !s.ok()) return s;
  if (params.bidirectional && (params.num_buckets % 2 != 0 || params.num_buckets < 4)) {
    // Each direction gets num_buckets / 2 buckets, of which num_buckets / 4 are exact; with fewer
    // than 4 there is no exact bucket and HF's formula divides 0 by 0.
    return absl::InvalidArgumentError(absl::StrCat("t5.num_buckets=", params.num_buckets,
                                                   " must be even and >= 4 when bidirectional"));
  }
  const int64_t max_exact = MaxExact(params.num_buckets, params.bidirectional);
  if (params.max_distance <= max_exact) {
    // HF divides by log(max_distance / max_exact), which must be > 0.
    return absl::InvalidArgumentError(
        absl::StrCat("t5.max_distance=", params.max_distance, " must be > max_exact=", max_exact,
                     " (num_buckets", params.bidirectional ? "/4" : "/2", ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateT5Bias(const T5BiasParams& params, int64_t num_heads) {
  if (absl::Status s = CheckAtLeast("num_heads", num_heads, 1); !s.ok()) return s;
  if (absl::Status s = ValidateT5BiasParams(params); !s.ok()) return s;
  return CheckLearnedTable("t5", "table", params.table.get(), "num_buckets", params.num_buckets,
                           "num_heads", num_heads);
}

int64_t T5RelativeBucket(int64_t relative_position, bool bidirectional, int64_t num_buckets,
                         int64_t max_distance) {
  // Mirrors transformers' T5Attention._relative_position_bucket line by line.
  int64_t relative_buckets = 0;
  int64_t n = relative_position;
  if (bidirectional) {
    num_buckets /= 2;
    if (n > 0) relative_buckets += num_buckets;
    n = n < 0 ? -n : n;
  } else {
    n = n < 0 ? -n : 0;  // -min(n, 0)
  }
  // n is now in [0, inf).
  const int64_t max_exact = num_buckets / 2;
  if (n < max_exact) return relative_buckets + n;
  if (n == 0) return relative_buckets;  // max_exact == 0 (rejected by ValidateT5Bias); no log(0)

  // The large branch in torch float32 tensor arithmetic:
  //   log(n.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  // The Python scalars (an int, a double, an int) enter each op as float32 values, every op
  // rounds to float32, and .to(torch.long) truncates toward zero. Reproducing the roundings puts
  // the boundaries where the exact product is (nearly) an integer on PyTorch's side: e.g. 36
  // causal buckets, max_distance 50, rel = −30 is bucket 26 in torch, 27 in double arithmetic.
  const float quotient = static_cast<float>(n) / static_cast<float>(max_exact);
  const float log_ratio = static_cast<float>(
      std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
  const float scaled = std::log(quotient) / log_ratio * static_cast<float>(num_buckets - max_exact);
  const int64_t last = num_buckets - 1;
  // Saturate before converting: huge products (tiny log_ratio) must not overflow int64.
  int64_t if_large = last;
  if (scaled < static_cast<float>(last - max_exact)) {
    if_large = max_exact + static_cast<int64_t>(scaled);  // truncation toward zero
  }
  return relative_buckets + std::min(if_large, last);
}

void T5Bias(const T5BiasParams& params, int64_t num_heads, const int64_t* q_positions,
            int64_t q_len, const int64_t* k_positions, int64_t kv_len, float* bias) {
  const float* table = params.table->data();  // [num_buckets, num_heads]
  const int64_t plane = q_len * kv_len;
  for (int64_t i = 0; i < q_len; ++i) {
    for (int64_t j = 0; j < kv_len; ++j) {
      const int64_t bucket = T5RelativeBucket(k_positions[j] - q_positions[i], params.bidirectional,
                                              params.num_buckets, params.max_distance);
      const float* bucket_row = table + bucket * num_heads;
      // bias: [num_heads, q_len, kv_len]
      for (int64_t h = 0; h < num_heads; ++h) bias[h * plane + i * kv_len + j] = bucket_row[h];
    }
  }
}

}  // namespace attnserve
