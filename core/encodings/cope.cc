#include "core/encodings/cope.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/base/field_status.h"
#include "core/encodings/learned_table.h"

namespace attnserve {
namespace {

// σ(x) in double without overflow; σ(−inf) = 0, σ(+inf) = 1.
double Sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

}  // namespace

absl::Status ValidateCopeParams(const CopeParams& params) {
  return CheckAtLeast("cope.npos_max", params.npos_max, 1);
}

absl::Status ValidateCope(const CopeParams& params, int64_t head_dim) {
  if (absl::Status s = CheckAtLeast("head_dim", head_dim, 1); !s.ok()) return s;
  if (absl::Status s = ValidateCopeParams(params); !s.ok()) return s;
  return CheckLearnedTable("cope", "pos_emb", params.pos_emb.get(), "npos_max", params.npos_max,
                           "head_dim", head_dim);
}

void AddCopeLogits(const CopeParams& params, const float* q, int64_t q_len, int64_t kv_len,
                   int64_t head_dim, float* scores) {
  const float* pos_emb = params.pos_emb->data();  // [npos_max, head_dim]
  const double max_position = static_cast<double>(params.npos_max - 1);
  std::vector<double> positions(kv_len);  // p_i·: [kv_len]
  std::vector<double> logits_int;         // q_i·e[k] for k in [0, needed): [<= npos_max]
  for (int64_t i = 0; i < q_len; ++i) {
    float* row = scores + i * kv_len;       // [kv_len]
    const float* q_row = q + i * head_dim;  // [head_dim]

    // Positions: the reverse cumulative sum of the gates, clamped to the last embedding
    // (the paper's gates.flip(-1).cumsum(-1).flip(-1).clamp(max=npos_max − 1)). Masked entries
    // (−inf) have gate 0. A NaN score makes its own and every earlier position NaN, as the
    // paper's cumsum does; those entries come out NaN.
    double sum = 0.0;
    double largest = 0.0;  // the largest non-NaN position of the row
    for (int64_t j = kv_len - 1; j >= 0; --j) {
      sum += Sigmoid(static_cast<double>(row[j]));
      positions[j] = sum > max_position ? max_position : sum;
      if (positions[j] > largest) largest = positions[j];
    }

    // Only q_i·e[k] for k <= ⌈largest position⌉ are read, so only those are computed (the
    // paper's query @ pos_emb, restricted to the columns this row gathers).
    const int64_t needed = static_cast<int64_t>(std::ceil(largest)) + 1;
    logits_int.assign(needed, 0.0);
    for (int64_t k = 0; k < needed; ++k) {
      const float* e = pos_emb + k * head_dim;
      double dot = 0.0;
      for (int64_t c = 0; c < head_dim; ++c) {
        dot += static_cast<double>(q_row[c]) * static_cast<double>(e[c]);
      }
      logits_int[k] = dot;
    }

    // Linear interpolation between the neighbouring integer positions.
    for (int64_t j = 0; j < kv_len; ++j) {
      if (std::isinf(row[j]) && row[j] < 0) continue;  // masked: stays −inf
      const double p = positions[j];
      if (std::isnan(p)) {
        row[j] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const double floor_p = std::floor(p);
      const double w = p - floor_p;
      const int64_t lo = static_cast<int64_t>(floor_p);
      const int64_t hi = static_cast<int64_t>(std::ceil(p));
      const double added = logits_int[hi] * w + logits_int[lo] * (1.0 - w);
      row[j] = static_cast<float>(static_cast<double>(row[j]) + added);
    }
  }
}

}  // namespace attnserve
