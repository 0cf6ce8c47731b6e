#include "core/kernels/float16.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

TEST(HalfToFloatTest, PublishedBinary16Values) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);              // largest normal
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
}

TEST(FloatToHalfTest, EveryHalfRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto half = static_cast<uint16_t>(bits);
    const float value = HalfToFloat(half);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(value)))) << std::hex << bits;
      continue;
    }
    EXPECT_EQ(FloatToHalf(value), half) << std::hex << bits;
  }
}

// The reference: the finite half nearest to `value` by exhaustive search in double precision,
// ties to the even bit pattern; ±inf past 65504 + half an ulp (65520), as IEEE rounding does.
uint16_t NearestHalf(float value) {
  const double target = std::fabs(static_cast<double>(value));
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  if (target >= 65520.0) return sign | 0x7c00;
  uint16_t best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (uint16_t magnitude = 0; magnitude <= 0x7bff; ++magnitude) {
    const double distance = std::fabs(static_cast<double>(HalfToFloat(magnitude)) - target);
    if (distance < best_distance || (distance == best_distance && (magnitude & 1) == 0)) {
      best = magnitude;
      best_distance = distance;
    }
  }
  return sign | best;
}

TEST(FloatToHalfTest, RoundsToNearestEvenLikeAnExhaustiveSearch) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-26.0f, 17.0f);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  for (int i = 0; i < 500; ++i) {
    const float value = (i % 2 ? -1.0f : 1.0f) * mantissa(rng) * std::exp2(std::floor(exponent(rng)));
    EXPECT_EQ(FloatToHalf(value), NearestHalf(value)) << value;
  }
  // Exact ties: halfway between neighbours goes to the even mantissa.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // 1 and 1+2^-10 → 1
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // → 1 + 2^-9
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);              // half the least subnormal
  EXPECT_EQ(FloatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
}

}  // namespace
}  // namespace attnserve
