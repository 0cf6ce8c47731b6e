// The tiled online-softmax kernel against the double-precision reference over the parameter
// table of issue #4: batch, grouped heads, head widths, odd/even and long lengths, causal,
// padding, cross lengths, and the encodings it handles. Outputs are poisoned with NaN first, so
// an element the kernel forgets to write fails the comparison.
#include "core/attention/flash_attention.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/attention/scaled_dot_product_attention.h"
#include "core/attention/sdpa_options.h"
#include "core/kernels/bfloat16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;
using ::attnserve::testing::ReferenceBias;
using ::attnserve::testing::ReferenceSdpa;
using ::attnserve::testing::RelativeError;

// f32 GEMMs and a float exp (relative error < 2e-7) over up to 1500 keys; bf16 operands carry
// 8 significant bits (relative rounding up to 2^-8 per operand).
constexpr double kRelativeTolerance = 1e-5;
constexpr double kBfloat16RelativeTolerance = 1e-2;

enum class Bias { kNone, kAlibi, kT5 };

struct FlashCase {
  const char* name;
  int64_t batch, heads, kv_heads, head_dim, q_len, kv_len;
  bool causal;
  bool padded;  // key_lengths: a different length per batch element
  Bias bias;
  FlashTiling tiling;
  ComputeType compute = ComputeType::kFloat32;
};

std::string CaseName(const ::testing::TestParamInfo<FlashCase>& info) { return info.param.name; }

class FlashAttentionTest : public ::testing::TestWithParam<FlashCase> {};

TEST_P(FlashAttentionTest, MatchesDoublePrecisionReference) {
  const FlashCase& c = GetParam();
  const SdpaShape shape{c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, c.head_dim};
  const auto q = RandomVector(c.batch * c.heads * c.q_len * c.head_dim, 31);
  const auto k = RandomVector(c.batch * c.kv_heads * c.kv_len * c.head_dim, 32);
  const auto v = RandomVector(c.batch * c.kv_heads * c.kv_len * c.head_dim, 33);

  SdpaOptions options;
  options.causal = c.causal;
  options.compute = c.compute;
  if (c.padded) {
    for (int64_t b = 0; b < c.batch; ++b) {
      options.key_lengths.push_back(std::max<int64_t>(0, c.kv_len - 7 * b - (b == 2 ? c.kv_len : 0)));
    }
  }
  // Keys at 5 + j, queries bottom-right aligned (as with a K/V cache), per batch element.
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < c.q_len; ++i) options.q_positions.push_back(5 + c.kv_len - c.q_len + i);
    for (int64_t j = 0; j < c.kv_len; ++j) options.k_positions.push_back(5 + j);
  }
  std::vector<double> t5_table;
  if (c.bias == Bias::kAlibi) options.encoding = AlibiParams{};
  if (c.bias == Bias::kT5) {
    T5BiasParams t5;
    auto table = std::make_shared<std::vector<float>>(RandomVector(32 * c.heads, 34));
    t5.table = table;
    t5_table.assign(table->begin(), table->end());
    options.encoding = t5;
  }
  ASSERT_TRUE(ValidateSdpa(shape, options).ok()) << ValidateSdpa(shape, options);

  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  absl::Status status = FlashAttention(shape, options, q.data(), k.data(), v.data(), out.data(),
                                       c.tiling);
  ASSERT_TRUE(status.ok()) << status;

  // Bias written from the definitions: ALiBi slopes 2^(−8(h+1)/H) for power-of-two H (8 here);
  // T5 buckets per Hugging Face (bucket function checked against published vectors elsewhere).
  ReferenceBias bias;
  const int64_t H = c.heads;
  if (c.bias == Bias::kAlibi) {
    bias = [&](int64_t b, int64_t h, int64_t i, int64_t j) {
      const double slope = std::pow(2.0, -8.0 * (h + 1) / H);
      return -slope * std::abs(double(options.q_positions[b * c.q_len + i]) -
                               double(options.k_positions[b * c.kv_len + j]));
    };
  } else if (c.bias == Bias::kT5) {
    bias = [&](int64_t b, int64_t h, int64_t i, int64_t j) {
      const int64_t relative =
          options.k_positions[b * c.kv_len + j] - options.q_positions[b * c.q_len + i];
      return t5_table[T5RelativeBucket(relative, true, 32, 128) * H + h];
    };
  }
  const double scale = c.bias == Bias::kT5 ? 1.0 : 1.0 / std::sqrt(double(c.head_dim));
  const auto ref = ReferenceSdpa(q, k, v, c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len,
                                 c.head_dim, scale, c.causal, options.key_lengths, bias);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_FALSE(std::isnan(out[i])) << "out[" << i << "]";
  EXPECT_LT(RelativeError(out, ref.out), c.compute == ComputeType::kBfloat16
                                             ? kBfloat16RelativeTolerance
                                             : kRelativeTolerance);
}

constexpr FlashTiling kSmallTiles{16, 48, 16, true, 32};  // many tiles, ragged tails
constexpr FlashTiling kDefaultTiles{};
// bf16 on oneDNN's matmul even where the CPU has AMX (the other cases take the AMX tiles there).
constexpr FlashTiling kSmallTilesOneDnn{16, 48, 16, false};
constexpr FlashTiling kDefaultTilesOneDnn{128, 1024, 64, false};

INSTANTIATE_TEST_SUITE_P(
    Table, FlashAttentionTest,
    ::testing::Values(
        FlashCase{"Mha32Odd", 1, 8, 8, 32, 37, 37, false, false, Bias::kNone, kSmallTiles},
        FlashCase{"Mha64EvenCausal", 3, 8, 8, 64, 64, 64, true, false, Bias::kNone, kSmallTiles},
        FlashCase{"Gqa80Padded", 3, 8, 2, 80, 33, 50, false, true, Bias::kNone, kSmallTiles},
        FlashCase{"Mqa128CausalCross", 1, 8, 1, 128, 17, 61, true, false, Bias::kNone, kSmallTiles},
        FlashCase{"CausalQueryLonger", 1, 8, 2, 32, 40, 25, true, false, Bias::kNone, kSmallTiles},
        FlashCase{"AlibiCausalPadded", 3, 8, 2, 64, 29, 29, true, true, Bias::kAlibi, kSmallTiles},
        FlashCase{"AlibiCross", 1, 8, 8, 32, 9, 70, false, false, Bias::kAlibi, kSmallTiles},
        FlashCase{"T5Bidirectional", 3, 8, 1, 64, 31, 44, false, true, Bias::kT5, kSmallTiles},
        FlashCase{"T5Causal", 1, 8, 8, 80, 50, 50, true, false, Bias::kT5, kSmallTiles},
        FlashCase{"Default1500Causal", 1, 8, 2, 80, 1500, 1500, true, false, Bias::kNone,
                  kDefaultTiles},
        FlashCase{"Default1111Alibi", 1, 8, 8, 32, 1111, 1111, false, false, Bias::kAlibi,
                  kDefaultTiles},
        FlashCase{"Default1Token", 3, 8, 1, 128, 1, 999, true, true, Bias::kNone,
                  kDefaultTiles},
        FlashCase{"Head96Padded", 3, 8, 2, 96, 21, 40, false, true, Bias::kNone, kSmallTiles},
        FlashCase{"Head112Causal", 1, 8, 8, 112, 30, 30, true, false, Bias::kAlibi, kSmallTiles},
        FlashCase{"Head256Cross", 1, 8, 1, 256, 7, 90, false, false, Bias::kNone, kDefaultTiles},
        FlashCase{"Bf16Gqa64Causal", 3, 8, 2, 64, 45, 45, true, true, Bias::kNone, kSmallTiles,
                  ComputeType::kBfloat16},
        FlashCase{"Bf16AlibiCross", 1, 8, 8, 80, 20, 77, false, false, Bias::kAlibi, kSmallTiles,
                  ComputeType::kBfloat16},
        FlashCase{"Bf16T5", 1, 8, 1, 128, 33, 33, false, false, Bias::kT5, kSmallTiles,
                  ComputeType::kBfloat16},
        FlashCase{"Bf16Default1200", 1, 8, 8, 64, 1200, 1200, true, false, Bias::kNone,
                  kDefaultTiles, ComputeType::kBfloat16},
        FlashCase{"Bf16Head32Odd", 1, 8, 8, 32, 37, 37, false, false, Bias::kNone, kSmallTiles,
                  ComputeType::kBfloat16},
        FlashCase{"Bf16Head96Padded", 3, 8, 2, 96, 21, 40, false, true, Bias::kNone, kSmallTiles,
                  ComputeType::kBfloat16},
        FlashCase{"Bf16Head112CausalAlibi", 1, 8, 8, 112, 30, 30, true, false, Bias::kAlibi,
                  kSmallTiles, ComputeType::kBfloat16},
        FlashCase{"Bf16Head256Cross", 1, 8, 1, 256, 7, 90, false, false, Bias::kNone,
                  kDefaultTiles, ComputeType::kBfloat16},
        FlashCase{"Bf16CausalQueryLonger", 1, 8, 2, 32, 40, 25, true, false, Bias::kNone,
                  kSmallTiles, ComputeType::kBfloat16},
        FlashCase{"Bf16Default1500T5", 1, 8, 2, 80, 1500, 1500, true, true, Bias::kT5,
                  kDefaultTiles, ComputeType::kBfloat16},
        FlashCase{"Bf16OneDnnGqa64Causal", 3, 8, 2, 64, 45, 45, true, true, Bias::kNone,
                  kSmallTilesOneDnn, ComputeType::kBfloat16},
        FlashCase{"Bf16OneDnnAlibiCross", 1, 8, 8, 80, 20, 77, false, false, Bias::kAlibi,
                  kSmallTilesOneDnn, ComputeType::kBfloat16},
        FlashCase{"Bf16OneDnnDefault1200", 1, 8, 8, 64, 1200, 1200, true, false, Bias::kNone,
                  kDefaultTilesOneDnn, ComputeType::kBfloat16}),
    CaseName);

// With probabilities requested, attention takes the materialised path; bf16 there rounds the
// same operands, so it agrees with the f32 reference to bf16 precision, and with the tiled path.
TEST(MaterialisedBfloat16Test, MatchesReferenceAndTiledPath) {
  const SdpaShape shape{2, 4, 2, 19, 23, 32};
  const auto q = RandomVector(2 * 4 * 19 * 32, 41);
  const auto k = RandomVector(2 * 2 * 23 * 32, 42);
  const auto v = RandomVector(2 * 2 * 23 * 32, 43);
  SdpaOptions options;
  options.causal = true;
  options.compute = ComputeType::kBfloat16;
  std::vector<float> with_probs(q.size()), tiled(q.size()), probs(2 * 4 * 19 * 23);
  ASSERT_TRUE(ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(),
                                        with_probs.data(), probs.data())
                  .ok());
  ASSERT_TRUE(ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(),
                                        tiled.data(), nullptr)
                  .ok());
  const auto ref = ReferenceSdpa(q, k, v, 2, 4, 2, 19, 23, 32, 1.0 / std::sqrt(32.0), true, {});
  EXPECT_LT(RelativeError(with_probs, ref.out), kBfloat16RelativeTolerance);
  EXPECT_LT(RelativeError(probs, ref.probs), kBfloat16RelativeTolerance);
  EXPECT_LT(RelativeError(tiled, std::vector<double>(with_probs.begin(), with_probs.end())),
            kBfloat16RelativeTolerance);
  // And bf16 really ran: f32 products would land within 1e-6 of the reference.
  EXPECT_GT(RelativeError(tiled, ref.out), 1e-4);
  EXPECT_GT(RelativeError(with_probs, ref.out), 1e-4);
}

// Scores that change by 1 per key (0…249, rising or falling, with or without ALiBi): each tile's
// maximum is far above the running maximum of the tiles before it and above the first 16 scores
// of its row, in the order the path visits them (key tiles forwards on oneDNN, backwards on AMX),
// so the bf16 rows, which shift by a running maximum, must notice and redo the tile (without
// that, e^(249 − 15) overflows). Inputs are exact in bf16, so bf16 compute agrees with the
// reference to bf16 rounding of P.
TEST(FlashAttentionRangeTest, ScoresChangingFarAcrossTilesMatchReference) {
  constexpr int64_t kHeads = 2, kLen = 250, kHd = 64;
  const SdpaShape shape{1, kHeads, kHeads, kLen, kLen, kHd};
  std::vector<float> q(kHeads * kLen * kHd, 1.0f), k(q.size());
  auto v = RandomVector(q.size(), 61);
  for (float& x : v) x = RoundToBfloat16(x);
  for (const bool rising : {true, false}) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t j = 0; j < kLen; ++j) {
        const float score = rising ? j : kLen - 1 - j;
        for (int64_t d = 0; d < kHd; ++d) k[(h * kLen + j) * kHd + d] = score / 8.0f;
      }
    }
    for (const bool causal : {false, true}) {
      // With ALiBi too (slopes 2^-4 and 2^-8 for 2 heads: the scores still change far faster).
      for (const bool alibi : {false, true}) {
        SdpaOptions options;
        options.causal = causal;
        ReferenceBias bias;
        if (alibi) {
          options.encoding = AlibiParams{};
          for (int64_t i = 0; i < kLen; ++i) options.q_positions.push_back(i);
          options.k_positions = options.q_positions;
          bias = [](int64_t, int64_t h, int64_t i, int64_t j) {
            return -std::pow(2.0, -8.0 * (h + 1) / kHeads) * std::abs(double(i - j));
          };
        }
        const auto ref = ReferenceSdpa(q, k, v, 1, kHeads, kHeads, kLen, kLen, kHd,
                                       1.0 / std::sqrt(double(kHd)), causal, {}, bias);
        for (const FlashTiling& tiling : {kSmallTiles, kDefaultTiles, kSmallTilesOneDnn}) {
          for (const ComputeType compute : {ComputeType::kFloat32, ComputeType::kBfloat16}) {
            options.compute = compute;
            std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
            ASSERT_TRUE(
                FlashAttention(shape, options, q.data(), k.data(), v.data(), out.data(), tiling)
                    .ok());
            EXPECT_LT(RelativeError(out, ref.out), compute == ComputeType::kBfloat16
                                                       ? kBfloat16RelativeTolerance
                                                       : kRelativeTolerance)
                << "rising " << rising << " causal " << causal << " alibi " << alibi << " tiles "
                << tiling.k_tile << " amx " << tiling.use_amx << " bf16 "
                << (compute == ComputeType::kBfloat16);
          }
        }
      }
    }
  }
}

// A negative (or zero) scale reverses which score is the largest: every path — f32, bf16 on
// AMX (which applies the scale after the product) and on oneDNN — must still match.
TEST(FlashAttentionRangeTest, NegativeScaleMatchesReference) {
  const SdpaShape shape{1, 2, 2, 40, 300, 64};
  const auto q = RandomVector(2 * 40 * 64, 71, 1.5f);
  const auto k = RandomVector(2 * 300 * 64, 72, 1.5f);
  const auto v = RandomVector(2 * 300 * 64, 73);
  for (const float scale : {-1.0f, 0.0f}) {
    SdpaOptions options;
    options.scale = scale;
    const auto ref = ReferenceSdpa(q, k, v, 1, 2, 2, 40, 300, 64, scale, false, {});
    for (const FlashTiling& tiling : {kSmallTiles, kDefaultTiles, kSmallTilesOneDnn}) {
      for (const ComputeType compute : {ComputeType::kFloat32, ComputeType::kBfloat16}) {
        options.compute = compute;
        std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
        ASSERT_TRUE(
            FlashAttention(shape, options, q.data(), k.data(), v.data(), out.data(), tiling).ok());
        // bf16 operands at scores of magnitude ~100: a looser bound than the table's.
        EXPECT_LT(RelativeError(out, ref.out),
                  compute == ComputeType::kBfloat16 ? 5e-2 : kRelativeTolerance)
            << "scale " << scale << " tiles " << tiling.k_tile << " amx " << tiling.use_amx
            << " bf16 " << (compute == ComputeType::kBfloat16);
      }
    }
  }
}

// The tiled and materialised paths give the same ALiBi attention, also with non-monotonic
// position ids (under a causal mask: signed −m·(q−k)) and at positions near 2^30, where absolute
// positions in float would lose the small distances; in f32 and bf16 (where the AMX path starts
// from the key nearest each query, found by a scan when positions do not ascend).
TEST(TiledAndMaterialisedTest, AlibiAgreesForAnyPositions) {
  const SdpaShape shape{1, 8, 8, 6, 6, 16};
  const auto q = RandomVector(8 * 6 * 16, 51), k = RandomVector(8 * 6 * 16, 52),
             v = RandomVector(8 * 6 * 16, 53);
  for (int64_t base : {int64_t{0}, int64_t{1} << 30}) {
    for (const bool causal : {true, false}) {
      for (const ComputeType compute : {ComputeType::kFloat32, ComputeType::kBfloat16}) {
        SdpaOptions options;
        options.causal = causal;
        options.compute = compute;
        options.encoding = AlibiParams{};
        for (int64_t p : {5, 0, 1, 9, 3, 4}) options.q_positions.push_back(base + p);
        options.k_positions = options.q_positions;
        std::vector<float> tiled(q.size()), materialised(q.size()), probs(8 * 6 * 6);
        ASSERT_TRUE(ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(),
                                              tiled.data(), nullptr)
                        .ok());
        ASSERT_TRUE(ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(),
                                              materialised.data(), probs.data())
                        .ok());
        EXPECT_LT(
            RelativeError(tiled, std::vector<double>(materialised.begin(), materialised.end())),
            compute == ComputeType::kBfloat16 ? kBfloat16RelativeTolerance : kRelativeTolerance)
            << "base " << base << " causal " << causal << " bf16 "
            << (compute == ComputeType::kBfloat16);
      }
    }
  }
}

TEST(FlashAttentionCancelTest, StopsBetweenTilesWhenCancelled) {
  const SdpaShape shape{1, 2, 2, 64, 64, 16};
  const auto x = RandomVector(2 * 64 * 16, 40);
  for (const ComputeType compute : {ComputeType::kFloat32, ComputeType::kBfloat16}) {
    std::vector<float> out(x.size());
    SdpaOptions options;
    options.compute = compute;
    int polls = 0;
    options.is_cancelled = [&polls] { return ++polls >= 2; };
    absl::Status status = FlashAttention(shape, options, x.data(), x.data(), x.data(), out.data(),
                                         FlashTiling{8, 8, 8, true, 32});
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled)
        << "bf16 " << (compute == ComputeType::kBfloat16);
    EXPECT_GE(polls, 2);
  }
}

// bf16 tensors through every tiling (AMX with many key tiles, the defaults, oneDNN's bf16
// matmul): bit for bit the f32 tensors' result on the same values, rounded; the f32 result is
// held to the reference by the table above.
TEST(FlashAttentionBfloat16TensorsTest, EqualFloat32TensorsRoundedOnEveryPath) {
  const SdpaShape shape{2, 8, 2, 45, 45, 64};
  std::vector<float> q = RandomVector(2 * 8 * 45 * 64, 81), k = RandomVector(2 * 2 * 45 * 64, 82),
                     v = RandomVector(2 * 2 * 45 * 64, 83);
  std::vector<uint16_t> q_bits(q.size()), k_bits(k.size()), v_bits(v.size());
  for (size_t i = 0; i < q.size(); ++i) q_bits[i] = FloatToBfloat16(q[i]);
  for (size_t i = 0; i < k.size(); ++i) k_bits[i] = FloatToBfloat16(k[i]);
  for (size_t i = 0; i < v.size(); ++i) v_bits[i] = FloatToBfloat16(v[i]);
  for (auto* values : {&q, &k, &v}) {
    for (float& x : *values) x = RoundToBfloat16(x);
  }
  SdpaOptions options;
  options.causal = true;
  options.key_lengths = {45, 30};
  options.compute = ComputeType::kBfloat16;
  for (const FlashTiling& tiling : {kSmallTiles, kDefaultTiles, kSmallTilesOneDnn}) {
    std::vector<float> out(q.size());
    std::vector<uint16_t> out_bits(q.size(), 0x7fc1);  // NaN: an unwritten element fails
    ASSERT_TRUE(
        FlashAttention(shape, options, q.data(), k.data(), v.data(), out.data(), tiling).ok());
    ASSERT_TRUE(FlashAttention(shape, options, q_bits.data(), k_bits.data(), v_bits.data(),
                               out_bits.data(), tiling)
                    .ok());
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(out_bits[i], FloatToBfloat16(out[i]))
          << "out[" << i << "] tiles " << tiling.k_tile << " amx " << tiling.use_amx;
    }
  }
  options.compute = ComputeType::kFloat32;
  std::vector<uint16_t> out_bits(q.size());
  EXPECT_EQ(FlashAttention(shape, options, q_bits.data(), k_bits.data(), v_bits.data(),
                           out_bits.data())
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FlashAttentionCancelTest, RejectsEncodingsItCannotTile) {
  const SdpaShape shape{1, 1, 1, 2, 2, 4};
  std::vector<float> x(8), out(8);
  SdpaOptions options;
  options.encoding = CopeParams{};
  EXPECT_EQ(FlashAttention(shape, options, x.data(), x.data(), x.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnserve
