// oneDNN scaled dot-product attention against the double-precision reference.
#include "core/attention/scaled_dot_product_attention.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"
#include "tests/core/test_encodings.h"

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

struct Bfloat16TensorsCase {
  std::string encoding;
  ComputeType compute;
};

class Bfloat16TensorsTest : public ::testing::TestWithParam<Bfloat16TensorsCase> {};

// bf16 tensors in and out, whether they go to the tiled kernel as they are (bf16 compute with
// none, ALiBi, T5) or are widened (RoPE, CoPE, f32 compute): bit for bit the f32 entry's result
// on the widened values, rounded — over GQA, head_dim 80 (padded to 96 on AMX), causal and
// ragged key lengths, 70 keys (two AMX key tiles with a tail).
TEST_P(Bfloat16TensorsTest, EqualTheFloat32EntryRounded) {
  const SdpaShape shape{2, 4, 2, 37, 70, 80};
  const int64_t q_count = 2 * 4 * 37 * 80, kv_count = 2 * 2 * 70 * 80;
  auto bits_of = [](const std::vector<float>& values) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = FloatToBfloat16(values[i]);
    return bits;
  };
  auto widened = [](const std::vector<uint16_t>& bits) {
    std::vector<float> values(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) values[i] = Bfloat16ToFloat(bits[i]);
    return values;
  };
  const std::vector<uint16_t> q = bits_of(RandomVector(q_count, 11)),
                              k = bits_of(RandomVector(kv_count, 12)),
                              v = bits_of(RandomVector(kv_count, 13));
  SdpaOptions options = MaskOptions(true, {70, 51});
  options.compute = GetParam().compute;
  options.encoding = ::attnserve::testing::TestEncoding(GetParam().encoding, 4, 80, 4 * 80);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 37; ++i) options.q_positions.push_back(70 - 37 + i);
    for (int64_t j = 0; j < 70; ++j) options.k_positions.push_back(j);
  }
  std::vector<uint16_t> out(q_count, 0x7fc1);  // NaN: an unwritten element fails
  ASSERT_TRUE(ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(), out.data())
                  .ok());
  std::vector<float> out_f32(q_count);
  ASSERT_TRUE(ScaledDotProductAttention(shape, options, widened(q).data(), widened(k).data(),
                                        widened(v).data(), out_f32.data(), nullptr)
                  .ok());
  for (int64_t i = 0; i < q_count; ++i) {
    ASSERT_EQ(out[i], FloatToBfloat16(out_f32[i])) << "out[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Encodings, Bfloat16TensorsTest,
    ::testing::Values(Bfloat16TensorsCase{"none", ComputeType::kBfloat16},
                      Bfloat16TensorsCase{"alibi", ComputeType::kBfloat16},
                      Bfloat16TensorsCase{"t5", ComputeType::kBfloat16},
                      Bfloat16TensorsCase{"rope", ComputeType::kBfloat16},
                      Bfloat16TensorsCase{"cope", ComputeType::kBfloat16},
                      Bfloat16TensorsCase{"none", ComputeType::kFloat32},
                      Bfloat16TensorsCase{"alibi", ComputeType::kFloat32}),
    [](const ::testing::TestParamInfo<Bfloat16TensorsCase>& info) {
      return info.param.encoding +
             (info.param.compute == ComputeType::kBfloat16 ? "Bf16Compute" : "F32Compute");
    });

TEST(SdpaTest, Bfloat16TensorsAreValidatedToo) {
  const uint16_t x[64] = {};
  uint16_t out[64];
  SdpaOptions options;
  options.compute = ComputeType::kBfloat16;
  EXPECT_THAT(std::string(
                  ScaledDotProductAttention({1, 6, 4, 1, 1, 1}, options, x, x, x, out).message()),
              HasSubstr("num_kv_heads=4 must divide num_heads=6"));
}

// k and v with room between their heads (kv_stride, as a growing K/V cache keeps them) give what
// the same keys and values packed give, bit for bit: read in place by the tiled kernel, compacted
// for RoPE, probabilities and CoPE; f32 and bf16 compute, f32 and bf16 tensors. The room holds
// NaN, which must never be read.
class KvStrideTest : public ::testing::TestWithParam<std::tuple<const char*, bool, bool>> {};

TEST_P(KvStrideTest, RoomBetweenHeadsIsNeverRead) {
  const auto [encoding, bf16_compute, probs] = GetParam();
  const int64_t B = 1, H = 4, Hkv = 2, Sq = 3, Sk = 37, hd = 16, stride = 50;
  SdpaShape packed{B, H, Hkv, Sq, Sk, hd};
  SdpaShape strided = packed;
  strided.kv_stride = stride;
  SdpaOptions options;
  options.causal = true;
  options.encoding = ::attnserve::testing::TestEncoding(encoding, H, hd, H * hd);
  for (int64_t i = 0; i < Sq; ++i) options.q_positions.push_back(Sk - Sq + i);
  for (int64_t j = 0; j < Sk; ++j) options.k_positions.push_back(j);
  if (bf16_compute) options.compute = ComputeType::kBfloat16;
  const std::vector<float> q = RandomVector(B * H * Sq * hd, 81);
  const std::vector<float> k = RandomVector(B * Hkv * Sk * hd, 82);
  const std::vector<float> v = RandomVector(B * Hkv * Sk * hd, 83);
  std::vector<float> k_room(B * Hkv * stride * hd, NAN), v_room(k_room.size(), NAN);
  for (int64_t head = 0; head < B * Hkv; ++head) {
    std::copy_n(k.begin() + head * Sk * hd, Sk * hd, k_room.begin() + head * stride * hd);
    std::copy_n(v.begin() + head * Sk * hd, Sk * hd, v_room.begin() + head * stride * hd);
  }
  std::vector<float> expected(q.size()), out(q.size());
  std::vector<float> expected_probs(probs ? B * H * Sq * Sk : 0), out_probs(expected_probs.size());
  ASSERT_TRUE(ScaledDotProductAttention(packed, options, q.data(), k.data(), v.data(),
                                        expected.data(), probs ? expected_probs.data() : nullptr)
                  .ok());
  ASSERT_TRUE(ScaledDotProductAttention(strided, options, q.data(), k_room.data(), v_room.data(),
                                        out.data(), probs ? out_probs.data() : nullptr)
                  .ok());
  EXPECT_EQ(out, expected);
  EXPECT_EQ(out_probs, expected_probs);
  if (!bf16_compute || probs) return;
  // bf16 tensors, read as they are by the tiled kernel.
  auto bits = [](const std::vector<float>& values) {
    std::vector<uint16_t> result(values.size());
    for (size_t i = 0; i < values.size(); ++i) result[i] = FloatToBfloat16(values[i]);
    return result;
  };
  const std::vector<uint16_t> q16 = bits(q), k16 = bits(k), v16 = bits(v);
  const std::vector<uint16_t> k16_room = bits(k_room), v16_room = bits(v_room);
  std::vector<uint16_t> expected16(q.size()), out16(q.size());
  ASSERT_TRUE(ScaledDotProductAttention(packed, options, q16.data(), k16.data(), v16.data(),
                                        expected16.data())
                  .ok());
  ASSERT_TRUE(ScaledDotProductAttention(strided, options, q16.data(), k16_room.data(),
                                        v16_room.data(), out16.data())
                  .ok());
  EXPECT_EQ(out16, expected16);
}

INSTANTIATE_TEST_SUITE_P(Paths, KvStrideTest,
                         ::testing::Combine(::testing::Values("none", "alibi", "t5", "rope",
                                                              "cope"),
                                            ::testing::Bool(), ::testing::Bool()));

// CoPE's logit for score (b, h, i, j) of a causal call with key lengths, in double from its
// definition (core/encodings/cope.h): gates σ of row i's scaled scores (0 where masked),
// p = min(Σ_{t≥j} g_t, npos_max − 1), then q_i·e interpolated between ⌊p⌋ and ⌈p⌉. Used as
// ReferenceSdpa's bias (masked entries are skipped there).
double ReferenceCopeLogit(const CopeParams& cope, const std::vector<float>& q,
                          const std::vector<float>& k, const SdpaShape& s, double scale,
                          const std::vector<int64_t>& key_lengths, int64_t b, int64_t h,
                          int64_t i, int64_t j) {
  const int64_t kvh = h / (s.num_heads / s.num_kv_heads);
  const float* q_row = q.data() + ((b * s.num_heads + h) * s.q_len + i) * s.head_dim;
  const int64_t visible = std::min(key_lengths[b], i + s.kv_len - s.q_len + 1);
  double p = 0;
  for (int64_t t = j; t < visible; ++t) {
    double dot = 0;
    for (int64_t c = 0; c < s.head_dim; ++c) {
      dot += double{q_row[c]} * k[((b * s.num_kv_heads + kvh) * s.kv_len + t) * s.head_dim + c];
    }
    p += 1.0 / (1.0 + std::exp(-dot * scale));
  }
  p = std::min(p, static_cast<double>(cope.npos_max - 1));
  auto logit = [&](int64_t position) {
    double dot = 0;
    for (int64_t c = 0; c < s.head_dim; ++c) {
      dot += double{q_row[c]} * (*cope.pos_emb)[position * s.head_dim + c];
    }
    return dot;
  };
  const double w = p - std::floor(p);
  return logit(static_cast<int64_t>(std::ceil(p))) * w +
         logit(static_cast<int64_t>(std::floor(p))) * (1 - w);
}

struct CopeBlocksCase {
  std::string name;
  SdpaShape shape;
  std::vector<int64_t> key_lengths;  // causal as well
  ComputeType compute;
};

// CoPE without probabilities to return scores a block of query rows at a time: blocks of one row,
// of 5 rows (crossing from one query head of a group to the next, with a tail), and one block for
// all give the double-precision reference, as the whole matrix (probabilities returned) does.
// Cases: GQA with key lengths full, none (rows that see no key: zero, not NaN) and in between;
// more queries than keys (a block mixes rows that see nothing with rows that see keys); bf16
// compute, against the reference on bf16-rounded q, k, v.
class CopeBlocksTest : public ::testing::TestWithParam<std::tuple<int64_t, CopeBlocksCase>> {};

TEST_P(CopeBlocksTest, EveryBlockSizeMatchesTheReference) {
  const auto& [block_elements, c] = GetParam();
  const SdpaShape& s = c.shape;
  auto inputs = [&c](int64_t count, uint32_t seed) {
    std::vector<float> values = RandomVector(count, seed);
    if (c.compute != ComputeType::kBfloat16) return values;
    for (float& value : values) value = Bfloat16ToFloat(FloatToBfloat16(value));
    return values;
  };
  const auto q = inputs(s.batch * s.num_heads * s.q_len * s.head_dim, 91);
  const auto k = inputs(s.batch * s.num_kv_heads * s.kv_len * s.head_dim, 92);
  const auto v = inputs(s.batch * s.num_kv_heads * s.kv_len * s.head_dim, 93);
  SdpaOptions options = MaskOptions(true, c.key_lengths);
  options.compute = c.compute;
  options.encoding = ::attnserve::testing::TestEncoding("cope", s.num_heads, s.head_dim, 64);
  const CopeParams& cope = std::get<CopeParams>(options.encoding);
  for (int64_t b = 0; b < s.batch; ++b) {
    // (CoPE reads no positions; they must only be valid.)
    for (int64_t i = 0; i < s.q_len; ++i) {
      options.q_positions.push_back(std::max<int64_t>(0, s.kv_len - s.q_len + i));
    }
    for (int64_t j = 0; j < s.kv_len; ++j) options.k_positions.push_back(j);
  }
  options.cope_block_elements = block_elements;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const auto ref = ReferenceSdpa(
      q, k, v, s.batch, s.num_heads, s.num_kv_heads, s.q_len, s.kv_len, s.head_dim, scale,
      /*causal=*/true, c.key_lengths, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
        return ReferenceCopeLogit(cope, q, k, s, scale, c.key_lengths, b, h, i, j);
      });
  std::vector<float> blocked(q.size(), NAN), whole(q.size(), NAN);
  std::vector<float> probs(s.batch * s.num_heads * s.q_len * s.kv_len);
  absl::Status status = ScaledDotProductAttention(s, options, q.data(), k.data(), v.data(),
                                                  blocked.data(), nullptr);
  ASSERT_TRUE(status.ok()) << status;
  status = ScaledDotProductAttention(s, options, q.data(), k.data(), v.data(), whole.data(),
                                     probs.data());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LT(RelativeError(blocked, ref.out), kRelativeTolerance);
  EXPECT_LT(RelativeError(whole, ref.out), kRelativeTolerance);
  EXPECT_LT(RelativeError(probs, ref.probs), kRelativeTolerance);
  // Rows that see no key are zero, not NaN.
  int64_t empty_rows = 0;
  for (int64_t row = 0; row < s.batch * s.num_heads * s.q_len; ++row) {
    const int64_t b = row / (s.num_heads * s.q_len), i = row % s.q_len;
    if (VisibleKeyCount(s, options, b, i) > 0) continue;
    ++empty_rows;
    for (int64_t c = 0; c < s.head_dim; ++c) {
      ASSERT_EQ(blocked[row * s.head_dim + c], 0.0f) << "row " << row;
    }
  }
  EXPECT_GT(empty_rows, 0);
}

INSTANTIATE_TEST_SUITE_P(
    BlockElements, CopeBlocksTest,
    ::testing::Combine(
        ::testing::Values(int64_t{1}, int64_t{5 * 17}, kCopeBlockElements),
        ::testing::Values(
            CopeBlocksCase{"GqaKeyLengths", {3, 4, 2, 13, 17, 16}, {17, 0, 9},
                           ComputeType::kFloat32},
            CopeBlocksCase{"QueriesPastKeys", {1, 4, 2, 21, 17, 16}, {17}, ComputeType::kFloat32},
            CopeBlocksCase{"Bfloat16Compute", {3, 4, 2, 13, 17, 16}, {17, 0, 9},
                           ComputeType::kBfloat16})),
    [](const ::testing::TestParamInfo<std::tuple<int64_t, CopeBlocksCase>>& info) {
      return std::get<1>(info.param).name + "Elements" +
             std::to_string(std::get<0>(info.param));
    });

TEST(SdpaTest, CopeHoldsABlockOfRowsUnlessProbabilitiesAreReturned) {
  const SdpaShape s{2, 12, 4, 8192, 8192, 64};
  const PositionalEncoding cope = ::attnserve::testing::TestEncoding("cope", 12, 64, 768);
  EXPECT_EQ(CopeBlockRows(s, kCopeBlockElements), 512);
  EXPECT_EQ(ScoreElementsHeld(s, cope, false), 512 * 8192);
  EXPECT_EQ(ScoreElementsHeld(s, cope, true), int64_t{2} * 12 * 8192 * 8192);
  EXPECT_EQ(ScoreElementsHeld(s, AlibiParams{}, false), 0);
  // Fewer rows than a block: all of them (3 query heads per kv head × 2 tokens).
  EXPECT_EQ(CopeBlockRows({1, 12, 4, 2, 100, 64}, kCopeBlockElements), 6);
  // More keys than a block: one row.
  EXPECT_EQ(CopeBlockRows({1, 1, 1, 2, kCopeBlockElements + 1, 64}, kCopeBlockElements), 1);
  // The workspace: the scores held, RoPE's rotated q and k, bf16 compute's rounded q, k, v where
  // the tiled kernel does not run.
  const int64_t q = int64_t{2} * 12 * 8192 * 64, kv = int64_t{2} * 4 * 8192 * 64;
  EXPECT_EQ(SdpaWorkspaceElements(s, AlibiParams{}, ComputeType::kBfloat16, false), 0);
  EXPECT_EQ(SdpaWorkspaceElements(s, RopeParams{}, ComputeType::kFloat32, false), q + kv);
  EXPECT_EQ(SdpaWorkspaceElements(s, cope, ComputeType::kFloat32, false), 512 * 8192);
  EXPECT_EQ(SdpaWorkspaceElements(s, cope, ComputeType::kBfloat16, false),
            512 * 8192 + q + 2 * kv);
  EXPECT_EQ(SdpaWorkspaceElements(s, RopeParams{}, ComputeType::kBfloat16, true),
            int64_t{2} * 12 * 8192 * 8192 + q + kv + q + 2 * kv);
}

TEST(SdpaTest, KvStrideBelowKvLenIsRefused) {
  SdpaShape shape{1, 1, 1, 2, 8, 4};
  shape.kv_stride = 7;
  const absl::Status status = ValidateSdpa(shape, SdpaOptions());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("kv_stride=7 must be 0 or >= kv_len=8"));
}

}  // namespace
}  // namespace attnserve
