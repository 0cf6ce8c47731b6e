// IEEE binary16 (half precision) conversions: exact widening, narrowing rounded to nearest even.
#ifndef ATTNSERVE_CORE_KERNELS_FLOAT16_H_
#define ATTNSERVE_CORE_KERNELS_FLOAT16_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace attnserve {

// binary16 → float, exact: subnormals, ±inf and NaN preserved.
inline float HalfToFloat(uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    value = mantissa == 0 ? INFINITY : NAN;
  } else {
    value = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return (bits & 0x8000) ? -value : value;
}

// float → binary16, round to nearest, ties to even: past the largest half (65504) by half an
// ulp or more gives ±inf, NaN a quiet NaN, tiny values subnormals or ±0.
inline uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 rounds to inf
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a multiple of 2^-24. Scaling by 2^24 is exact, and
    // nearbyint rounds ties to even in the default rounding mode.
    float scaled;
    std::memcpy(&scaled, &magnitude, sizeof(scaled));
    return sign | static_cast<uint16_t>(std::nearbyint(scaled * 0x1p24f));
  }
  // Rebias the exponent (127 → 15) and drop 13 mantissa bits, rounding to nearest even; a carry
  // out of the mantissa correctly bumps the exponent.
  uint32_t rebiased = magnitude - (112u << 23);
  rebiased += 0xfffu + ((rebiased >> 13) & 1u);
  return sign | static_cast<uint16_t>(rebiased >> 13);
}

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_FLOAT16_H_
