// bfloat16 (the upper 16 bits of an IEEE binary32) conversions, round to nearest even.
#ifndef ATTNSERVE_CORE_KERNELS_BFLOAT16_H_
#define ATTNSERVE_CORE_KERNELS_BFLOAT16_H_

#include <cstdint>
#include <cstring>

namespace attnserve {

inline float Bfloat16ToFloat(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN, ±inf stays ±inf.
inline uint16_t FloatToBfloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// The float nearest to value that bfloat16 can hold.
inline float RoundToBfloat16(float value) { return Bfloat16ToFloat(FloatToBfloat16(value)); }

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_BFLOAT16_H_
