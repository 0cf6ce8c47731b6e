// Sinusoidal tables against independent double-precision formulas and published properties.
#include "core/encodings/sinusoidal_encoding.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

// Table rows are rounded once from double; 2e-7 absolute covers that rounding for |P| <= 1.
constexpr double kTableTolerance = 2e-7;

std::vector<float> Row(const SinusoidalParams& params, int64_t position, int64_t dim) {
  std::vector<float> row(dim);
  SinusoidalRow(params, position, dim, row.data());
  return row;
}

// Vaswani et al. §3.5 written from the paper: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
// PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
double VaswaniReference(double base, int64_t pos, int64_t channel, int64_t dim) {
  const int64_t i = channel / 2;
  const double angle = pos / std::pow(base, 2.0 * i / dim);
  return channel % 2 == 0 ? std::sin(angle) : std::cos(angle);
}

// tensor2tensor get_timing_signal_1d, written from its definition.
double Tensor2TensorReference(double min_ts, double max_ts, double pos, int64_t channel,
                              int64_t dim) {
  const int64_t n = dim / 2;
  if (channel >= 2 * n) return 0.0;  // odd-width pad channel
  const double log_increment = std::log(max_ts / min_ts) / std::max<double>(n - 1, 1);
  const int64_t k = channel % n;
  const double inv_timescale = min_ts * std::exp(-log_increment * k);
  return channel < n ? std::sin(pos * inv_timescale) : std::cos(pos * inv_timescale);
}

struct TableCase {
  SinusoidalVariant variant;
  int64_t dim;
  double base;
  double min_ts;
  double max_ts;
  int64_t padding_idx;
};

class SinusoidalTableTest : public ::testing::TestWithParam<TableCase> {};

TEST_P(SinusoidalTableTest, MatchesDoublePrecisionFormula) {
  const TableCase& c = GetParam();
  SinusoidalParams params;
  params.variant = c.variant;
  params.base = c.base;
  params.min_timescale = c.min_ts;
  params.max_timescale = c.max_ts;
  params.padding_idx = c.padding_idx;
  ASSERT_TRUE(ValidateSinusoidal(params, c.dim).ok());
  for (int64_t pos : {0, 1, 2, 7, 63, 100, 511, 4097}) {
    const std::vector<float> row = Row(params, pos, c.dim);
    for (int64_t ch = 0; ch < c.dim; ++ch) {
      double expected = 0;
      switch (c.variant) {
        case SinusoidalVariant::kVaswani:
          expected = VaswaniReference(c.base, pos, ch, c.dim);
          break;
        case SinusoidalVariant::kTensor2Tensor:
          expected = Tensor2TensorReference(c.min_ts, c.max_ts, pos, ch, c.dim);
          break;
        case SinusoidalVariant::kFairseq:
          expected = Tensor2TensorReference(1.0, c.base, c.padding_idx + 1 + pos, ch, c.dim);
          break;
      }
      ASSERT_NEAR(row[ch], expected, kTableTolerance) << "pos=" << pos << " channel=" << ch;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SinusoidalTableTest,
    ::testing::Values(TableCase{SinusoidalVariant::kVaswani, 512, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kVaswani, 7, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kVaswani, 64, 500000.0, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kTensor2Tensor, 512, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kTensor2Tensor, 9, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kTensor2Tensor, 2, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kTensor2Tensor, 64, 1e4, 2.0, 1e5, 1},
                      TableCase{SinusoidalVariant::kFairseq, 512, 1e4, 1, 1e4, 1},
                      TableCase{SinusoidalVariant::kFairseq, 33, 1e4, 1, 1e4, 0},
                      TableCase{SinusoidalVariant::kFairseq, 16, 1e4, 1, 1e4, 5}));

TEST(SinusoidalTest, VaswaniPositionZeroAlternatesZeroAndOne) {
  const std::vector<float> row = Row(SinusoidalParams{}, 0, 8);
  EXPECT_THAT(row, ::testing::ElementsAre(0, 1, 0, 1, 0, 1, 0, 1));
}

TEST(SinusoidalTest, VaswaniFirstPairIsSinAndCosOfThePosition) {
  // Channel pair 0 has ω = 1: P[p,0] = sin p, P[p,1] = cos p. sin(1) = 0.8414709848...
  const std::vector<float> row = Row(SinusoidalParams{}, 1, 4);
  EXPECT_NEAR(row[0], 0.8414709848078965, 1e-7);
  EXPECT_NEAR(row[1], 0.5403023058681398, 1e-7);
}

TEST(SinusoidalTest, EveryChannelPairLiesOnTheUnitCircle) {
  for (int64_t pos : {3, 1000, 123456}) {
    const std::vector<float> row = Row(SinusoidalParams{}, pos, 128);
    for (int64_t k = 0; k < 64; ++k) {
      EXPECT_NEAR(row[2 * k] * row[2 * k] + row[2 * k + 1] * row[2 * k + 1], 1.0, 1e-6);
    }
  }
}

TEST(SinusoidalTest, ShiftIsARotationIndependentOfPosition) {
  // P[p+s] is P[p] rotated per pair by angle s·ω_k: the property that lets attention read
  // relative positions (Vaswani et al. §3.5).
  const int64_t dim = 32, shift = 5;
  const std::vector<float> shift_row = Row(SinusoidalParams{}, shift, dim);
  for (int64_t pos : {0, 11, 250}) {
    const std::vector<float> p = Row(SinusoidalParams{}, pos, dim);
    const std::vector<float> shifted = Row(SinusoidalParams{}, pos + shift, dim);
    for (int64_t k = 0; k < dim / 2; ++k) {
      const double s = shift_row[2 * k], c = shift_row[2 * k + 1];
      EXPECT_NEAR(shifted[2 * k], p[2 * k] * c + p[2 * k + 1] * s, 1e-5);
      EXPECT_NEAR(shifted[2 * k + 1], p[2 * k + 1] * c - p[2 * k] * s, 1e-5);
    }
  }
}

TEST(SinusoidalTest, Tensor2TensorPositionZeroIsSinesThenCosines) {
  SinusoidalParams params;
  params.variant = SinusoidalVariant::kTensor2Tensor;
  EXPECT_THAT(Row(params, 0, 7), ::testing::ElementsAre(0, 0, 0, 1, 1, 1, 0));
}

TEST(SinusoidalTest, FairseqPositionZeroIsTensor2TensorAtPaddingIdxPlusOne) {
  SinusoidalParams fairseq;
  fairseq.variant = SinusoidalVariant::kFairseq;
  fairseq.padding_idx = 1;
  SinusoidalParams t2t;
  t2t.variant = SinusoidalVariant::kTensor2Tensor;
  EXPECT_EQ(Row(fairseq, 0, 16), Row(t2t, 2, 16));
  EXPECT_EQ(Row(fairseq, 10, 16), Row(t2t, 12, 16));
}

TEST(SinusoidalTest, AddScalesInputAndAddsRowsAtEachPosition) {
  const int64_t dim = 6;
  const std::vector<int64_t> positions = {4, 0, 9};
  std::vector<float> x(positions.size() * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * static_cast<float>(i) - 1.0f;
  std::vector<float> out(x.size());
  ASSERT_TRUE(AddSinusoidal(SinusoidalParams{}, x.data(), positions.data(), 3, dim, 2.0f,
                            out.data())
                  .ok());
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t c = 0; c < dim; ++c) {
      const double expected = 2.0 * x[t * dim + c] + VaswaniReference(1e4, positions[t], c, dim);
      EXPECT_NEAR(out[t * dim + c], expected, 1e-6);
    }
  }
}

TEST(SinusoidalTest, InvalidParametersAreNamed) {
  SinusoidalParams params;
  params.base = 0.5;
  EXPECT_THAT(std::string(ValidateSinusoidal(params, 8).message()),
              HasSubstr("sinusoidal.base=0.5"));
  params = SinusoidalParams{};
  params.variant = SinusoidalVariant::kTensor2Tensor;
  params.min_timescale = 10;
  params.max_timescale = 5;
  EXPECT_THAT(std::string(ValidateSinusoidal(params, 8).message()),
              HasSubstr("sinusoidal.max_timescale=5"));
  params = SinusoidalParams{};
  params.variant = SinusoidalVariant::kFairseq;
  params.padding_idx = -1;
  EXPECT_THAT(std::string(ValidateSinusoidal(params, 8).message()),
              HasSubstr("sinusoidal.padding_idx=-1"));
  params = SinusoidalParams{};
  params.base = std::nan("");
  EXPECT_EQ(ValidateSinusoidal(params, 8).code(), absl::StatusCode::kInvalidArgument);

  const float x[2] = {0, 0};
  const int64_t negative[1] = {-3};
  float out[2];
  absl::Status status = AddSinusoidal(SinusoidalParams{}, x, negative, 1, 2, 1.0f, out);
  EXPECT_THAT(std::string(status.message()), HasSubstr("position_ids[0]=-3"));
}

}  // namespace
}  // namespace attnserve
