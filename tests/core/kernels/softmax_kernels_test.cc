// The online-softmax row kernels, portable and AVX-512 versions alike, against exp in double
// precision: every length 0…70 (vector bodies and masked tails), scores far below the maximum,
// −inf, NaN, and the scale the bf16 variant applies.
#include "core/kernels/softmax_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/cpu_features.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr double kFloat32Tolerance = 1e-6;  // per element and for the sum, relative
// Results below f32's smallest normal may flush to zero.
constexpr double kUnderflow = 1.2e-38;
// The bf16 exp is computed to 1e-4; rounding to bf16 (8 significant bits) then adds up to 2^-8.
constexpr double kBfloat16ExpTolerance = 1e-4;
constexpr double kBfloat16StoredTolerance = 1e-4 + 1.0 / 256;

using ExpSum = float (*)(float*, int64_t, float);
using ExpSumToBfloat16 = float (*)(const float*, int64_t, float, float, uint16_t*, float*);

template <typename Kernel>
struct Variant {
  std::string name;
  Kernel kernel;
  bool available;  // the CPU runs it
};

template <typename Kernel>
std::string VariantName(const ::testing::TestParamInfo<Variant<Kernel>>& info) {
  return info.param.name;
}

// Scores in [−30, 0] around a maximum of 3, plus a few far below (−200 → 0).
std::vector<float> Scores(int64_t n) {
  std::vector<float> scores = RandomVector(n, 11 + n, 10.0f);
  for (int64_t i = 0; i < n; ++i) {
    scores[i] = 3.0f - std::abs(scores[i]);
    if (i % 13 == 5) scores[i] = -200.0f;
  }
  return scores;
}

template <typename Kernel>
class VariantTest : public ::testing::TestWithParam<Variant<Kernel>> {
 protected:
  void SetUp() override {
    if (!this->GetParam().available) GTEST_SKIP() << "this CPU lacks the instructions";
  }
  Kernel kernel() const { return this->GetParam().kernel; }
};

using ExpShiftedSumTest = VariantTest<ExpSum>;
using ExpShiftedSumToBfloat16Test = VariantTest<ExpSumToBfloat16>;

TEST_P(ExpShiftedSumTest, MatchesDoubleExp) {
  for (int64_t n = 0; n <= 70; ++n) {
    const std::vector<float> scores = Scores(n);
    std::vector<float> row = scores;
    row.push_back(12345.0f);  // past the end: must stay
    const float max = 3.0f;
    const float sum = kernel()(row.data(), n, max);
    double exact_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double exact = std::exp(double(scores[i]) - max);
      exact_sum += exact;
      ASSERT_LE(std::abs(row[i] - exact), std::max(kFloat32Tolerance * exact, kUnderflow))
          << "n=" << n << " i=" << i;
    }
    EXPECT_LE(std::abs(sum - exact_sum), kFloat32Tolerance * exact_sum) << "n=" << n;
    EXPECT_EQ(row[n], 12345.0f) << "n=" << n;
  }
}

TEST_P(ExpShiftedSumTest, MinusInfinityGivesZeroAndNaNPropagates) {
  for (const int64_t n : {5, 16, 37}) {
    std::vector<float> row(n, 0.0f);
    row[1] = -kInf;
    row[3] = kNaN;
    const float sum = kernel()(row.data(), n, 0.0f);
    EXPECT_EQ(row[1], 0.0f) << "n=" << n;
    EXPECT_TRUE(std::isnan(row[3])) << "n=" << n;
    EXPECT_NEAR(row[0], 1.0f, kFloat32Tolerance) << "n=" << n;
    EXPECT_TRUE(std::isnan(sum)) << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ExpShiftedSumTest,
                         ::testing::Values(Variant<ExpSum>{"Portable", ExpShiftedSumPortable, true},
                                           Variant<ExpSum>{"Avx512", ExpShiftedSumAvx512,
                                                           CpuHasAvx512()},
                                           Variant<ExpSum>{"Dispatched", ExpShiftedSum, true}),
                         VariantName<ExpSum>);

TEST_P(ExpShiftedSumToBfloat16Test, MatchesDoubleExpAndFindsTheMaximum) {
  // Shifts at the maximum (3·scale) and below it by up to 16, as a running maximum can be.
  for (const float scale : {1.0f, 0.125f}) {
    for (const float below_max : {0.0f, 5.5f, 16.0f}) {
      for (int64_t n = 0; n <= 70; ++n) {
        const std::vector<float> scores = Scores(n);
        std::vector<uint16_t> out(n + 1, 0x7777);  // out[n] must stay
        const float shift = 3.0f * scale - below_max;
        float row_max = 0.0f;
        const float sum = kernel()(scores.data(), n, scale, shift, out.data(), &row_max);
        double exact_sum = 0.0;
        float exact_max = -kInf;
        for (int64_t i = 0; i < n; ++i) {
          const double exact = std::exp(double(scores[i]) * scale - shift);
          exact_sum += exact;
          exact_max = std::max(exact_max, scores[i]);
          ASSERT_LE(std::abs(Bfloat16ToFloat(out[i]) - exact),
                    std::max(kBfloat16StoredTolerance * exact, kUnderflow))
              << "scale=" << scale << " shift=" << shift << " n=" << n << " i=" << i;
        }
        EXPECT_LE(std::abs(sum - exact_sum), kBfloat16ExpTolerance * exact_sum)
            << "scale=" << scale << " shift=" << shift << " n=" << n;
        EXPECT_EQ(row_max, exact_max) << "n=" << n;
        EXPECT_EQ(out[n], 0x7777) << "n=" << n;
      }
    }
  }
}

TEST_P(ExpShiftedSumToBfloat16Test, MinusInfinityGivesZeroAndNaNPropagates) {
  for (const int64_t n : {5, 16, 37}) {
    std::vector<float> row(n, 0.0f);
    row[1] = -kInf;
    row[3] = kNaN;
    std::vector<uint16_t> out(n);
    float row_max;
    const float sum = kernel()(row.data(), n, 1.0f, 0.0f, out.data(), &row_max);
    EXPECT_EQ(out[1], 0) << "n=" << n;
    EXPECT_TRUE(std::isnan(Bfloat16ToFloat(out[3]))) << "n=" << n;
    EXPECT_TRUE(std::isnan(sum)) << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, ExpShiftedSumToBfloat16Test,
    ::testing::Values(
        Variant<ExpSumToBfloat16>{"Portable", ExpShiftedSumToBfloat16Portable, true},
        Variant<ExpSumToBfloat16>{"Avx512Bf16", ExpShiftedSumToBfloat16Avx512,
                                  CpuHasAvx512Bf16()},
        Variant<ExpSumToBfloat16>{"Dispatched", ExpShiftedSumToBfloat16, true}),
    VariantName<ExpSumToBfloat16>);

class ExpShiftedToBfloat16LanesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CpuHasAvx512Bf16()) GTEST_SKIP() << "this CPU lacks AVX512-BF16";
  }
};

TEST_F(ExpShiftedToBfloat16LanesTest, MatchesDoubleExpAndAddsToTheLaneSums) {
  for (const float scale : {1.0f, 0.125f}) {
    for (const float below_max : {0.0f, 5.5f, 14.0f}) {
      for (int64_t n = 0; n <= 70; ++n) {
        const std::vector<float> scores = Scores(n);
        std::vector<uint16_t> out(n + 1, 0x7777);  // out[n] must stay
        const float shift = 3.0f * scale - below_max;
        std::vector<float> lane_sums(16);
        for (int l = 0; l < 16; ++l) lane_sums[l] = 0.5f * l;  // a running sum to add to
        ASSERT_TRUE(ExpShiftedToBfloat16Lanes(scores.data(), n, scale, shift, out.data(),
                                              lane_sums.data()))
            << "scale=" << scale << " shift=" << shift << " n=" << n;
        double exact_sum = 0.5 * (15 * 16 / 2);
        for (int64_t i = 0; i < n; ++i) {
          const double exact = std::exp(double(scores[i]) * scale - shift);
          exact_sum += exact;
          ASSERT_LE(std::abs(Bfloat16ToFloat(out[i]) - exact),
                    std::max(kBfloat16StoredTolerance * exact, kUnderflow))
              << "scale=" << scale << " shift=" << shift << " n=" << n << " i=" << i;
        }
        double sum = 0.0;
        for (const float lane : lane_sums) sum += lane;
        EXPECT_LE(std::abs(sum - exact_sum), kBfloat16ExpTolerance * exact_sum)
            << "scale=" << scale << " shift=" << shift << " n=" << n;
        EXPECT_EQ(out[n], 0x7777) << "n=" << n;
      }
    }
  }
}

// A shift 30 below the scores makes terms of e^30 > 2^24: refused, and the sums left as they
// were. Terms of up to e^14 pass for chunks of 128 (8 terms per lane).
TEST_F(ExpShiftedToBfloat16LanesTest, RefusesAShiftFarBelowTheScores) {
  for (const int64_t n : {1, 16, 37, 128}) {
    std::vector<float> row(n, 1.0f), lane_sums(16, 2.0f);
    std::vector<uint16_t> out(n);
    EXPECT_FALSE(ExpShiftedToBfloat16Lanes(row.data(), n, 1.0f, -29.0f, out.data(),
                                           lane_sums.data()))
        << "n=" << n;
    EXPECT_EQ(lane_sums, std::vector<float>(16, 2.0f)) << "n=" << n;
    EXPECT_TRUE(ExpShiftedToBfloat16Lanes(row.data(), n, 1.0f, -13.0f, out.data(),
                                          lane_sums.data()))
        << "n=" << n;
  }
}

TEST_F(ExpShiftedToBfloat16LanesTest, MinusInfinityGivesZeroAndNaNPropagates) {
  for (const int64_t n : {5, 16, 37}) {
    std::vector<float> row(n, 0.0f);
    row[1] = -kInf;
    row[3] = kNaN;
    std::vector<uint16_t> out(n);
    std::vector<float> lane_sums(16);
    EXPECT_TRUE(
        ExpShiftedToBfloat16Lanes(row.data(), n, 1.0f, 0.0f, out.data(), lane_sums.data()));
    EXPECT_EQ(out[1], 0) << "n=" << n;
    EXPECT_TRUE(std::isnan(Bfloat16ToFloat(out[3]))) << "n=" << n;
    double sum = 0.0;
    for (const float lane : lane_sums) sum += lane;
    EXPECT_TRUE(std::isnan(sum)) << "n=" << n;
  }
}

using ScaleIntoBfloat16 = void (*)(const float*, int64_t, float, uint16_t*);
using ScaleRowIntoBfloat16Test = VariantTest<ScaleIntoBfloat16>;

// Against FloatToBfloat16 of the f32 product, bit for bit: every length 0…70, values on and
// next to rounding ties, ±inf, NaN; subnormal results may flush to ±0.
TEST_P(ScaleRowIntoBfloat16Test, RoundsTheProductLikeFloatToBfloat16) {
  for (const float factor : {1.0f, 0.37f}) {
    for (int64_t n = 0; n <= 70; ++n) {
      std::vector<float> row = RandomVector(n, 21 + n, 100.0f);
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &row[i], sizeof(bits));
        if (i % 5 == 1) bits = (bits & 0xffff0000u) | 0x8000u;  // a tie (for factor 1)
        if (i % 5 == 2) bits = (bits & 0xffff0000u) | 0x18000u;  // a tie, odd upper half
        std::memcpy(&row[i], &bits, sizeof(bits));
        if (i % 11 == 3) row[i] = (i % 2 ? 1 : -1) * kInf;
        if (i % 13 == 4) row[i] = kNaN;
        if (i % 17 == 5) row[i] = 3e-39f;  // subnormal
      }
      std::vector<uint16_t> out(n + 1, 0x7777);  // out[n] must stay
      kernel()(row.data(), n, factor, out.data());
      for (int64_t i = 0; i < n; ++i) {
        const float product = row[i] * factor;
        const uint16_t expected = FloatToBfloat16(product);
        if (std::isnan(product)) {
          ASSERT_TRUE(std::isnan(Bfloat16ToFloat(out[i]))) << "n=" << n << " i=" << i;
        } else if (std::fpclassify(product) == FP_SUBNORMAL) {
          ASSERT_TRUE(out[i] == expected || (out[i] & 0x7fffu) == 0) << "n=" << n << " i=" << i;
        } else {
          ASSERT_EQ(out[i], expected) << "factor=" << factor << " n=" << n << " i=" << i;
        }
      }
      EXPECT_EQ(out[n], 0x7777) << "n=" << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, ScaleRowIntoBfloat16Test,
    ::testing::Values(
        Variant<ScaleIntoBfloat16>{"Portable", ScaleRowIntoBfloat16Portable, true},
        Variant<ScaleIntoBfloat16>{"Avx512Bf16", ScaleRowIntoBfloat16Avx512, CpuHasAvx512Bf16()},
        Variant<ScaleIntoBfloat16>{"Dispatched", ScaleRowIntoBfloat16, true}),
    VariantName<ScaleIntoBfloat16>);

TEST(RowMaxTest, MaximumOverEveryLength) {
  for (int64_t n = 0; n <= 70; ++n) {
    std::vector<float> row = RandomVector(n, 5 + n);
    row.push_back(1e30f);  // past the end
    float expected = -kInf;
    for (int64_t i = 0; i < n; ++i) expected = std::max(expected, row[i]);
    EXPECT_EQ(RowMax(row.data(), n), expected) << "n=" << n;
  }
}

TEST(ScaleRowTest, ScalesInPlaceAndIntoAnotherRow) {
  for (int64_t n = 0; n <= 70; ++n) {
    const std::vector<float> row = RandomVector(n, 9 + n);
    std::vector<float> in_place = row, into(n + 1, 7.0f);  // into[n] must stay
    ScaleRow(in_place.data(), n, 0.3f);
    ScaleRowInto(row.data(), n, 0.3f, into.data());
    for (int64_t i = 0; i < n; ++i) {
      const float exact = row[i] * 0.3f;  // one f32 rounding, as the kernels do
      ASSERT_EQ(in_place[i], exact) << "n=" << n << " i=" << i;
      ASSERT_EQ(into[i], exact) << "n=" << n << " i=" << i;
    }
    EXPECT_EQ(into[n], 7.0f) << "n=" << n;
  }
}

TEST(ExpNonPositiveTest, MatchesDoubleExpAndUnderflowsToZero) {
  for (float x = -86.0f; x <= 0.0f; x += 0.37f) {
    const double exact = std::exp(double(x));
    EXPECT_LE(std::abs(ExpNonPositive(x) - exact), 2e-7 * exact) << "x=" << x;
  }
  EXPECT_EQ(ExpNonPositive(-100.0f), 0.0f);
  EXPECT_EQ(ExpNonPositive(-kInf), 0.0f);
  EXPECT_EQ(ExpNonPositive(0.0f), 1.0f);
}

}  // namespace
}  // namespace attnserve
