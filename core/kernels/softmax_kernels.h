// Row kernels of the online softmax in the tiled attention (core/attention/flash_attention*.cc):
// the row maximum, e^(score − max) with its sum, and the rescaling of accumulated rows. Each has
// a portable version (compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time) and,
// where the CPU has AVX-512, a hand-vectorised one; the plain names pick the fastest the CPU
// runs. Both versions are exposed so that tests can check each against a double-precision
// reference.
#ifndef ATTNSERVE_CORE_KERNELS_SOFTMAX_KERNELS_H_
#define ATTNSERVE_CORE_KERNELS_SOFTMAX_KERNELS_H_

#include <cstdint>

#include "core/kernels/alibi_term.h"

namespace attnserve {

// e^x for x <= 0 (relative error < 2e-7); −inf and x < −87 give exactly 0. Also right up to
// x = 88, which bf16 rows shifted by less than their maximum reach.
float ExpNonPositive(float x);

// max(row[0..n)); −inf for n == 0.
float RowMax(const float* row, int64_t n);

// row[c] ← e^(row[c] − max) for c < n; returns Σ row[c]. Scores must be <= max (NaN propagates).
// Relative error per element < 1e-6.
float ExpShiftedSum(float* row, int64_t n, float max);
float ExpShiftedSumPortable(float* row, int64_t n, float max);
float ExpShiftedSumAvx512(float* row, int64_t n, float max);  // needs AVX512F

// out[c] ← bf16(e^(scale·row[c] − shift)) rounded to nearest even, for c < n; returns the sum of
// the f32 values before rounding, and *row_max ← max of row[0..n) (unscaled; −inf for n == 0)
// from the same pass. The P operand of a bf16 P·V product, from scores that may still lack their
// scale (scale > 0). The shift need not be the maximum — a running maximum from earlier tiles
// saves a pass over the row — but scale·row[c] − shift must stay below ~88 for finite results.
// Relative error per element < 1e-4 before rounding.
float ExpShiftedSumToBfloat16(const float* row, int64_t n, float scale, float shift,
                              uint16_t* out, float* row_max);
float ExpShiftedSumToBfloat16Portable(const float* row, int64_t n, float scale, float shift,
                                      uint16_t* out, float* row_max);
float ExpShiftedSumToBfloat16Avx512(const float* row, int64_t n, float scale, float shift,
                                    uint16_t* out,
                                    float* row_max);  // needs CpuHasAvx512Bf16()

// The same exponentials for a row that arrives in chunks (the fused AMX attention): out[c] ←
// bf16(e^(scale·row[c] + bias(c) − shift)) for c < n, bias the ALiBi term when `alibi` is set
// (else 0), and their f32 values added to the row's running sum, kept as 16 partial sums in
// lane_sums[0..16) (the sum is their total) so that no chunk pays for a horizontal reduction.
// Returns false, with lane_sums unchanged and out to be rewritten, when one of this chunk's 16
// partial sums exceeds 2^24 (or is +inf): the shift is then too far below the scores, and the
// caller shifts by the chunk's maximum and calls again. A shift no lower than the chunk's largest
// exponent − 14 always passes for n <= 128; NaN passes (and reaches the sum). Needs AVX512F, BW,
// VL, DQ and AVX512_BF16 (CpuHasAvx512Bf16).
bool ExpShiftedToBfloat16Lanes(const float* row, int64_t n, float scale, float shift,
                               uint16_t* out, float* lane_sums,
                               const AlibiTerm* alibi = nullptr);

// row[c] *= factor for c < n.
void ScaleRow(float* row, int64_t n, float factor);

// out[c] = row[c] · factor for c < n (the final normalisation of an output row).
void ScaleRowInto(const float* row, int64_t n, float factor, float* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_SOFTMAX_KERNELS_H_
