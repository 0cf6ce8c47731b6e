// Fixed sinusoidal position tables (Vaswani et al., tensor2tensor, fairseq) and their addition
// to embeddings. Plain functions over row-major float buffers; no I/O.
#ifndef ATTNSERVE_CORE_ENCODINGS_SINUSOIDAL_ENCODING_H_
#define ATTNSERVE_CORE_ENCODINGS_SINUSOIDAL_ENCODING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "core/encodings/position_table_cache.h"

namespace attnserve {

enum class SinusoidalVariant {
  // P[p,2k] = sin(p·ω_k), P[p,2k+1] = cos(p·ω_k), ω_k = base^(−2k/d).
  kVaswani,
  // n = d/2, ω_k = min_ts·exp(−k·ln(max_ts/min_ts)/max(n−1,1)), [sin(pω) ‖ cos(pω)], odd d: one
  // zero channel last.
  kTensor2Tensor,
  // kTensor2Tensor numbers (min_ts 1, max_ts base) at table row padding_idx + 1 + p.
  kFairseq,
};

struct SinusoidalParams {
  SinusoidalVariant variant = SinusoidalVariant::kVaswani;
  double base = 10000.0;          // kVaswani and kFairseq; finite, > 1.
  double min_timescale = 1.0;     // kTensor2Tensor; finite, > 0.
  double max_timescale = 1.0e4;   // kTensor2Tensor; finite, >= min_timescale.
  int64_t padding_idx = 1;        // kFairseq; >= 0.
};

// Checks the parameters for an encoding of width `dim` (>= 1). Messages name the parameter as
// "sinusoidal.<name>=<value>".
absl::Status ValidateSinusoidal(const SinusoidalParams& params, int64_t dim);

// row: [dim] ← P[position], computed in double and rounded once. Parameters must be valid.
void SinusoidalRow(const SinusoidalParams& params, int64_t position, int64_t dim, float* row);

// out[t, :] = x[t, :]·input_scale + P[positions[t], :] for t in [0, tokens).
// x, out: [tokens, dim] row-major (may alias); positions: [tokens], each >= 0.
// With a cache, rows come from a table computed once per (params, dim); without one (or past
// the cache's limits) they are computed per token.
absl::Status AddSinusoidal(const SinusoidalParams& params, const float* x, const int64_t* positions,
                           int64_t tokens, int64_t dim, float input_scale, float* out,
                           PositionTableCache* cache = nullptr);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_SINUSOIDAL_ENCODING_H_
