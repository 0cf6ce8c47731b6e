// ALiBi's bias of one score row, as the row kernels of the tiled attention take it.
#ifndef ATTNSERVE_CORE_KERNELS_ALIBI_TERM_H_
#define ATTNSERVE_CORE_KERNELS_ALIBI_TERM_H_

#include <cstdint>

namespace attnserve {

// ALiBi's bias of one score row, −slope·(q − k[c]) when causal, −slope·|q − k[c]| otherwise
// (positions as floats, relative to any common origin).
struct AlibiTerm {
  float slope = 0.0f;
  float q_position = 0.0f;
  const float* k_positions = nullptr;  // [n], the row's keys
  bool causal = false;
};

// row[c] ← scale·row[c] + the term's bias of key c, for c < n: the score's own scale (when the
// product left it out) and the bias in one pass.
void AddAlibiRow(float* row, int64_t n, float scale, const AlibiTerm& term);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_ALIBI_TERM_H_
