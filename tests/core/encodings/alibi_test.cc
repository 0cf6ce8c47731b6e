// ALiBi slopes against the published values (Press et al.; BLOOM build_alibi_tensor) and bias
// maps against an independent double-precision reference.
#include "core/encodings/alibi.h"

#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

// Slopes are computed in double; the published values are printed to 5 significant digits (or
// exact powers of two), hence 5e-6 for the rounded ones and 1e-15 relative for exact ones.
constexpr double kPublishedTolerance = 5e-6;
constexpr double kExactRelTolerance = 1e-15;
// Bias entries are rounded once from double to float: 1e-6 relative (float's half-ulp is 6e-8).
constexpr double kBiasRelTolerance = 1e-6;

void ExpectRelNear(double actual, double expected, double rel, const std::string& where) {
  EXPECT_NEAR(actual, expected, rel * std::fabs(expected) + 1e-30) << where;
}

// The slope rule of Press et al.'s reference code, written from its definition:
//   get_slopes_power_of_2(n): start = 2^(−8/n); [start^(k+1) for k in range(n)]
//   non-power-of-two n: get_slopes_power_of_2(c) + get_slopes(2c)[0::2][:n−c], c = 2^⌊log2 n⌋.
// Generalised to max_bias by replacing 8 with max_bias.
std::vector<double> ReferenceSlopesPowerOfTwo(double max_bias, int64_t n) {
  const double start = std::pow(2.0, -max_bias / static_cast<double>(n));
  std::vector<double> slopes;
  for (int64_t k = 0; k < n; ++k) slopes.push_back(std::pow(start, static_cast<double>(k + 1)));
  return slopes;
}

std::vector<double> ReferenceSlopes(double max_bias, int64_t n) {
  const double log2n = std::log2(static_cast<double>(n));
  if (log2n == std::floor(log2n)) return ReferenceSlopesPowerOfTwo(max_bias, n);
  const int64_t c = int64_t{1} << static_cast<int>(std::floor(log2n));
  std::vector<double> slopes = ReferenceSlopesPowerOfTwo(max_bias, c);
  const std::vector<double> doubled = ReferenceSlopes(max_bias, 2 * c);
  for (int64_t k = 0; static_cast<int64_t>(slopes.size()) < n; k += 2) slopes.push_back(doubled[k]);
  return slopes;
}

std::vector<float> Bias(const AlibiParams& params, int64_t heads, const std::vector<int64_t>& qp,
                        const std::vector<int64_t>& kp, bool causal) {
  std::vector<float> bias(heads * qp.size() * kp.size(), 12345.0f);
  AlibiBias(params, heads, qp.data(), static_cast<int64_t>(qp.size()), kp.data(),
            static_cast<int64_t>(kp.size()), causal, bias.data());
  return bias;
}

TEST(AlibiSlopesTest, TwelveHeadsMatchPublishedValues) {
  // Press et al. / BLOOM, n = 12.
  const std::vector<double> published = {.5,        .25,       .125,      .0625,
                                         .03125,    .015625,   .0078125,  .00390625,
                                         .70710678, .35355339, .17677670, .08838835};
  const std::vector<double> slopes = AlibiSlopes(AlibiParams{}, 12);
  ASSERT_EQ(slopes.size(), published.size());
  for (size_t h = 0; h < published.size(); ++h) {
    EXPECT_NEAR(slopes[h], published[h], kPublishedTolerance) << "h=" << h;
  }
}

TEST(AlibiSlopesTest, SixHeadsMatchPublishedValues) {
  const std::vector<double> published = {.25, .0625, .015625, .00390625, .5, .125};
  const std::vector<double> slopes = AlibiSlopes(AlibiParams{}, 6);
  ASSERT_EQ(slopes.size(), published.size());
  for (size_t h = 0; h < published.size(); ++h) {
    ExpectRelNear(slopes[h], published[h], kExactRelTolerance, "h=" + std::to_string(h));
  }
}

TEST(AlibiSlopesTest, EightHeadsAreHalfToOneOver256) {
  const std::vector<double> slopes = AlibiSlopes(AlibiParams{}, 8);
  ASSERT_EQ(slopes.size(), 8u);
  for (int h = 0; h < 8; ++h) {
    ExpectRelNear(slopes[h], 1.0 / static_cast<double>(int64_t{2} << h), kExactRelTolerance,
                  "h=" + std::to_string(h));
  }
}

TEST(AlibiSlopesTest, MaxBiasSixteenWithEightHeadsIsTwoToMinusTwoThroughMinusSixteen) {
  AlibiParams params;
  params.max_bias = 16.0;
  const std::vector<double> slopes = AlibiSlopes(params, 8);
  ASSERT_EQ(slopes.size(), 8u);
  for (int h = 0; h < 8; ++h) {
    ExpectRelNear(slopes[h], std::ldexp(1.0, -2 * (h + 1)), kExactRelTolerance,
                  "h=" + std::to_string(h));
  }
}

TEST(AlibiSlopesTest, OneHeadIsTwoToMinusMaxBias) {
  const std::vector<double> slopes = AlibiSlopes(AlibiParams{}, 1);
  ASSERT_EQ(slopes.size(), 1u);
  ExpectRelNear(slopes[0], 1.0 / 256.0, kExactRelTolerance, "n=1");
}

TEST(AlibiSlopesTest, EveryHeadCountMatchesThePressReferenceCode) {
  for (double max_bias : {8.0, 4.0, 16.0, 0.5}) {
    AlibiParams params;
    params.max_bias = max_bias;
    for (int64_t n = 1; n <= 80; ++n) {
      const std::vector<double> slopes = AlibiSlopes(params, n);
      const std::vector<double> expected = ReferenceSlopes(max_bias, n);
      ASSERT_EQ(slopes.size(), expected.size()) << "n=" << n;
      for (int64_t h = 0; h < n; ++h) {
        ExpectRelNear(slopes[h], expected[h], 1e-13,
                      "max_bias=" + std::to_string(max_bias) + " n=" + std::to_string(n) +
                          " h=" + std::to_string(h));
        EXPECT_GT(slopes[h], 0.0);
        EXPECT_LT(slopes[h], 1.0);
      }
    }
  }
}

struct BiasCase {
  int64_t heads;
  double max_bias;
  std::vector<int64_t> q_positions;
  std::vector<int64_t> k_positions;
  bool causal;
};

void PrintTo(const BiasCase& c, std::ostream* os) {
  *os << "heads=" << c.heads << " max_bias=" << c.max_bias << " q_len=" << c.q_positions.size()
      << " kv_len=" << c.k_positions.size() << " causal=" << c.causal;
}

class AlibiBiasTest : public ::testing::TestWithParam<BiasCase> {};

TEST_P(AlibiBiasTest, MatchesDoublePrecisionReference) {
  const BiasCase& c = GetParam();
  AlibiParams params;
  params.max_bias = c.max_bias;
  ASSERT_TRUE(ValidateAlibi(params, c.heads).ok());
  const std::vector<float> bias = Bias(params, c.heads, c.q_positions, c.k_positions, c.causal);
  const std::vector<double> slopes = ReferenceSlopes(c.max_bias, c.heads);
  const int64_t q_len = static_cast<int64_t>(c.q_positions.size());
  const int64_t kv_len = static_cast<int64_t>(c.k_positions.size());
  for (int64_t h = 0; h < c.heads; ++h) {
    for (int64_t i = 0; i < q_len; ++i) {
      for (int64_t j = 0; j < kv_len; ++j) {
        const double d =
            static_cast<double>(c.q_positions[i]) - static_cast<double>(c.k_positions[j]);
        // Press et al.: −m·(i − j) causal (written for k_j > p_i too), −m·|i − j| otherwise.
        const double expected = -slopes[h] * (c.causal ? d : std::fabs(d));
        ExpectRelNear(
            bias[(h * q_len + i) * kv_len + j], expected, kBiasRelTolerance,
            "h=" + std::to_string(h) + " i=" + std::to_string(i) + " j=" + std::to_string(j));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Maps, AlibiBiasTest,
    ::testing::Values(
        BiasCase{8, 8.0, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, true},
        BiasCase{8, 8.0, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, false},
        BiasCase{12, 8.0, {5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7}, true},  // bottom-right decode
        BiasCase{6, 8.0, {3, 0, 9}, {7, 2, 2, 11}, false},             // arbitrary position ids
        BiasCase{3, 16.0, {1000, 4097}, {0, 17, 4097, 5000}, true},    // long distances
        BiasCase{5, 0.5, {2}, {0, 1, 2, 3}, false}));

TEST(AlibiBiasTest, ZeroOnTheDiagonalAndLinearInDistance) {
  const std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5, 6};
  for (bool causal : {true, false}) {
    const std::vector<float> bias = Bias(AlibiParams{}, 4, pos, pos, causal);
    const int64_t n = static_cast<int64_t>(pos.size());
    for (int64_t h = 0; h < 4; ++h) {
      const float* head = bias.data() + h * n * n;
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(head[i * n + i], 0.0f) << "h=" << h << " i=" << i;
        // One step further back always costs one more slope (exact in float: slopes are 2^-k).
        for (int64_t j = 1; j <= i; ++j) {
          EXPECT_EQ(head[i * n + j - 1] - head[i * n + j], head[1 * n + 0] - head[1 * n + 1]);
        }
      }
    }
  }
}

TEST(AlibiBiasTest, BidirectionalIsSymmetricAndNeverPositive) {
  const std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  const int64_t n = static_cast<int64_t>(pos.size());
  const std::vector<float> bias = Bias(AlibiParams{}, 12, pos, pos, /*causal=*/false);
  for (int64_t h = 0; h < 12; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_EQ(bias[(h * n + i) * n + j], bias[(h * n + j) * n + i]);
        EXPECT_LE(bias[(h * n + i) * n + j], 0.0f);
      }
    }
  }
}

TEST(AlibiBiasTest, CausalWritesThePlainFormulaAboveTheDiagonal) {
  // Entries with k_j > p_i are masked by the attention mask; the bias holds −m·(p_i − k_j) > 0.
  const std::vector<float> bias = Bias(AlibiParams{}, 1, {0}, {0, 1, 2}, /*causal=*/true);
  EXPECT_THAT(bias, ::testing::ElementsAre(0.0f, 1.0f / 256, 2.0f / 256));
}

TEST(AlibiBiasTest, HeadsAreScaledCopiesOfTheDistanceMap) {
  // bias[h] = m_h · bias[h'] / m_h' for every pair of heads, with the published n=6 slopes.
  const std::vector<int64_t> qp = {4, 5}, kp = {0, 1, 2, 3, 4, 5};
  const std::vector<float> bias = Bias(AlibiParams{}, 6, qp, kp, /*causal=*/true);
  const std::vector<double> published = {.25, .0625, .015625, .00390625, .5, .125};
  for (int64_t h = 0; h < 6; ++h) {
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < 6; ++j) {
        EXPECT_EQ(bias[(h * 2 + i) * 6 + j], static_cast<float>(-published[h] * (qp[i] - kp[j])));
      }
    }
  }
}

TEST(AlibiValidationTest, InvalidParametersAreNamed) {
  AlibiParams params;
  EXPECT_TRUE(ValidateAlibi(params, 12).ok());
  params.max_bias = 0.0;
  EXPECT_THAT(std::string(ValidateAlibi(params, 8).message()),
              HasSubstr("alibi.max_bias=0 must be finite and > 0"));
  params.max_bias = -2.0;
  EXPECT_THAT(std::string(ValidateAlibi(params, 8).message()), HasSubstr("alibi.max_bias=-2"));
  params.max_bias = std::nan("");
  EXPECT_THAT(std::string(ValidateAlibi(params, 8).message()), HasSubstr("alibi.max_bias=nan"));
  params.max_bias = INFINITY;
  EXPECT_EQ(ValidateAlibi(params, 8).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ValidateAlibi(AlibiParams{}, 0).message()),
              HasSubstr("num_heads=0 must be >= 1"));
}

}  // namespace
}  // namespace attnserve
