// The AMX tile products and packers against the layout written out in core/kernels/amx_tiles.h and
// double-precision products. Operands are bf16-representable, so every product is exact in f32
// and only the f32 accumulation rounds (relative error ~1e-6 over a few hundred terms). Skipped
// on CPUs without AMX-BF16.
#include "core/kernels/amx_tiles.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;

constexpr double kAccumulationTolerance = 1e-5;  // |got − exact| / Σ|terms|

#define SKIP_WITHOUT_AMX()                                                   \
  if (!AmxBf16Available()) GTEST_SKIP() << "this CPU (or kernel) has no AMX-BF16"

std::vector<float> RoundedToBfloat16(std::vector<float> values) {
  for (float& value : values) value = RoundToBfloat16(value);
  return values;
}

// Element (row p, pair n, half e) of tile `index` in a packed buffer.
uint16_t TileElement(const std::vector<uint16_t>& packed, int64_t index, int64_t p, int64_t n,
                     int64_t e) {
  return packed[index * 512 + p * 32 + n * 2 + e];
}

struct Shape {
  int64_t keys, hd;
};

class AmxPackTest : public ::testing::TestWithParam<Shape> {};

TEST_P(AmxPackTest, KeysFromF32AndBf16FollowTheDocumentedLayout) {
  SKIP_WITHOUT_AMX();
  const auto [keys, hd] = GetParam();
  const auto k = RandomVector(keys * hd, 1);
  std::vector<uint16_t> k_bits(k.size());
  for (size_t i = 0; i < k.size(); ++i) k_bits[i] = FloatToBfloat16(k[i]);
  // From f32 and from bf16 sources, into poisoned buffers, in parts as threads pack.
  std::vector<uint16_t> packed(AmxPackedSize(keys, hd), 0xffff), from_bits = packed;
  for (int64_t begin = 0; begin < keys; begin += 32) {
    AmxPackKeys(k.data(), keys, hd, begin, begin + 32, packed.data());
    AmxPackKeys(k_bits.data(), keys, hd, begin, begin + 32, from_bits.data());
  }
  const int64_t steps = PadTo32(hd) / 32;
  for (int64_t block = 0; block < PadTo32(keys) / 16; ++block) {
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t p = 0; p < 16; ++p) {
        for (int64_t n = 0; n < 16; ++n) {
          for (int64_t e = 0; e < 2; ++e) {
            const int64_t key = 16 * block + n, dim = 32 * s + 2 * p + e;
            const uint16_t expected =
                key < keys && dim < hd ? FloatToBfloat16(k[key * hd + dim]) : uint16_t{0};
            ASSERT_EQ(TileElement(packed, block * steps + s, p, n, e), expected)
                << "key " << key << " dim " << dim;
            ASSERT_EQ(TileElement(from_bits, block * steps + s, p, n, e), expected)
                << "from bf16: key " << key << " dim " << dim;
          }
        }
      }
    }
  }
}

TEST_P(AmxPackTest, ValuesFromF32AndBf16FollowTheDocumentedLayout) {
  SKIP_WITHOUT_AMX();
  const auto [keys, hd] = GetParam();
  const auto v = RandomVector(keys * hd, 2);
  std::vector<uint16_t> v_bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) v_bits[i] = FloatToBfloat16(v[i]);
  // From f32 and from bf16 sources, into poisoned buffers, in parts as threads pack.
  std::vector<uint16_t> packed(AmxPackedSize(keys, hd), 0xffff), from_bits = packed;
  for (int64_t begin = 0; begin < keys; begin += 32) {
    AmxPackValues(v.data(), keys, hd, begin, begin + 32, packed.data());
    AmxPackValues(v_bits.data(), keys, hd, begin, begin + 32, from_bits.data());
  }
  const int64_t steps = PadTo32(keys) / 32;
  for (int64_t block = 0; block < PadTo32(hd) / 16; ++block) {
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t p = 0; p < 16; ++p) {
        for (int64_t n = 0; n < 16; ++n) {
          for (int64_t e = 0; e < 2; ++e) {
            const int64_t key = 32 * s + 2 * p + e, dim = 16 * block + n;
            const uint16_t expected =
                key < keys && dim < hd ? FloatToBfloat16(v[key * hd + dim]) : uint16_t{0};
            ASSERT_EQ(TileElement(packed, block * steps + s, p, n, e), expected)
                << "key " << key << " dim " << dim;
            ASSERT_EQ(TileElement(from_bits, block * steps + s, p, n, e), expected)
                << "from bf16: key " << key << " dim " << dim;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AmxPackTest,
                         ::testing::Values(Shape{1, 32}, Shape{17, 64}, Shape{64, 80},
                                           Shape{45, 96}, Shape{33, 112}, Shape{70, 256},
                                           Shape{5, 8}));

struct ProductCase {
  int64_t rows, keys, hd, key0, cols;
};

class AmxProductTest : public ::testing::TestWithParam<ProductCase> {};

TEST_P(AmxProductTest, ScoresEqualDoublePrecisionProducts) {
  SKIP_WITHOUT_AMX();
  const auto [rows, keys, hd, key0, cols] = GetParam();
  const int64_t hd_pad = PadTo32(hd);
  const auto q = RoundedToBfloat16(RandomVector(PadTo32(rows) * hd, 3));
  const auto k = RoundedToBfloat16(RandomVector(keys * hd, 4));
  std::vector<uint16_t> q_rows(PadTo32(rows) * hd_pad, 0);
  for (int64_t r = 0; r < PadTo32(rows); ++r) {
    for (int64_t d = 0; d < hd; ++d) q_rows[r * hd_pad + d] = FloatToBfloat16(q[r * hd + d]);
  }
  std::vector<uint16_t> packed(AmxPackedSize(keys, hd));
  AmxPackKeys(k.data(), keys, hd, 0, keys, packed.data());
  const int64_t stride = PadTo32(cols) + 7;
  std::vector<float> scores(PadTo32(rows) * stride, std::numeric_limits<float>::quiet_NaN());

  AmxConfigure();
  AmxScores(q_rows.data(), rows, hd, packed.data(), key0, cols, scores.data(), stride);
  AmxRelease();

  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t d = 0; d < hd; ++d) {
        const double term = double(q[r * hd + d]) * k[(key0 + c) * hd + d];
        exact += term;
        magnitude += std::abs(term);
      }
      ASSERT_LE(std::abs(scores[r * stride + c] - exact), kAccumulationTolerance * magnitude)
          << "row " << r << " key " << key0 + c;
    }
    // Past the real keys (up to the block edge) the packed zeros give exactly 0.
    for (int64_t c = cols; c < PadTo32(cols) && key0 + c >= keys; ++c) {
      ASSERT_EQ(scores[r * stride + c], 0.0f) << "row " << r << " padding key " << key0 + c;
    }
  }
}

TEST_P(AmxProductTest, AccumulateAddsDoublePrecisionProducts) {
  SKIP_WITHOUT_AMX();
  const auto [rows, keys, hd, key0, cols] = GetParam();
  const int64_t p_stride = PadTo32(cols) + 5, acc_stride = PadTo32(hd) + 3;
  const auto p = RoundedToBfloat16(RandomVector(rows * cols, 5));
  const auto v = RoundedToBfloat16(RandomVector(keys * hd, 6));
  const auto initial = RandomVector(PadTo32(rows) * acc_stride, 7);
  // P rows in bf16, zero in the padding columns the contract requires.
  std::vector<uint16_t> p_rows(PadTo32(rows) * p_stride, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) p_rows[r * p_stride + c] = FloatToBfloat16(p[r * cols + c]);
  }
  std::vector<uint16_t> packed(AmxPackedSize(keys, hd));
  AmxPackValues(v.data(), keys, hd, 0, keys, packed.data());
  std::vector<float> acc = initial;

  AmxConfigure();
  AmxAccumulate(p_rows.data(), p_stride, rows, packed.data(), keys, key0, cols, hd, acc.data(),
                acc_stride);
  AmxRelease();

  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < hd; ++d) {
      double exact = initial[r * acc_stride + d], magnitude = std::abs(exact);
      for (int64_t c = 0; c < cols; ++c) {
        const double term = double(p[r * cols + c]) * v[(key0 + c) * hd + d];
        exact += term;
        magnitude += std::abs(term);
      }
      ASSERT_LE(std::abs(acc[r * acc_stride + d] - exact), kAccumulationTolerance * magnitude)
          << "row " << r << " dim " << d;
    }
    // Columns past the blocks are not touched.
    for (int64_t d = PadTo32(hd); d < acc_stride; ++d) {
      ASSERT_EQ(acc[r * acc_stride + d], initial[r * acc_stride + d]) << "row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AmxProductTest,
    ::testing::Values(ProductCase{1, 1, 32, 0, 1}, ProductCase{32, 64, 64, 0, 64},
                      ProductCase{45, 300, 64, 32, 268}, ProductCase{17, 90, 80, 64, 26},
                      ProductCase{64, 600, 96, 288, 300}, ProductCase{7, 40, 112, 0, 40},
                      ProductCase{33, 70, 256, 32, 38}, ProductCase{128, 1100, 64, 0, 1024}));

}  // namespace
}  // namespace attnserve
