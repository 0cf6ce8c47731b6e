// oneDNN scaled dot-product attention against the double-precision reference.
#include "core/scaled_dot_product_attention.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;
using ::attnserve::testing::ReferenceSdpa;
using ::attnserve::testing::RelativeError;
using ::testing::HasSubstr;

// f32 accumulation over hd ≤ 128 and Sk ≤ 200 stays well inside this (issue #2's bound).
constexpr double kRelativeTolerance = 1e-5;

SdpaOptions MaskOptions(bool causal, std::vector<int64_t> key_lengths,
                        std::optional<float> scale = {}) {
  SdpaOptions options;
  options.causal = causal;
  options.key_lengths = std::move(key_lengths);
  options.scale = scale;
  return options;
}

struct SdpaCase {
  const char* name;
  SdpaShape shape;
  bool causal;
  std::vector<int64_t> key_lengths;
  std::optional<float> scale;
};

class SdpaReferenceTest : public ::testing::TestWithParam<SdpaCase> {};

TEST_P(SdpaReferenceTest, MatchesDoublePrecisionReference) {
  const SdpaCase& c = GetParam();
  const SdpaShape& s = c.shape;
  const auto q = RandomVector(s.batch * s.num_heads * s.q_len * s.head_dim, 1);
  const auto k = RandomVector(s.batch * s.num_kv_heads * s.kv_len * s.head_dim, 2);
  const auto v = RandomVector(s.batch * s.num_kv_heads * s.kv_len * s.head_dim, 3);
  const SdpaOptions options = MaskOptions(c.causal, c.key_lengths, c.scale);
  std::vector<float> out(q.size()), probs(s.batch * s.num_heads * s.q_len * s.kv_len);
  ASSERT_TRUE(ScaledDotProductAttention(s, options, q.data(), k.data(), v.data(), out.data(),
                                        probs.data())
                  .ok());
  const double scale = c.scale.value_or(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
  const auto ref = ReferenceSdpa(q, k, v, s.batch, s.num_heads, s.num_kv_heads, s.q_len, s.kv_len,
                                 s.head_dim, scale, c.causal, c.key_lengths);
  EXPECT_LT(RelativeError(out, ref.out), kRelativeTolerance);
  EXPECT_LT(RelativeError(probs, ref.probs), kRelativeTolerance);
  for (size_t i = 0; i < probs.size(); ++i) {
    ASSERT_TRUE(std::isfinite(probs[i])) << "probs[" << i << "]";
    if (ref.probs[i] == 0.0) {
      ASSERT_EQ(probs[i], 0.0f) << "masked probs[" << i << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SdpaReferenceTest,
    ::testing::Values(
        SdpaCase{"Plain", {2, 4, 4, 7, 7, 16}, false, {}, {}},
        SdpaCase{"Causal", {2, 4, 4, 9, 9, 32}, true, {}, {}},
        SdpaCase{"CausalBottomRightKvLonger", {1, 2, 2, 3, 11, 8}, true, {}, {}},
        SdpaCase{"CausalQueryLongerMasksFirstRows", {1, 2, 2, 6, 4, 8}, true, {}, {}},
        SdpaCase{"KeyLengths", {3, 2, 2, 5, 8, 16}, false, {8, 3, 1}, {}},
        SdpaCase{"KeyLengthZeroGivesZeroRows", {2, 2, 2, 4, 4, 8}, false, {0, 4}, {}},
        SdpaCase{"CausalAndKeyLengths", {2, 4, 2, 6, 6, 16}, true, {2, 5}, {}},
        SdpaCase{"GroupedQuery", {2, 8, 2, 5, 13, 32}, false, {}, {}},
        SdpaCase{"MultiQueryCausal", {1, 6, 1, 10, 10, 64}, true, {}, {}},
        SdpaCase{"ExplicitScale", {1, 2, 2, 4, 6, 16}, false, {}, 1.0f},
        SdpaCase{"LongerSequence", {1, 2, 2, 200, 200, 128}, true, {}, {}},
        SdpaCase{"SingleToken", {1, 1, 1, 1, 1, 1}, false, {}, {}}),
    [](const ::testing::TestParamInfo<SdpaCase>& info) { return info.param.name; });

TEST(SdpaTest, RowWithNoVisibleKeyIsZeroNotNan) {
  const SdpaShape s{1, 1, 1, 2, 2, 4};
  const auto q = RandomVector(8, 4), k = RandomVector(8, 5), v = RandomVector(8, 6);
  std::vector<float> out(8, 123.0f), probs(4, 123.0f);
  ASSERT_TRUE(
      ScaledDotProductAttention(s, MaskOptions(false, {0}), q.data(), k.data(), v.data(),
                                out.data(), probs.data())
          .ok());
  EXPECT_THAT(out, ::testing::Each(0.0f));
  EXPECT_THAT(probs, ::testing::Each(0.0f));
}

TEST(SdpaTest, InvalidShapesAndOptionsAreNamed) {
  const float x[64] = {};
  float out[64];
  auto message = [&](SdpaShape s, SdpaOptions o) {
    return std::string(ScaledDotProductAttention(s, o, x, x, x, out, nullptr).message());
  };
  EXPECT_THAT(message({1, 6, 4, 1, 1, 1}, {}), HasSubstr("num_kv_heads=4 must divide num_heads=6"));
  EXPECT_THAT(message({1, 1, 1, 0, 1, 1}, {}), HasSubstr("q_len=0"));
  EXPECT_THAT(message({2, 1, 1, 1, 4, 1}, MaskOptions(false, {1})), HasSubstr("key_lengths has 1"));
  EXPECT_THAT(message({1, 1, 1, 1, 4, 1}, MaskOptions(false, {5})), HasSubstr("key_lengths[0]=5"));
  EXPECT_THAT(message({1, 1, 1, 1, 1, 1}, MaskOptions(false, {}, INFINITY)), HasSubstr("scale=inf"));
}

}  // namespace
}  // namespace attnserve
