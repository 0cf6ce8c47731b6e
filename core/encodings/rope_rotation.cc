#include "core/encodings/rope_rotation.h"

#include <immintrin.h>

#include <cstring>

#include "core/kernels/bfloat16.h"
#include "core/kernels/target_clones.h"
#include "core/kernels/vector_lanes.h"

namespace attnserve {
namespace {

// The masked lanes of 16 bf16 values at `bits`, as f32 (exact); the others 0.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512 LoadBfloat16x16(
    const uint16_t* bits, __mmask16 mask) {
  const __m256i loaded = _mm256_maskz_loadu_epi16(mask, bits);
  // The maskz forms: GCC 12 warns of the undefined source the unmasked ones take.
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(mask, _mm512_maskz_cvtepu16_epi32(mask, loaded), 16));
}

// values rounded to bf16 (nearest even), stored to the masked lanes of `to`.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) inline void
StoreBfloat16x16(uint16_t* to, __mmask16 mask, __m512 values) {
  _mm256_mask_storeu_epi16(to, mask, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(values)));
}

}  // namespace

// Separate restrict pointers let the compiler vectorise over k (AVX-512 and AVX2 clones; this
// file is built without FMA contraction, so every clone rounds as the baseline does).
ATTNSERVE_TARGET_CLONES void RotateHalfSplit(float* __restrict lo, float* __restrict hi,
                                             const float* __restrict cos_row,
                                             const float* __restrict sin_row, int64_t half) {
  for (int64_t k = 0; k < half; ++k) {
    const float a = lo[k], b = hi[k];
    lo[k] = a * cos_row[k] - b * sin_row[k];
    hi[k] = b * cos_row[k] + a * sin_row[k];
  }
}

// The same multiplies and a subtraction or addition as RotateHalfSplit, no FMA.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void
RotateHalfSplitBfloat16Avx512(const uint16_t* x, int64_t head_dim, int64_t half,
                              const float* cos_row, const float* sin_row, uint16_t* out) {
  for (int64_t k = 0; k < half; k += 16) {
    const __mmask16 mask = TailMask(half - k);
    const __m512 a = LoadBfloat16x16(x + k, mask);
    const __m512 b = LoadBfloat16x16(x + half + k, mask);
    const __m512 c = _mm512_maskz_loadu_ps(mask, cos_row + k);
    const __m512 s = _mm512_maskz_loadu_ps(mask, sin_row + k);
    StoreBfloat16x16(out + k, mask, _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s)));
    StoreBfloat16x16(out + half + k, mask,
                     _mm512_add_ps(_mm512_mul_ps(b, c), _mm512_mul_ps(a, s)));
  }
  for (int64_t k = 2 * half; k < head_dim; k += 16) {  // dims past the rotary ones
    const __mmask16 mask = TailMask(head_dim - k);
    StoreBfloat16x16(out + k, mask, LoadBfloat16x16(x + k, mask));
  }
}

ATTNSERVE_TARGET_CLONES void RotateInterleaved(float* __restrict head,
                                               const float* __restrict cos_row,
                                               const float* __restrict sin_row, int64_t half) {
  for (int64_t k = 0; k < half; ++k) {
    const float a = head[2 * k], b = head[2 * k + 1];
    head[2 * k] = a * cos_row[k] - b * sin_row[k];
    head[2 * k + 1] = b * cos_row[k] + a * sin_row[k];
  }
}

void CopyHead(const float* x, int64_t n, float* out) {
  if (out != x) std::memcpy(out, x, n * sizeof(float));
}
ATTNSERVE_TARGET_CLONES void CopyHead(const uint16_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Bfloat16ToFloat(x[i]);
}

}  // namespace attnserve
