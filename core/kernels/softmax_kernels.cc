#include "core/kernels/softmax_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/kernels/bfloat16.h"
#include "core/kernels/cpu_features.h"
#include "core/kernels/target_clones.h"
#include "core/kernels/vector_lanes.h"

// GCC 12's AVX-512 headers build "undefined" vectors as self-initialised variables (`__m512 __Y =
// __Y;`, GCC bug 105593), which -Wuninitialized reports wherever the intrinsics are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace attnserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLog2eLow = 1.9259629911266175e-08f;  // log2 e − kLog2e
constexpr float kLaneSumLimit = 16777216.0f;            // 2^24, ExpShiftedToBfloat16Lanes

// 2^f as polynomials in f, coefficients fitted here for the least maximum relative error
// (checked in f32 over 2·10^5 points of the interval). For f32 results, degree 5 on
// f in [−1/2, 1/2] (1.6e-7). For bf16 ones, degree 3 on f in [0, 1) (7.5e-5, far below bf16's
// 2^-8 rounding): the [−1/2, 1/2] fit as √2·p(f − 1/2), expanded.
constexpr float kExp2Degree5[] = {1.0000001192092896f,   0.6931469440460205f,
                                  0.24022120237350464f,  0.05550713092088699f,
                                  0.009675541892647743f, 0.0013276472454890609f};
constexpr float kExp2Degree3FromZero[] = {0.9999251961708069f, 0.6958335041999817f,
                                          0.2260671854019165f, 0.07802452147006989f};

// 2^(k + f) for 16 lanes, k integral and |f| <= 1/2: 2^f by the polynomial, then 2^k applied by
// vscalefps (exact, and 0 once k is far below −126).
__attribute__((target("avx512f"), always_inline)) inline __m512 Exp2x16(__m512 k, __m512 f) {
  __m512 p = _mm512_set1_ps(kExp2Degree5[5]);
  for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Degree5[i]));
  return _mm512_scalef_ps(p, k);
}

// 2^t for 16 lanes to 7.5e-5: f = t − floor(t) by one vreduceps, the cubic, and 2^floor(t) by
// vscalefps, which floors its exponent operand itself — one instruction fewer than rounding t and
// subtracting. No floor on t is needed: vreduceps gives f = 0 for ±inf, so −inf (and any t far
// below −126) gives 0, +inf gives +inf, and NaN stays NaN.
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __m512 Exp2Bfloat16x16(
    __m512 t) {
  const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 p = _mm512_set1_ps(kExp2Degree3FromZero[3]);
  for (int i = 2; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Degree3FromZero[i]));
  return _mm512_scalef_ps(p, t);
}

// The broadcast constants of ExpOf16.
struct ExpTerms {
  __m512 scale_log2e, neg_shift_log2e, neg_slope_log2e, q_position;
  bool causal;
};

// e^(scale·x + bias − shift) of 16 columns: t = x·scale·log2 e − shift·log2 e in one FMA (the
// roundings of the two constants move t by about |t|·2^-23, a relative error in e far below
// bf16's), then with kAlibi −slope·log2 e·(q − k) or ·|q − k| added by a second FMA.
template <bool kAlibi>
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __m512 ExpOf16(
    const ExpTerms& terms, __m512 x, __m512 k_positions) {
  __m512 t = _mm512_fmadd_ps(x, terms.scale_log2e, terms.neg_shift_log2e);
  if constexpr (kAlibi) {
    __m512 distance = _mm512_sub_ps(terms.q_position, k_positions);
    if (!terms.causal) distance = _mm512_andnot_ps(_mm512_set1_ps(-0.0f), distance);
    t = _mm512_fmadd_ps(distance, terms.neg_slope_log2e, t);
  }
  return Exp2Bfloat16x16(t);
}

__attribute__((target("avx512f"), always_inline)) inline __m512 RoundToInteger(__m512 t) {
  return _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace

float ExpNonPositive(float x) {
  // A NaN goes through the arithmetic as 0 and comes back at the end: converting it to an
  // integer exponent would be undefined.
  const bool nan = x != x;
  const bool underflow = x < -87.0f;
  x = underflow || nan ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;  // e^88 is the largest finite; beyond, 2^n would overflow
  // x = n·ln2 + r, |r| <= ln2/2; e^r by its degree-6 Taylor polynomial, 2^n in the exponent bits.
  const float n = std::nearbyint(x * kLog2e);
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return nan ? std::numeric_limits<float>::quiet_NaN() : underflow ? 0.0f : p * two_n;
}

ATTNSERVE_TARGET_CLONES float RowMax(const float* row, int64_t n) {
  Float32x16 lanes = Float32x16{} + kNegInf;  // −inf in every lane
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    Float32x16 x;
    std::memcpy(&x, row + c, sizeof(x));
    lanes = x > lanes ? x : lanes;
  }
  // Lanes folded in halves, four shuffles instead of sixteen dependent compares: for the 16
  // scores that start a bf16 row (Bfloat16Probabilities), the reduction is most of the cost.
  // (__builtin_shufflevector: GCC 12 and clang both have it.)
  Float32x16 other = __builtin_shufflevector(lanes, lanes, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2,
                                             3, 4, 5, 6, 7);
  lanes = other > lanes ? other : lanes;
  other = __builtin_shufflevector(lanes, lanes, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10,
                                  11);
  lanes = other > lanes ? other : lanes;
  other = __builtin_shufflevector(lanes, lanes, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12,
                                  13);
  lanes = other > lanes ? other : lanes;
  other = __builtin_shufflevector(lanes, lanes, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15,
                                  14);
  lanes = other > lanes ? other : lanes;
  float max = lanes[0];
  for (; c < n; ++c) max = row[c] > max ? row[c] : max;
  return max;
}

ATTNSERVE_TARGET_CLONES float ExpShiftedSumPortable(float* row, int64_t n, float max) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) {
    const float e = ExpNonPositive(row[c] - max);
    row[c] = e;
    sum += e;
  }
  return sum;
}

// The portable bf16 version uses a degree-5 Taylor polynomial for e^r (relative error < 3e-6, far
// below bf16's 2^-8 rounding).
ATTNSERVE_TARGET_CLONES float ExpShiftedSumToBfloat16Portable(const float* row, int64_t n,
                                                              float scale, float shift,
                                                              uint16_t* out, float* row_max) {
  Float32x16 sums = {};
  Float32x16 maxima = Float32x16{} + kNegInf;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    Float32x16 x;
    std::memcpy(&x, row + c, sizeof(x));
    maxima = x > maxima ? x : maxima;
    x = x * scale - shift;
    // NaN lanes compute as −87 and are restored at the end (their integer exponent would be
    // undefined).
    const Int32x16 nan = x != x;
    const Int32x16 underflow = x < -87.0f;
    x = underflow | nan ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;  // keeps the integer exponent defined
    // n = round(x·log2 e) by the 1.5·2^23 trick; r = x − n·ln 2 in two parts.
    const Float32x16 k = (x * kLog2e + 12582912.0f) - 12582912.0f;
    const Float32x16 r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;
    Float32x16 p = r * (1.0f / 120.0f) + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const Uint32x16 exponent =
        __builtin_convertvector(__builtin_convertvector(k, Int32x16) + 127, Uint32x16) << 23;
    Float32x16 two_k;
    std::memcpy(&two_k, &exponent, sizeof(two_k));
    Float32x16 e = p * two_k;
    e = underflow ? 0.0f : e;
    e = nan ? std::numeric_limits<float>::quiet_NaN() : e;
    sums += e;
    Uint32x16 bits;
    std::memcpy(&bits, &e, sizeof(bits));
    // e is non-negative, or the quiet NaN 0x7fc00000, which the rounding below keeps a NaN.
    const Uint16x16 narrow =
        __builtin_convertvector((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16, Uint16x16);
    std::memcpy(out + c, &narrow, sizeof(narrow));
  }
  float sum = 0.0f, max = kNegInf;
  for (int l = 0; l < 16; ++l) {
    sum += sums[l];
    max = maxima[l] > max ? maxima[l] : max;
  }
  for (; c < n; ++c) {
    const float e = ExpNonPositive(row[c] * scale - shift);
    out[c] = FloatToBfloat16(e);
    sum += e;
    max = row[c] > max ? row[c] : max;
  }
  *row_max = max;
  return sum;
}

__attribute__((target("avx512f"))) float ExpShiftedSumAvx512(float* row, int64_t n, float max) {
  const __m512 max16 = _mm512_set1_ps(max);
  const __m512 log2e_high = _mm512_set1_ps(kLog2e);
  const __m512 log2e_low = _mm512_set1_ps(kLog2eLow);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 lanes = TailMask(n - c);
    // e^d = 2^(d·log2 e) with d = x − max; k = round(d·log2 e) and f = d·log2 e − k from log2 e
    // in two parts by FMAs, so f stays exact to f32 even for d far below 0 (relative error of
    // e^d < 2e-7). d is floored at −110 (e^d = 0 in f32) so that −inf gives 0 rather than
    // −inf − (−inf); the max keeps a NaN d (returned when in the second place).
    const __m512 x = _mm512_maskz_loadu_ps(lanes, row + c);
    const __m512 d = _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_sub_ps(x, max16));
    const __m512 k = RoundToInteger(_mm512_mul_ps(d, log2e_high));
    const __m512 f = _mm512_fmadd_ps(d, log2e_low, _mm512_fmsub_ps(d, log2e_high, k));
    const __m512 e = Exp2x16(k, f);
    sum = _mm512_mask_add_ps(sum, lanes, sum, e);
    _mm512_mask_storeu_ps(row + c, lanes, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// vcvtneps2bf16 rounds to nearest even in one instruction.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))) float
ExpShiftedSumToBfloat16Avx512(
    const float* row, int64_t n, float scale, float shift, uint16_t* out, float* row_max) {
  const ExpTerms terms{_mm512_set1_ps(scale * kLog2e), _mm512_set1_ps(-shift * kLog2e), {}, {},
                       false};
  __m512 sum = _mm512_setzero_ps();
  __m512 maxima = _mm512_set1_ps(kNegInf);
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 lanes = TailMask(n - c);
    const __m512 x = _mm512_maskz_loadu_ps(lanes, row + c);
    maxima = _mm512_mask_max_ps(maxima, lanes, maxima, x);
    const __m512 e = ExpOf16<false>(terms, x, x);
    sum = _mm512_mask_add_ps(sum, lanes, sum, e);
    _mm256_mask_storeu_epi16(out + c, lanes, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e)));
  }
  *row_max = _mm512_reduce_max_ps(maxima);
  return _mm512_reduce_add_ps(sum);
}

// Lanes of k_positions[c, c + 16) for ALiBi's term (zeros, unread, without).
template <bool kAlibi>
__attribute__((target("avx512f"), always_inline)) inline __m512 KeyPositions16(
    const float* k_positions, int64_t c, __mmask16 lanes) {
  if constexpr (kAlibi) return _mm512_maskz_loadu_ps(lanes, k_positions + c);
  return _mm512_setzero_ps();
}

// ExpShiftedToBfloat16Lanes with (kAlibi) or without ALiBi's term in the exponent.
template <bool kAlibi>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"), always_inline)) inline bool
ExpShiftedLanes(const float* row, int64_t n, float scale, float shift, const AlibiTerm& alibi,
                uint16_t* out, float* lane_sums) {
  const ExpTerms terms{_mm512_set1_ps(scale * kLog2e), _mm512_set1_ps(-shift * kLog2e),
                       _mm512_set1_ps(-alibi.slope * kLog2e), _mm512_set1_ps(alibi.q_position),
                       alibi.causal};
  const float* k = alibi.k_positions;
  __m512 sum_low = _mm512_setzero_ps(), sum_high = _mm512_setzero_ps();
  int64_t c = 0;
  // 32 columns a step: one vcvtne2ps2bf16 rounds both halves.
  for (; c + 32 <= n; c += 32) {
    const __m512 low =
        ExpOf16<kAlibi>(terms, _mm512_loadu_ps(row + c), KeyPositions16<kAlibi>(k, c, 0xffff));
    const __m512 high = ExpOf16<kAlibi>(terms, _mm512_loadu_ps(row + c + 16),
                                        KeyPositions16<kAlibi>(k, c + 16, 0xffff));
    sum_low = _mm512_add_ps(sum_low, low);
    sum_high = _mm512_add_ps(sum_high, high);
    _mm512_storeu_si512(out + c, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low)));
  }
  for (; c < n; c += 16) {
    const __mmask16 lanes = TailMask(n - c);
    const __m512 e = ExpOf16<kAlibi>(terms, _mm512_maskz_loadu_ps(lanes, row + c),
                                     KeyPositions16<kAlibi>(k, c, lanes));
    sum_low = _mm512_mask_add_ps(sum_low, lanes, sum_low, e);
    _mm256_mask_storeu_epi16(out + c, lanes, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e)));
  }
  const __m512 sums = _mm512_add_ps(sum_low, sum_high);
  // A NaN lane compares false: NaN is the row's result, not a reason to shift again.
  if (_mm512_cmp_ps_mask(sums, _mm512_set1_ps(kLaneSumLimit), _CMP_GT_OQ) != 0) return false;
  _mm512_storeu_ps(lane_sums, _mm512_add_ps(_mm512_loadu_ps(lane_sums), sums));
  return true;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))) bool
ExpShiftedToBfloat16Lanes(const float* row, int64_t n, float scale, float shift, uint16_t* out,
                          float* lane_sums, const AlibiTerm* alibi) {
  if (alibi != nullptr) return ExpShiftedLanes<true>(row, n, scale, shift, *alibi, out, lane_sums);
  return ExpShiftedLanes<false>(row, n, scale, shift, AlibiTerm{}, out, lane_sums);
}

float ExpShiftedSum(float* row, int64_t n, float max) {
  return CpuHasAvx512() ? ExpShiftedSumAvx512(row, n, max) : ExpShiftedSumPortable(row, n, max);
}

float ExpShiftedSumToBfloat16(const float* row, int64_t n, float scale, float shift,
                              uint16_t* out, float* row_max) {
  return CpuHasAvx512Bf16()
             ? ExpShiftedSumToBfloat16Avx512(row, n, scale, shift, out, row_max)
             : ExpShiftedSumToBfloat16Portable(row, n, scale, shift, out, row_max);
}

ATTNSERVE_TARGET_CLONES void ScaleRow(float* row, int64_t n, float factor) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) row[c] *= factor;
}

ATTNSERVE_TARGET_CLONES void ScaleRowInto(const float* row, int64_t n, float factor, float* out) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) out[c] = row[c] * factor;
}

}  // namespace attnserve
