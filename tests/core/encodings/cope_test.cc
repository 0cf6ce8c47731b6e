// CoPE against an independent double-precision transcription of the paper's reference code
// (Golovneva et al. 2024, Listing 1), hand-computed interpolation values and counting properties.
#include "core/encodings/cope.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// The implementation works in double and rounds each score once: 1e-6 relative to
// max(1, |expected|) covers that rounding (float's half-ulp is 6e-8 relative).
constexpr double kRelTolerance = 1e-6;

void ExpectScoreNear(float actual, double expected, const std::string& where) {
  if (std::isinf(expected)) {
    EXPECT_EQ(actual, expected) << where;
    return;
  }
  EXPECT_NEAR(actual, expected, kRelTolerance * std::max(1.0, std::fabs(expected))) << where;
}

// The paper's CoPE.forward, transcribed step by step in double:
//   gates = sigmoid(attn_logits)
//   pos = gates.flip(-1).cumsum(dim=-1).flip(-1)
//   pos = pos.clamp(max=npos_max - 1)
//   pos_ceil, pos_floor = pos.ceil().long(), pos.floor().long()
//   logits_int = query @ pos_emb            (pos_emb here is the transpose: [npos_max, head_dim])
//   w = pos - pos_floor
//   return logits_ceil * w + logits_floor * (1 - w)
// and the caller's attn_logits += cope(query, attn_logits). `clamped` counts clamped positions.
std::vector<double> ReferenceCope(const std::vector<float>& scores, const std::vector<float>& q,
                                  const std::vector<float>& pos_emb, int64_t q_len, int64_t kv_len,
                                  int64_t head_dim, int64_t npos_max, int* clamped) {
  *clamped = 0;
  std::vector<double> out(q_len * kv_len);
  for (int64_t i = 0; i < q_len; ++i) {
    std::vector<double> gates(kv_len);
    for (int64_t j = 0; j < kv_len; ++j) {
      gates[j] = 1.0 / (1.0 + std::exp(-double{scores[i * kv_len + j]}));
    }
    std::vector<double> flipped(gates.rbegin(), gates.rend());
    for (int64_t t = 1; t < kv_len; ++t) flipped[t] += flipped[t - 1];  // cumsum
    std::vector<double> pos(flipped.rbegin(), flipped.rend());
    std::vector<double> logits_int(npos_max);
    for (int64_t k = 0; k < npos_max; ++k) {
      double dot = 0;
      for (int64_t c = 0; c < head_dim; ++c) {
        dot += double{q[i * head_dim + c]} * pos_emb[k * head_dim + c];
      }
      logits_int[k] = dot;
    }
    for (int64_t j = 0; j < kv_len; ++j) {
      double p = pos[j];
      if (p > npos_max - 1) {
        p = static_cast<double>(npos_max - 1);
        ++*clamped;
      }
      const int64_t ceil_p = static_cast<int64_t>(std::ceil(p));
      const int64_t floor_p = static_cast<int64_t>(std::floor(p));
      const double w = p - static_cast<double>(floor_p);
      out[i * kv_len + j] =
          double{scores[i * kv_len + j]} + logits_int[ceil_p] * w + logits_int[floor_p] * (1 - w);
    }
  }
  return out;
}

std::vector<float> Random(int64_t n, double scale, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, static_cast<float>(scale));
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Random scores with a bottom-right causal mask: query i sees keys j <= i + kv_len − q_len.
std::vector<float> CausalScores(int64_t q_len, int64_t kv_len, double scale, std::mt19937& rng) {
  std::vector<float> scores = Random(q_len * kv_len, scale, rng);
  for (int64_t i = 0; i < q_len; ++i) {
    for (int64_t j = i + kv_len - q_len + 1; j < kv_len; ++j) scores[i * kv_len + j] = kNegInf;
  }
  return scores;
}

CopeParams Params(int64_t npos_max, std::vector<float> pos_emb) {
  CopeParams params;
  params.npos_max = npos_max;
  params.pos_emb = std::make_shared<const std::vector<float>>(std::move(pos_emb));
  return params;
}

struct RandomCase {
  int64_t q_len;
  int64_t kv_len;
  int64_t head_dim;
  int64_t npos_max;
  double score_scale;
  bool expect_clamp;
  uint32_t seed;
};

void PrintTo(const RandomCase& c, std::ostream* os) {
  *os << "q_len=" << c.q_len << " kv_len=" << c.kv_len << " head_dim=" << c.head_dim
      << " npos_max=" << c.npos_max << " score_scale=" << c.score_scale << " seed=" << c.seed;
}

class CopeRandomTest : public ::testing::TestWithParam<RandomCase> {};

TEST_P(CopeRandomTest, MatchesPaperReferenceCode) {
  const RandomCase& c = GetParam();
  std::mt19937 rng(c.seed);
  const std::vector<float> q = Random(c.q_len * c.head_dim, 1.0, rng);
  const CopeParams params = Params(c.npos_max, Random(c.npos_max * c.head_dim, 1.0, rng));
  ASSERT_TRUE(ValidateCope(params, c.head_dim).ok());
  const std::vector<float> scores = CausalScores(c.q_len, c.kv_len, c.score_scale, rng);

  int clamped = 0;
  const std::vector<double> expected = ReferenceCope(scores, q, *params.pos_emb, c.q_len, c.kv_len,
                                                     c.head_dim, c.npos_max, &clamped);
  // The case is meant to reach (or to stay clear of) the npos_max − 1 clamp.
  if (c.expect_clamp) {
    EXPECT_GT(clamped, 0);
  } else {
    EXPECT_EQ(clamped, 0);
  }

  std::vector<float> actual = scores;
  AddCopeLogits(params, q.data(), c.q_len, c.kv_len, c.head_dim, actual.data());
  for (int64_t i = 0; i < c.q_len; ++i) {
    for (int64_t j = 0; j < c.kv_len; ++j) {
      ExpectScoreNear(actual[i * c.kv_len + j], expected[i * c.kv_len + j],
                      "i=" + std::to_string(i) + " j=" + std::to_string(j));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CopeRandomTest,
                         ::testing::Values(
                             // Square causal, fractional positions well inside the table.
                             RandomCase{7, 7, 8, 16, 2.0, false, 1},
                             // Bottom-right (decode-like) window, kv_len > q_len.
                             RandomCase{4, 11, 16, 16, 1.5, false, 2},
                             // Small table: the long rows clamp to npos_max − 1 = 2 near j = 0.
                             RandomCase{9, 9, 4, 3, 1.0, true, 3},
                             // npos_max = 1: every position clamps to 0 (only e[0] is ever read).
                             RandomCase{5, 6, 3, 1, 1.0, true, 4},
                             // Large scores (gates near 0/1), head_dim 64.
                             RandomCase{12, 20, 64, 24, 8.0, false, 5}));

// Identity embeddings (head_dim 1, q = 1, e[k] = k) make the added logit equal the interpolated
// position itself, so positions can be read back as (scores after) − (scores before).
std::vector<double> ReadPositions(const std::vector<float>& scores, int64_t q_len, int64_t kv_len,
                                  int64_t npos_max) {
  std::vector<float> emb(npos_max);
  for (int64_t k = 0; k < npos_max; ++k) emb[k] = static_cast<float>(k);
  const CopeParams params = Params(npos_max, emb);
  const std::vector<float> q(q_len, 1.0f);
  std::vector<float> after = scores;
  AddCopeLogits(params, q.data(), q_len, kv_len, 1, after.data());
  std::vector<double> positions(after.size());
  for (size_t n = 0; n < after.size(); ++n) {
    positions[n] = std::isinf(scores[n]) ? scores[n] : double{after[n]} - scores[n];
  }
  return positions;
}

TEST(CopeTest, InterpolatesBetweenIntegerPositions) {
  // Gates 0.5, 0.5, 0.25 (scores 0, 0, ln(1/3)) give positions 1.25, 0.75, 0.25. With e[k] = k²
  // (head_dim 1, q = 2) the interpolated logits are 2·(0.75·1 + 0.25·4) = 3.5,
  // 2·(0.25·0 + 0.75·1) = 1.5 and 2·(0.75·0 + 0.25·1) = 0.5; rounding to the nearest position or
  // evaluating e at p (2·p²) would give other numbers.
  const CopeParams params = Params(4, {0.0f, 1.0f, 4.0f, 9.0f});
  const float third = static_cast<float>(std::log(1.0 / 3.0));
  std::vector<float> scores = {0.0f, 0.0f, third};
  const float q = 2.0f;
  AddCopeLogits(params, &q, 1, 3, 1, scores.data());
  ExpectScoreNear(scores[0], 0.0 + 3.5, "j=0");
  ExpectScoreNear(scores[1], 0.0 + 1.5, "j=1");
  ExpectScoreNear(scores[2], double{third} + 0.5, "j=2");
}

TEST(CopeTest, ClampsAtTheLastEmbedding) {
  // Five gates of 0.5: positions 2.5, 2, 1.5, 1, 0.5, clamped to npos_max − 1 = 2.
  const std::vector<float> scores(5, 0.0f);
  const std::vector<double> positions = ReadPositions(scores, 1, 5, 3);
  const std::vector<double> expected = {2.0, 2.0, 1.5, 1.0, 0.5};
  for (int64_t j = 0; j < 5; ++j) EXPECT_NEAR(positions[j], expected[j], 1e-6) << "j=" << j;
}

TEST(CopeTest, OpenGatesCountEveryTokenFromJToI) {
  // Scores of 40 give gates 1 − 4e-18: p_ij = Σ_{t=j}^{i} g_it = i − j + 1 (the paper's
  // relative position counting both ends) on the causal window; the masked future adds nothing.
  const int64_t q_len = 6, kv_len = 9, offset = kv_len - q_len;
  std::vector<float> scores(q_len * kv_len, 40.0f);
  for (int64_t i = 0; i < q_len; ++i) {
    for (int64_t j = i + offset + 1; j < kv_len; ++j) scores[i * kv_len + j] = kNegInf;
  }
  const std::vector<double> positions = ReadPositions(scores, q_len, kv_len, 16);
  for (int64_t i = 0; i < q_len; ++i) {
    for (int64_t j = 0; j < kv_len; ++j) {
      const double expected = j <= i + offset ? static_cast<double>(i + offset - j + 1)
                                              : -std::numeric_limits<double>::infinity();
      // The scores are 40 + p in float: 1e-5 absolute.
      if (std::isinf(expected)) {
        EXPECT_EQ(positions[i * kv_len + j], expected);
      } else {
        EXPECT_NEAR(positions[i * kv_len + j], expected, 1e-5) << "i=" << i << " j=" << j;
      }
    }
  }
}

TEST(CopeTest, OnlyTheDiagonalGateOpenGivesPositionOneOnTheWindow) {
  // Gates 1 on the diagonal (score 40) and ≈0 elsewhere on the window (score −40, gate 4e-18):
  // every visible key j <= i has p_ij = g_ii = 1 (the sum runs from j through i, so it always
  // includes the open diagonal gate); masked keys stay −inf.
  const int64_t n = 6;
  std::vector<float> scores(n * n, kNegInf);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) scores[i * n + j] = i == j ? 40.0f : -40.0f;
  }
  const std::vector<double> positions = ReadPositions(scores, n, n, 8);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (j > i) {
        EXPECT_EQ(positions[i * n + j], -std::numeric_limits<double>::infinity());
      } else {
        EXPECT_NEAR(positions[i * n + j], 1.0, 1e-5) << "i=" << i << " j=" << j;
      }
    }
  }
}

TEST(CopeTest, ClosedGatesGivePositionZero) {
  // Gates ≈0 everywhere (score −40): every position is ≈0, so only e[0] is read.
  const std::vector<float> scores(4, -40.0f);
  const std::vector<double> positions = ReadPositions(scores, 1, 4, 5);
  for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(positions[j], 0.0, 1e-5) << "j=" << j;
}

TEST(CopeTest, FullyMaskedRowStaysMinusInfinity) {
  const CopeParams params = Params(2, {1.0f, 2.0f, 3.0f, 4.0f});
  const std::vector<float> q = {1.0f, 1.0f};
  std::vector<float> scores(3, kNegInf);
  AddCopeLogits(params, q.data(), 1, 3, 2, scores.data());
  EXPECT_THAT(scores, ::testing::Each(kNegInf));
}

TEST(CopeValidationTest, InvalidParametersAreNamed) {
  EXPECT_TRUE(ValidateCope(Params(4, std::vector<float>(32)), 8).ok());
  EXPECT_THAT(std::string(ValidateCope(Params(0, {}), 8).message()),
              HasSubstr("cope.npos_max=0 must be >= 1"));
  EXPECT_THAT(std::string(ValidateCope(Params(-3, {}), 8).message()),
              HasSubstr("cope.npos_max=-3"));
  CopeParams missing;
  missing.npos_max = 4;
  EXPECT_THAT(std::string(ValidateCope(missing, 8).message()), HasSubstr("cope.pos_emb"));
  EXPECT_THAT(std::string(ValidateCope(Params(4, std::vector<float>(10)), 8).message()),
              HasSubstr("cope.pos_emb has 10 values; must be npos_max·head_dim=32"));
  EXPECT_THAT(std::string(ValidateCope(Params(4, std::vector<float>(32)), 0).message()),
              HasSubstr("head_dim=0 must be >= 1"));
}

}  // namespace
}  // namespace attnserve
