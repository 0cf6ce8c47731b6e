#include "core/kernels/alibi_term.h"

#include <cmath>

#include "core/kernels/target_clones.h"

namespace attnserve {

// Positions arrive relative to the batch element's first key, as floats: exact while they span
// < 2^24 positions, and the loop stays vectorisable.
ATTNSERVE_TARGET_CLONES void AddAlibiRow(float* row, int64_t n, float scale,
                                         const AlibiTerm& term) {
  const float slope = term.slope, q_position = term.q_position;
  const float* k_positions = term.k_positions;
  if (term.causal) {
    // The DESIGN's −m(i−j): visible keys usually have k <= q.
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      row[c] = row[c] * scale - slope * (q_position - k_positions[c]);
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      row[c] = row[c] * scale - slope * std::fabs(q_position - k_positions[c]);
    }
  }
}

}  // namespace attnserve
