// The dispatch over encodings: learned tables, RoPE through EncodeEmbeddings, score encodings
// inside attention against a double-precision reference.
#include "core/encodings/positional_encoding.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/attention/scaled_dot_product_attention.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;
using ::attnserve::testing::RelativeError;
using ::testing::HasSubstr;

LearnedParams LearnedTable(int64_t rows, int64_t dim) {
  auto table = std::make_shared<std::vector<float>>(rows * dim);
  for (int64_t i = 0; i < rows * dim; ++i) (*table)[i] = 0.001f * static_cast<float>(i);
  return LearnedParams{table};
}

TEST(LearnedEncodingTest, AddsTheRowOfEachPosition) {
  const int64_t dim = 4;
  const LearnedParams learned = LearnedTable(10, dim);
  const std::vector<float> x = RandomVector(3 * dim, 1);
  const std::vector<int64_t> positions = {9, 0, 4};
  std::vector<float> out(x.size());
  ASSERT_TRUE(
      EncodeEmbeddings(learned, x.data(), positions.data(), 3, 1, dim, 2.0f, 0, out.data()).ok());
  for (int64_t t = 0; t < 3; ++t) {
    for (int64_t c = 0; c < dim; ++c) {
      EXPECT_FLOAT_EQ(out[t * dim + c], 2.0f * x[t * dim + c] + 0.001f * (positions[t] * dim + c));
    }
  }
}

TEST(LearnedEncodingTest, PositionPastTheTableIsOutOfRangeNamingTheLimit) {
  const LearnedParams learned = LearnedTable(10, 2);
  const std::vector<float> x(4);
  std::vector<float> out(4);
  const std::vector<int64_t> positions = {9, 10};
  absl::Status status =
      EncodeEmbeddings(learned, x.data(), positions.data(), 2, 1, 2, 1.0f, 0, out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(status.message()), HasSubstr("position 10"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("[0, 10)"));
  EXPECT_EQ(ValidateEncoding(LearnedParams{}, 2, 1, 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(EncodeEmbeddingsTest, RopeRotatesEachHeadLikeApplyRope) {
  const int64_t tokens = 5, heads = 3, hd = 8;
  const std::vector<float> x = RandomVector(tokens * heads * hd, 2);
  const std::vector<int64_t> positions = {0, 3, 7, 1, 100};
  RopeParams rope;
  rope.layout = RopeLayout::kInterleaved;
  std::vector<float> via_dispatch(x.size()), direct = x;
  ASSERT_TRUE(EncodeEmbeddings(rope, x.data(), positions.data(), tokens, heads, hd, 1.0f, 0,
                               via_dispatch.data())
                  .ok());
  ASSERT_TRUE(ApplyRope(rope, direct.data(), positions.data(), tokens, heads, hd, 0).ok());
  EXPECT_EQ(via_dispatch, direct);
}

TEST(EncodeEmbeddingsTest, ScoreEncodingsHaveNoEmbeddingForm) {
  const std::vector<float> x(8);
  std::vector<float> out(8);
  const std::vector<int64_t> positions = {0, 1};
  EXPECT_EQ(EncodeEmbeddings(AlibiParams{}, x.data(), positions.data(), 2, 2, 2, 1.0f, 0,
                             out.data())
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bias(2 * 2 * 2);
  EXPECT_THAT(std::string(ScoreBiasMap(CopeParams{}, 2, positions.data(), 2, positions.data(), 2,
                                       false, bias.data())
                              .message()),
              HasSubstr("no fixed score bias"));
}

// ALiBi inside attention: softmax(q·kᵀ/√hd − m_h·|p_i − k_j|)·v, against a double reference with
// the slopes written out from Press et al. for 4 heads (2^-2, 2^-4, 2^-6, 2^-8).
TEST(ScoreEncodingInAttentionTest, AlibiMatchesDoubleReference) {
  const int64_t B = 2, H = 4, Sq = 3, Sk = 7, hd = 16;
  const auto q = RandomVector(B * H * Sq * hd, 3);
  const auto k = RandomVector(B * H * Sk * hd, 4);
  const auto v = RandomVector(B * H * Sk * hd, 5);
  SdpaOptions options;
  options.encoding = AlibiParams{};
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < Sq; ++i) options.q_positions.push_back(10 * b + Sk - Sq + i);
    for (int64_t j = 0; j < Sk; ++j) options.k_positions.push_back(10 * b + j);
  }
  std::vector<float> out(q.size()), probs(B * H * Sq * Sk);
  ASSERT_TRUE(ScaledDotProductAttention({B, H, H, Sq, Sk, hd}, options, q.data(), k.data(),
                                        v.data(), out.data(), probs.data())
                  .ok());

  const double slopes[4] = {0.25, 0.0625, 0.015625, 0.00390625};
  std::vector<double> expected(out.size(), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < Sq; ++i) {
        std::vector<double> logits(Sk);
        double max_logit = -1e300, total = 0;
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < hd; ++c) {
            dot += double{q[((b * H + h) * Sq + i) * hd + c]} * k[((b * H + h) * Sk + j) * hd + c];
          }
          const double distance = std::abs(double(options.q_positions[b * Sq + i]) -
                                           double(options.k_positions[b * Sk + j]));
          logits[j] = dot / std::sqrt(double(hd)) - slopes[h] * distance;
          max_logit = std::max(max_logit, logits[j]);
        }
        for (double& logit : logits) total += std::exp(logit - max_logit);
        for (int64_t j = 0; j < Sk; ++j) {
          const double p = std::exp(logits[j] - max_logit) / total;
          for (int64_t c = 0; c < hd; ++c) {
            expected[((b * H + h) * Sq + i) * hd + c] += p * v[((b * H + h) * Sk + j) * hd + c];
          }
        }
      }
    }
  }
  EXPECT_LT(RelativeError(out, expected), 1e-5);
}

TEST(ScoreEncodingInAttentionTest, RopeMakesAttentionTranslationInvariant) {
  // Shifting every position by the same amount leaves RoPE attention unchanged.
  const int64_t H = 2, Hkv = 1, S = 6, hd = 8;
  const auto q = RandomVector(H * S * hd, 6);
  const auto k = RandomVector(Hkv * S * hd, 7);
  const auto v = RandomVector(Hkv * S * hd, 8);
  auto run = [&](int64_t offset) {
    SdpaOptions options;
    options.causal = true;
    options.encoding = RopeParams{};
    for (int64_t t = 0; t < S; ++t) options.q_positions.push_back(offset + t);
    options.k_positions = options.q_positions;
    std::vector<float> out(q.size());
    EXPECT_TRUE(ScaledDotProductAttention({1, H, Hkv, S, S, hd}, options, q.data(), k.data(),
                                          v.data(), out.data(), nullptr)
                    .ok());
    return out;
  };
  const std::vector<float> at_zero = run(0);
  const std::vector<double> reference(at_zero.begin(), at_zero.end());
  EXPECT_LT(RelativeError(run(1000), reference), 1e-5);
}

TEST(ScoreEncodingInAttentionTest, AdditiveEncodingsAreRejectedInsideAttention) {
  SdpaOptions options;
  options.encoding = SinusoidalParams{};
  EXPECT_THAT(std::string(ValidateSdpa({1, 1, 1, 1, 1, 2}, options).message()),
              HasSubstr("encoding.sinusoidal is added to embeddings"));
}

}  // namespace
}  // namespace attnserve
