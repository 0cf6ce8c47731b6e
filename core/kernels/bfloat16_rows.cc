#include "core/kernels/bfloat16_rows.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/kernels/bfloat16.h"
#include "core/kernels/cpu_features.h"
#include "core/kernels/target_clones.h"
#include "core/kernels/vector_lanes.h"

// GCC 12's AVX-512 headers build "undefined" vectors as self-initialised variables (`__m512 __Y =
// __Y;`, GCC bug 105593), which -Wuninitialized reports wherever the intrinsics are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace attnserve {

ATTNSERVE_TARGET_CLONES void ScaleRowIntoBfloat16Portable(const float* row, int64_t n,
                                                          float factor, uint16_t* out) {
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    Float32x16 x;
    std::memcpy(&x, row + c, sizeof(x));
    x *= factor;
    Uint32x16 bits;
    std::memcpy(&bits, &x, sizeof(bits));
    const Uint32x16 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const Uint32x16 quiet_nan = (bits >> 16) | 0x0040u;
    const Uint32x16 result = (bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
    const Uint16x16 narrow = __builtin_convertvector(result, Uint16x16);
    std::memcpy(out + c, &narrow, sizeof(narrow));
  }
  for (; c < n; ++c) out[c] = FloatToBfloat16(row[c] * factor);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void ScaleRowIntoBfloat16Avx512(
    const float* row, int64_t n, float factor, uint16_t* out) {
  const __m512 factor16 = _mm512_set1_ps(factor);
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    const __m512 low = _mm512_mul_ps(_mm512_loadu_ps(row + c), factor16);
    const __m512 high = _mm512_mul_ps(_mm512_loadu_ps(row + c + 16), factor16);
    _mm512_storeu_si512(out + c, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low)));
  }
  for (; c < n; c += 16) {
    const __mmask16 lanes = TailMask(n - c);
    const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, row + c), factor16);
    _mm256_mask_storeu_epi16(out + c, lanes, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)));
  }
}

void ScaleRowIntoBfloat16(const float* row, int64_t n, float factor, uint16_t* out) {
  if (CpuHasAvx512Bf16()) {
    ScaleRowIntoBfloat16Avx512(row, n, factor, out);
  } else {
    ScaleRowIntoBfloat16Portable(row, n, factor, out);
  }
}

void ConvertToBfloat16Parallel(const float* values, int64_t count, uint16_t* out) {
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; i += kChunk) {
    ScaleRowIntoBfloat16(values + i, std::min(kChunk, count - i), 1.0f, out + i);
  }
}

void RoundToBfloat16Parallel(const float* values, int64_t count, float* out) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < count; ++i) out[i] = RoundToBfloat16(values[i]);
}

void WidenBfloat16Parallel(const uint16_t* bits, int64_t count, float* out) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < count; ++i) out[i] = Bfloat16ToFloat(bits[i]);
}

}  // namespace attnserve
