// The whole layer (encoding, projections, attention, output projection) against a
// double-precision reference written from the torch.nn.Linear / multi-head definitions.
#include "core/attention/multi_head_attention.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"
#include "tests/core/test_encodings.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;
using ::attnserve::testing::ReferenceLinear;
using ::attnserve::testing::ReferenceSdpa;
using ::attnserve::testing::RelativeError;
using ::attnserve::testing::SplitHeads;
using ::testing::HasSubstr;

constexpr double kRelativeTolerance = 1e-5;

struct LayerCase {
  const char* name;
  int64_t d, heads, kv_heads, head_dim;
  bool biases;
  bool sinusoidal;
  bool cross;
  bool causal;
  std::vector<int64_t> key_lengths;
  int64_t batch, q_len, kv_len;
  ComputeType compute = ComputeType::kFloat32;
};

// bf16 products (projections with bf16 weights and inputs, attention on bf16 operands) keep 8
// significant bits per operand.
constexpr double kBfloat16RelativeTolerance = 1e-2;

class MultiHeadAttentionTest : public ::testing::TestWithParam<LayerCase> {};

TEST_P(MultiHeadAttentionTest, MatchesDoublePrecisionReference) {
  const LayerCase& c = GetParam();
  const int64_t hd = c.head_dim;
  AttentionConfig config;
  config.d_model = c.d;
  config.num_heads = c.heads;
  config.num_kv_heads = c.kv_heads;
  config.head_dim = c.head_dim;
  if (c.sinusoidal) config.encoding = SinusoidalParams{};

  AttentionWeights w;
  const float ws = 1.0f / std::sqrt(static_cast<float>(c.d));
  w.q_proj_weight = RandomVector(c.heads * hd * c.d, 11, ws);
  w.k_proj_weight = RandomVector(c.kv_heads * hd * c.d, 12, ws);
  w.v_proj_weight = RandomVector(c.kv_heads * hd * c.d, 13, ws);
  w.o_proj_weight = RandomVector(c.d * c.heads * hd, 14, ws);
  if (c.biases) {
    w.q_proj_bias = RandomVector(c.heads * hd, 15, 0.1f);
    w.k_proj_bias = RandomVector(c.kv_heads * hd, 16, 0.1f);
    w.v_proj_bias = RandomVector(c.kv_heads * hd, 17, 0.1f);
    w.o_proj_bias = RandomVector(c.d, 18, 0.1f);
  }
  const AttentionWeights weights_copy = w;
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, std::move(w));
  ASSERT_TRUE(layer.ok()) << layer.status();

  const int64_t B = c.batch, Sq = c.q_len, Sk = c.cross ? c.kv_len : c.q_len;
  const auto query = RandomVector(B * Sq * c.d, 21);
  const auto context = RandomVector(B * Sk * c.d, 22);
  std::vector<int64_t> positions(B * Sq);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Sq; ++t) positions[b * Sq + t] = 3 * b + t;  // distinct per row

  AttendInputs inputs;
  inputs.query = query.data();
  inputs.batch = B;
  inputs.q_len = Sq;
  inputs.context = c.cross ? context.data() : nullptr;
  inputs.kv_len = Sk;
  inputs.positions = positions.data();
  inputs.causal = c.causal;
  inputs.key_lengths = c.key_lengths;
  inputs.compute = c.compute;
  std::vector<float> out(B * Sq * c.d), probs(B * c.heads * Sq * Sk);
  absl::Status status = (*layer)->Forward(inputs, out.data(), probs.data());
  ASSERT_TRUE(status.ok()) << status;

  // Reference: x = query + P (Vaswani formula), projections, SDPA, output projection.
  std::vector<double> x(query.begin(), query.end());
  if (c.sinusoidal) {
    for (int64_t t = 0; t < B * Sq; ++t)
      for (int64_t ch = 0; ch < c.d; ++ch) {
        const double angle = positions[t] / std::pow(10000.0, 2.0 * (ch / 2) / c.d);
        x[t * c.d + ch] += ch % 2 == 0 ? std::sin(angle) : std::cos(angle);
      }
  }
  const std::vector<double> kv_in =
      c.cross ? std::vector<double>(context.begin(), context.end()) : x;
  const auto q = SplitHeads(ReferenceLinear(x, B * Sq, c.d, weights_copy.q_proj_weight,
                                            weights_copy.q_proj_bias, c.heads * hd),
                            B, Sq, c.heads, hd);
  const auto k = SplitHeads(ReferenceLinear(kv_in, B * Sk, c.d, weights_copy.k_proj_weight,
                                            weights_copy.k_proj_bias, c.kv_heads * hd),
                            B, Sk, c.kv_heads, hd);
  const auto v = SplitHeads(ReferenceLinear(kv_in, B * Sk, c.d, weights_copy.v_proj_weight,
                                            weights_copy.v_proj_bias, c.kv_heads * hd),
                            B, Sk, c.kv_heads, hd);
  const auto attended = ReferenceSdpa(q, k, v, B, c.heads, c.kv_heads, Sq, Sk, hd,
                                      1.0 / std::sqrt(static_cast<double>(hd)), c.causal,
                                      c.key_lengths);
  // [B, H, Sq, hd] → [B, Sq, H·hd]
  std::vector<double> merged(B * Sq * c.heads * hd);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t s = 0; s < Sq; ++s)
        for (int64_t ch = 0; ch < hd; ++ch)
          merged[((b * Sq + s) * c.heads + h) * hd + ch] =
              attended.out[((b * c.heads + h) * Sq + s) * hd + ch];
  const auto expected = ReferenceLinear(merged, B * Sq, c.heads * hd, weights_copy.o_proj_weight,
                                        weights_copy.o_proj_bias, c.d);
  const bool bf16 = c.compute == ComputeType::kBfloat16;
  EXPECT_LT(RelativeError(out, expected), bf16 ? kBfloat16RelativeTolerance : kRelativeTolerance);
  EXPECT_LT(RelativeError(probs, attended.probs),
            bf16 ? kBfloat16RelativeTolerance : kRelativeTolerance);
  // And bf16 really ran: f32 products land within 1e-5.
  if (bf16) {
    EXPECT_GT(RelativeError(out, expected), 1e-4);
  }

  // Without probabilities the attention takes the tiled kernel (AMX for bf16 where the CPU has
  // it), and a second call reuses the first's rounded weights and buffers.
  std::vector<float> tiled(out.size());
  ASSERT_TRUE((*layer)->Forward(inputs, tiled.data(), nullptr).ok());
  ASSERT_TRUE((*layer)->Forward(inputs, tiled.data(), nullptr).ok());
  EXPECT_LT(RelativeError(tiled, expected), bf16 ? kBfloat16RelativeTolerance : kRelativeTolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Layers, MultiHeadAttentionTest,
    ::testing::Values(
        // The demo model's shape: d 512, 8 heads, biases, sinusoidal input encoding.
        LayerCase{"DemoShapeSinusoidal", 512, 8, 8, 64, true, true, false, false, {}, 2, 9, 9},
        LayerCase{"DemoShapeCausal", 512, 8, 8, 64, true, true, false, true, {}, 2, 9, 9},
        LayerCase{"GqaNoBias", 256, 8, 2, 32, false, false, false, true, {}, 2, 7, 7},
        LayerCase{"HeadDimNotDModelOverHeads", 96, 4, 2, 40, true, false, false, false, {}, 1, 5, 5},
        LayerCase{"KeyLengths", 64, 4, 4, 16, true, true, false, false, {5, 2}, 2, 5, 5},
        LayerCase{"CrossAttention", 128, 4, 4, 32, true, true, true, false, {}, 2, 3, 8},
        LayerCase{"CrossAttentionCausalPadded", 64, 2, 1, 32, false, false, true, true, {6, 4}, 2,
                  4, 6},
        LayerCase{"Bf16DemoShapeCausal", 512, 8, 8, 64, true, true, false, true, {}, 2, 40, 40,
                  ComputeType::kBfloat16},
        LayerCase{"Bf16GqaCrossPadded", 256, 8, 2, 32, false, false, true, false, {30, 17}, 2, 9,
                  30, ComputeType::kBfloat16}),
    [](const ::testing::TestParamInfo<LayerCase>& info) { return info.param.name; });

// Forward keeps its buffers per thread between calls (uninitialised, grown on demand): a call
// gives the same bits whatever calls of other sizes and kinds came before it on the thread.
TEST(MultiHeadAttentionBuffersTest, ResultDoesNotDependOnEarlierCalls) {
  AttentionConfig config;
  config.d_model = 32;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  AttentionWeights w;
  w.q_proj_weight = RandomVector(32 * 32, 31, 0.2f);
  w.k_proj_weight = RandomVector(16 * 32, 32, 0.2f);
  w.v_proj_weight = RandomVector(16 * 32, 33, 0.2f);
  w.o_proj_weight = RandomVector(32 * 32, 34, 0.2f);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, std::move(w));
  ASSERT_TRUE(layer.ok()) << layer.status();
  auto forward = [&](int64_t batch, int64_t q_len, int64_t kv_len, ComputeType compute) {
    const auto query = RandomVector(batch * q_len * 32, 41 + q_len);
    const auto context = RandomVector(batch * kv_len * 32, 42 + kv_len);
    std::vector<int64_t> positions(batch * q_len);
    for (int64_t i = 0; i < batch * q_len; ++i) positions[i] = i % q_len;
    AttendInputs inputs;
    inputs.query = query.data();
    inputs.batch = batch;
    inputs.q_len = q_len;
    inputs.context = kv_len > 0 ? context.data() : nullptr;
    inputs.kv_len = kv_len;
    inputs.positions = positions.data();
    inputs.compute = compute;
    std::vector<float> out(batch * q_len * 32);
    EXPECT_TRUE((*layer)->Forward(inputs, out.data(), nullptr).ok());
    return out;
  };
  const std::vector<float> first = forward(2, 37, 0, ComputeType::kFloat32);
  forward(1, 5, 300, ComputeType::kBfloat16);  // smaller queries, larger keys
  forward(3, 70, 0, ComputeType::kFloat32);     // larger everything
  EXPECT_EQ(forward(2, 37, 0, ComputeType::kFloat32), first);
}

TEST(MultiHeadAttentionCreateTest, RejectsInconsistentConfigAndWeights) {
  AttentionConfig config;
  config.d_model = 10;
  config.num_heads = 3;
  EXPECT_THAT(std::string(MultiHeadAttention::Create(config, {}).status().message()),
              HasSubstr("num_heads=3 must divide d_model=10"));
  config.num_heads = int64_t{1} << 21;  // products of the shape must never overflow
  EXPECT_THAT(std::string(MultiHeadAttention::Create(config, {}).status().message()),
              HasSubstr("num_heads=2097152 must be <= 1048576"));
  config.num_heads = 2;
  config.num_kv_heads = 3;
  EXPECT_THAT(std::string(MultiHeadAttention::Create(config, {}).status().message()),
              HasSubstr("num_kv_heads=3 must divide num_heads=2"));
  config.num_kv_heads = 0;
  AttentionWeights weights;
  weights.q_proj_weight.resize(100);
  weights.k_proj_weight.resize(100);
  weights.v_proj_weight.resize(99);
  weights.o_proj_weight.resize(100);
  EXPECT_THAT(std::string(MultiHeadAttention::Create(config, weights).status().message()),
              HasSubstr("v_proj.weight has 99 elements; expected 100"));
  weights.v_proj_weight.resize(100);
  weights.o_proj_bias.resize(3);
  EXPECT_THAT(std::string(MultiHeadAttention::Create(config, weights).status().message()),
              HasSubstr("o_proj.bias has 3 elements; expected 10"));
  weights.o_proj_bias.clear();
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, weights);
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ((*layer)->config().num_kv_heads, 2);
  EXPECT_EQ((*layer)->config().head_dim, 5);
}

}  // namespace
}  // namespace attnserve

namespace attnserve {
namespace {

// Decoding a sequence in steps of a few tokens gives what causal attention over the whole
// sequence gives (the definition of a correct K/V cache), for every kind of encoding.
class DecodeMatchesForwardTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DecodeMatchesForwardTest, StepsEqualCausalForwardOverThePrefix) {
  const int64_t d = 64, heads = 4, kv_heads = 2, hd = 16, length = 11;
  AttentionConfig config;
  config.d_model = d;
  config.num_heads = heads;
  config.num_kv_heads = kv_heads;
  config.encoding = ::attnserve::testing::TestEncoding(GetParam(), heads, hd, d);
  AttentionWeights w;
  w.q_proj_weight = ::attnserve::testing::RandomVector(heads * hd * d, 61, 0.125f);
  w.k_proj_weight = ::attnserve::testing::RandomVector(kv_heads * hd * d, 62, 0.125f);
  w.v_proj_weight = ::attnserve::testing::RandomVector(kv_heads * hd * d, 63, 0.125f);
  w.o_proj_weight = ::attnserve::testing::RandomVector(d * heads * hd, 64, 0.125f);
  w.q_proj_bias = ::attnserve::testing::RandomVector(heads * hd, 65, 0.1f);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, std::move(w));
  ASSERT_TRUE(layer.ok()) << layer.status();

  const std::vector<float> x = ::attnserve::testing::RandomVector(length * d, 66);
  std::vector<int64_t> positions(length);
  for (int64_t t = 0; t < length; ++t) positions[t] = t;
  AttendInputs whole;
  whole.query = x.data();
  whole.batch = 1;
  whole.q_len = length;
  whole.positions = positions.data();
  whole.causal = true;
  std::vector<float> expected(length * d);
  ASSERT_TRUE((*layer)->Forward(whole, expected.data(), nullptr).ok());

  KvCache cache;
  std::vector<float> stepped(length * d, std::numeric_limits<float>::quiet_NaN());
  for (int64_t start = 0, step = 3; start < length; start += step, step = step == 3 ? 1 : 3) {
    const int64_t n = std::min(step, length - start);
    DecodeInputs inputs;
    inputs.query = x.data() + start * d;
    inputs.new_tokens = n;
    absl::Status status = (*layer)->Decode(inputs, &cache, stepped.data() + start * d, nullptr);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(cache.length, start + n);
  }
  EXPECT_EQ(cache.k.size(), static_cast<size_t>(kv_heads * cache.capacity * hd));
  // Room grew geometrically from the first step's 3 tokens: 3, 6, 12.
  EXPECT_EQ(cache.capacity, 12);
  EXPECT_LT(RelativeError(stepped, std::vector<double>(expected.begin(), expected.end())), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Encodings, DecodeMatchesForwardTest,
                         ::testing::Values("none", "sinusoidal", "learned", "rope",
                                           "rope_dynamic_ntk", "alibi", "t5", "cope"));

TEST(KvCacheTest, RoomGrowsByItsOwnSizeUpTo1024TokensWithinTheLimit) {
  EXPECT_EQ(KvCache::GrownCapacity(0, 5), 5);        // the first step: what it needs
  EXPECT_EQ(KvCache::GrownCapacity(8, 8), 8);        // room enough: unchanged
  EXPECT_EQ(KvCache::GrownCapacity(8, 9), 16);       // doubled
  EXPECT_EQ(KvCache::GrownCapacity(8, 40), 40);      // or what the step needs, if more
  EXPECT_EQ(KvCache::GrownCapacity(4096, 4097), 5120);  // past 1024 tokens, by 1024
  EXPECT_EQ(KvCache::GrownCapacity(320, 321, 512), 512);  // never past the stream's limit
  EXPECT_EQ(KvCache::GrownCapacity(8, 9, 0), 16);          // 0: no limit
  EXPECT_EQ(KvCache::Bytes(10, 2, 4), 2 * 10 * 2 * 4 * 4);
}

TEST(DecodeTest, LearnedTableEndIsOutOfRangeAndLeavesTheCache) {
  AttentionConfig config;
  config.d_model = 8;
  config.num_heads = 2;
  config.encoding = LearnedParams{std::make_shared<std::vector<float>>(2 * 8, 0.5f)};
  AttentionWeights w;
  for (auto* m : {&w.q_proj_weight, &w.k_proj_weight, &w.v_proj_weight, &w.o_proj_weight}) {
    *m = ::attnserve::testing::RandomVector(64, 67);
  }
  auto layer = MultiHeadAttention::Create(config, std::move(w));
  ASSERT_TRUE(layer.ok());
  const std::vector<float> x(3 * 8, 1.0f);
  std::vector<float> out(3 * 8);
  KvCache cache;
  DecodeInputs inputs;
  inputs.query = x.data();
  inputs.new_tokens = 2;
  ASSERT_TRUE((*layer)->Decode(inputs, &cache, out.data(), nullptr).ok());
  inputs.new_tokens = 1;
  absl::Status status = (*layer)->Decode(inputs, &cache, out.data(), nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(cache.length, 2);
}

}  // namespace
}  // namespace attnserve
