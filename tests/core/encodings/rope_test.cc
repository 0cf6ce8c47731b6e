// RoPE and its Hugging Face rope_scaling variants against an independent double-precision
// reference, published closed-form values, rotation properties and parameter validation.
#include "core/encodings/rope.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <complex>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

constexpr double kPi = 3.14159265358979323846;

// Rotated outputs are rounded once to float from a double computation on both sides, so they
// agree to within float rounding: 1e-6 relative to max(1, |expected|).
constexpr double kApplyRelTolerance = 1e-6;
// Frequencies are double on both sides and only differ in how pow/exp/log round.
constexpr double kFreqRelTolerance = 1e-12;

// ---------------------------------------------------------------------------------------------
// Independent reference, written from the formulas (HF modeling_rope_utils.py,
// apply_rotary_pos_emb / GPT-J rotate_every_two), deliberately coded differently from
// core/encodings/rope.cc: exp/log instead of pow, wavelengths, rotate_half, complex multiplication.
// ---------------------------------------------------------------------------------------------

struct RefFrequencies {
  std::vector<double> inv_freq;
  double attention_factor = 1.0;
};

// θ^(−2k/r) as exp(−(2k/r)·ln θ).
double RefDefaultFreq(double log_theta, int64_t k, int64_t r) {
  return std::exp(-(2.0 * k / r) * log_theta);
}

double RefMscale(double scale, double m) {
  return scale <= 1 ? 1.0 : 1.0 + m * 0.1 * std::log(scale);
}

RefFrequencies RefFreqs(const RopeParams& p, int64_t head_dim, int64_t seq_len) {
  const int64_t r = p.rotary_dim == 0 ? head_dim : p.rotary_dim;
  const RopeScaling& s = p.scaling;
  RefFrequencies out;
  out.inv_freq.resize(r / 2);
  double log_theta = std::log(p.theta);
  if (s.type == RopeScalingType::kDynamicNtk) {
    const double L = static_cast<double>(s.original_max_positions);
    const double seq = seq_len > s.original_max_positions ? static_cast<double>(seq_len) : L;
    // ln θ' = ln θ + r/(r−2)·ln(factor·(seq/L − 1) + 1).
    log_theta += static_cast<double>(r) / (r - 2) * std::log(s.factor * (seq / L - 1.0) + 1.0);
  }
  for (int64_t k = 0; k < r / 2; ++k) out.inv_freq[k] = RefDefaultFreq(log_theta, k, r);

  switch (s.type) {
    case RopeScalingType::kNone:
    case RopeScalingType::kDynamicNtk:
      break;
    case RopeScalingType::kLinear:
      for (double& f : out.inv_freq) f = f / s.factor;
      break;
    case RopeScalingType::kYarn: {
      const double L = static_cast<double>(s.original_max_positions);
      auto dim_for_rotations = [&](double rotations) {
        // Solve L·θ^(−2d/r) / (2π) = rotations for d.
        return r * std::log(L / (2 * kPi * rotations)) / (2 * log_theta);
      };
      // HF truncates the range outward to whole dims unless truncate=false.
      const double raw_lo = dim_for_rotations(s.beta_fast);
      const double raw_hi = dim_for_rotations(s.beta_slow);
      const double lo = std::max(0.0, s.yarn_truncate ? std::floor(raw_lo) : raw_lo);
      double hi = std::min(static_cast<double>(r - 1), s.yarn_truncate ? std::ceil(raw_hi) : raw_hi);
      if (hi == lo) hi = hi + 0.001;
      for (int64_t k = 0; k < r / 2; ++k) {
        const double t = std::min(1.0, std::max(0.0, (k - lo) / (hi - lo)));
        // t = 0: extrapolate (keep), t = 1: interpolate (divide by factor).
        const double keep = out.inv_freq[k];
        out.inv_freq[k] = keep * (1.0 - t) + (keep / s.factor) * t;
      }
      if (s.attention_factor) {
        out.attention_factor = *s.attention_factor;
      } else if (s.mscale != 0 && s.mscale_all_dim != 0) {
        out.attention_factor =
            RefMscale(s.factor, s.mscale) / RefMscale(s.factor, s.mscale_all_dim);
      } else {
        out.attention_factor = RefMscale(s.factor, 1.0);
      }
      break;
    }
    case RopeScalingType::kLlama3: {
      const double L = s.original_max_positions == 0 ? 8192.0 : s.original_max_positions;
      for (double& f : out.inv_freq) {
        const double wavelen = 2 * kPi / f;
        if (wavelen < L / s.high_freq_factor) continue;  // high frequency: kept
        if (wavelen > L / s.low_freq_factor) {           // low frequency: interpolated
          f = f / s.factor;
          continue;
        }
        const double smooth =
            (L / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = smooth * f + (1 - smooth) * (f / s.factor);
      }
      break;
    }
    case RopeScalingType::kLongRope: {
      const std::vector<double>& ext =
          seq_len > s.original_max_positions ? s.long_factor : s.short_factor;
      for (int64_t k = 0; k < r / 2; ++k) out.inv_freq[k] = out.inv_freq[k] / ext[k];
      if (s.attention_factor) {
        out.attention_factor = *s.attention_factor;
      } else {
        const double scale = static_cast<double>(s.max_positions) / s.original_max_positions;
        out.attention_factor =
            scale <= 1
                ? 1.0
                : std::sqrt(1 + std::log(scale) / std::log(double(s.original_max_positions)));
      }
      break;
    }
  }
  return out;
}

// x: [tokens, heads, head_dim]; returns the rotated copy in double.
std::vector<double> RefApply(const RopeParams& p, const std::vector<float>& x,
                             const std::vector<int64_t>& positions, int64_t heads, int64_t head_dim,
                             int64_t seq_len) {
  if (seq_len == 0) seq_len = *std::max_element(positions.begin(), positions.end()) + 1;
  const RefFrequencies fr = RefFreqs(p, head_dim, seq_len);
  const int64_t r = p.rotary_dim == 0 ? head_dim : p.rotary_dim;
  const int64_t half = r / 2;
  std::vector<double> out(x.begin(), x.end());
  for (size_t t = 0; t < positions.size(); ++t) {
    const double pos = static_cast<double>(positions[t]);
    for (int64_t h = 0; h < heads; ++h) {
      double* v = out.data() + (t * heads + h) * head_dim;
      if (p.layout == RopeLayout::kInterleaved) {
        // GPT-J / Meta: pair (2k, 2k+1) is the complex number v[2k] + i·v[2k+1], times f·e^{iφ}.
        for (int64_t k = 0; k < half; ++k) {
          const std::complex<double> z(v[2 * k], v[2 * k + 1]);
          const std::complex<double> w = z * std::polar(fr.attention_factor, pos * fr.inv_freq[k]);
          v[2 * k] = w.real();
          v[2 * k + 1] = w.imag();
        }
      } else {
        // HF: q·cos + rotate_half(q)·sin with cos, sin = cat(freqs, freqs) over the r dims.
        std::vector<double> q(v, v + r), cos_full(r), sin_full(r), rotated(r);
        for (int64_t d = 0; d < r; ++d) {
          const double phi = pos * fr.inv_freq[d % half];
          cos_full[d] = fr.attention_factor * std::cos(phi);
          sin_full[d] = fr.attention_factor * std::sin(phi);
          rotated[d] = d < half ? -q[d + half] : q[d - half];
        }
        for (int64_t d = 0; d < r; ++d) v[d] = q[d] * cos_full[d] + rotated[d] * sin_full[d];
      }
    }
  }
  return out;
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& e : v) e = dist(gen);
  return v;
}

std::vector<int64_t> Iota(int64_t count, int64_t offset) {
  std::vector<int64_t> v(count);
  for (int64_t t = 0; t < count; ++t) v[t] = offset + t;
  return v;
}

RopeParams Params(RopeScalingType type, RopeLayout layout, int64_t rotary_dim = 0,
                  double theta = 10000.0) {
  RopeParams p;
  p.theta = theta;
  p.rotary_dim = rotary_dim;
  p.layout = layout;
  p.scaling.type = type;
  return p;
}

std::vector<double> Ramp(int64_t n, double first, double last) {
  std::vector<double> v(n);
  for (int64_t k = 0; k < n; ++k) v[k] = first + (last - first) * k / std::max<int64_t>(n - 1, 1);
  return v;
}

// Applies params to a copy of x through the code under test.
std::vector<float> Apply(const RopeParams& p, std::vector<float> x,
                         const std::vector<int64_t>& positions, int64_t heads, int64_t head_dim,
                         int64_t seq_len = 0) {
  const absl::Status status =
      ApplyRope(p, x.data(), positions.data(), static_cast<int64_t>(positions.size()), heads,
                head_dim, seq_len);
  EXPECT_TRUE(status.ok()) << status;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Parameter table against the reference.
// ---------------------------------------------------------------------------------------------

struct ApplyCase {
  std::string name;
  RopeParams params;
  int64_t head_dim;
  int64_t heads;
  std::vector<int64_t> positions;
  int64_t seq_len;  // 0 = from positions
};

std::vector<ApplyCase> ApplyCases() {
  std::vector<ApplyCase> cases;
  const std::vector<int64_t> shuffled = {5, 0, 3, 3, 17, 2, 9};  // non-monotonic, repeated
  for (RopeLayout layout : {RopeLayout::kHalfSplit, RopeLayout::kInterleaved}) {
    const std::string l = layout == RopeLayout::kHalfSplit ? "Half" : "Interleaved";
    cases.push_back({"None" + l, Params(RopeScalingType::kNone, layout), 64, 3, Iota(7, 0), 0});
    cases.push_back(
        {"NoneOffset" + l, Params(RopeScalingType::kNone, layout), 64, 2, Iota(5, 1000), 0});
    cases.push_back(
        {"NoneShuffled" + l, Params(RopeScalingType::kNone, layout), 16, 4, shuffled, 0});
    cases.push_back({"NoneTheta500k" + l, Params(RopeScalingType::kNone, layout, 0, 500000.0), 128,
                     2, Iota(3, 131000), 0});
    cases.push_back({"NoneTheta1e6Partial" + l, Params(RopeScalingType::kNone, layout, 32, 1.0e6),
                     128, 3, Iota(5, 7), 0});
    cases.push_back(
        {"PartialR2" + l, Params(RopeScalingType::kNone, layout, 2), 10, 3, shuffled, 0});
    cases.push_back({"PartialR8Of12" + l, Params(RopeScalingType::kNone, layout, 8, 100.0), 12, 5,
                     Iota(9, 40), 0});

    RopeParams linear = Params(RopeScalingType::kLinear, layout, 24);
    linear.scaling.factor = 4.0;
    cases.push_back({"Linear" + l, linear, 32, 3, Iota(7, 3000), 0});

    RopeParams ntk = Params(RopeScalingType::kDynamicNtk, layout);
    ntk.scaling.factor = 2.0;
    ntk.scaling.original_max_positions = 16;
    cases.push_back({"DynamicNtkShort" + l, ntk, 32, 2, shuffled, 0});    // seq 18 > 16
    cases.push_back({"DynamicNtkLong" + l, ntk, 32, 2, Iota(5, 60), 0});  // seq 65
    cases.push_back({"DynamicNtkSeqLen" + l, ntk, 32, 2, Iota(3, 0), 1000});
    cases.push_back({"DynamicNtkWithin" + l, ntk, 32, 2, Iota(3, 4), 16});

    RopeParams yarn = Params(RopeScalingType::kYarn, layout);
    yarn.scaling.factor = 4.0;
    yarn.scaling.original_max_positions = 4096;  // r=64: ramp over k in [10, 23]
    cases.push_back({"Yarn" + l, yarn, 64, 3, Iota(7, 16000), 0});
    RopeParams yarn_small = yarn;
    yarn_small.rotary_dim = 16;
    yarn_small.scaling.original_max_positions = 64;
    yarn_small.scaling.factor = 8.0;
    yarn_small.scaling.mscale = 0.707;
    yarn_small.scaling.mscale_all_dim = 1.0;
    cases.push_back({"YarnMscalePartial" + l, yarn_small, 24, 2, shuffled, 0});
    RopeParams yarn_override = yarn;
    yarn_override.scaling.attention_factor = 0.8;
    yarn_override.scaling.beta_fast = 16;
    yarn_override.scaling.beta_slow = 2;
    cases.push_back({"YarnOverride" + l, yarn_override, 64, 1, Iota(3, 5), 0});
    RopeParams yarn_untruncated = yarn;
    yarn_untruncated.scaling.yarn_truncate = false;  // gpt-oss style fractional ramp ends
    cases.push_back({"YarnUntruncated" + l, yarn_untruncated, 64, 2, Iota(9, 700), 0});

    RopeParams yarn_wide = Params(RopeScalingType::kYarn, layout, 16, 100.0);
    yarn_wide.scaling.factor = 3.0;
    yarn_wide.scaling.original_max_positions = 4096;  // high = ceil(11.26) = 12 > r/2: clamp r−1
    cases.push_back({"YarnHighAboveHalf" + l, yarn_wide, 16, 2, Iota(5, 3), 0});
    RopeParams yarn_tiny = Params(RopeScalingType::kYarn, layout, 8);
    yarn_tiny.scaling.factor = 2.0;
    yarn_tiny.scaling.original_max_positions = 6;  // low = high = 0: HF's +0.001
    cases.push_back({"YarnCollapsedRamp" + l, yarn_tiny, 8, 2, Iota(5, 3), 0});

    RopeParams llama3 = Params(RopeScalingType::kLlama3, layout, 0, 500000.0);
    llama3.scaling.factor = 8.0;
    cases.push_back({"Llama3" + l, llama3, 128, 2, Iota(5, 20000), 0});
    RopeParams llama3_small = llama3;
    llama3_small.scaling.original_max_positions = 256;
    llama3_small.scaling.low_freq_factor = 2.0;
    llama3_small.scaling.high_freq_factor = 16.0;
    llama3_small.theta = 10000.0;
    llama3_small.rotary_dim = 32;
    cases.push_back({"Llama3Small" + l, llama3_small, 48, 3, shuffled, 0});

    RopeParams longrope = Params(RopeScalingType::kLongRope, layout, 16);
    longrope.scaling.short_factor = Ramp(8, 1.0, 1.5);
    longrope.scaling.long_factor = Ramp(8, 1.1, 40.0);
    longrope.scaling.original_max_positions = 16;
    longrope.scaling.max_positions = 512;
    cases.push_back({"LongRopeShort" + l, longrope, 24, 2, {15, 0, 7}, 0});
    cases.push_back({"LongRopeLong" + l, longrope, 24, 2, {16, 0, 300}, 0});
    RopeParams longrope_override = longrope;
    longrope_override.scaling.attention_factor = 1.25;
    cases.push_back({"LongRopeOverride" + l, longrope_override, 16, 3, Iota(5, 100), 0});
  }
  return cases;
}

class RopeApplyTest : public ::testing::TestWithParam<ApplyCase> {};

TEST_P(RopeApplyTest, FrequenciesMatchReference) {
  const ApplyCase& c = GetParam();
  ASSERT_TRUE(ValidateRope(c.params, c.head_dim).ok()) << ValidateRope(c.params, c.head_dim);
  const int64_t seq_len =
      c.seq_len != 0 ? c.seq_len : *std::max_element(c.positions.begin(), c.positions.end()) + 1;
  const RopeFrequencies got = ComputeRopeFrequencies(c.params, c.head_dim, seq_len);
  const RefFrequencies want = RefFreqs(c.params, c.head_dim, seq_len);
  ASSERT_EQ(got.inv_freq.size(), want.inv_freq.size());
  for (size_t k = 0; k < want.inv_freq.size(); ++k) {
    EXPECT_NEAR(got.inv_freq[k], want.inv_freq[k], kFreqRelTolerance * want.inv_freq[k])
        << "k=" << k;
  }
  EXPECT_NEAR(got.attention_factor, want.attention_factor, 1e-14);
}

TEST_P(RopeApplyTest, MatchesDoublePrecisionReference) {
  const ApplyCase& c = GetParam();
  const int64_t tokens = static_cast<int64_t>(c.positions.size());
  const std::vector<float> x = RandomVector(tokens * c.heads * c.head_dim, 17);
  const std::vector<float> got = Apply(c.params, x, c.positions, c.heads, c.head_dim, c.seq_len);
  const std::vector<double> want =
      RefApply(c.params, x, c.positions, c.heads, c.head_dim, c.seq_len);
  const int64_t r = c.params.rotary_dim == 0 ? c.head_dim : c.params.rotary_dim;
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t d = static_cast<int64_t>(i) % c.head_dim;
    if (d >= r) {
      // Pass-through dims are untouched, bit for bit.
      ASSERT_EQ(got[i], x[i]) << "i=" << i << " d=" << d;
    } else {
      ASSERT_NEAR(got[i], want[i], kApplyRelTolerance * std::max(1.0, std::abs(want[i])))
          << "i=" << i << " token=" << i / (c.heads * c.head_dim) << " d=" << d;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, RopeApplyTest, ::testing::ValuesIn(ApplyCases()),
                         [](const ::testing::TestParamInfo<ApplyCase>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Hand-checkable and published values.
// ---------------------------------------------------------------------------------------------

TEST(RopeValuesTest, DefaultFrequenciesForR4AreOneAndOneHundredth) {
  const RopeFrequencies f =
      ComputeRopeFrequencies(Params(RopeScalingType::kNone, RopeLayout::kHalfSplit), 4, 1);
  ASSERT_EQ(f.inv_freq.size(), 2u);
  EXPECT_DOUBLE_EQ(f.inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(f.inv_freq[1], 0.01);  // 10000^(−2/4)
  EXPECT_EQ(f.attention_factor, 1.0);
}

TEST(RopeValuesTest, LinearDividesEveryFrequency) {
  RopeParams p = Params(RopeScalingType::kLinear, RopeLayout::kHalfSplit);
  p.scaling.factor = 4.0;
  const RopeFrequencies f = ComputeRopeFrequencies(p, 4, 1);
  EXPECT_DOUBLE_EQ(f.inv_freq[0], 0.25);
  EXPECT_DOUBLE_EQ(f.inv_freq[1], 0.0025);
}

TEST(RopeValuesTest, PositionOneRotatesUnitPairByOneRadian) {
  const double c1 = 0.5403023058681398, s1 = 0.8414709848078965;  // cos 1, sin 1
  // Half-split, r=4: pair 0 is dims (0, 2).
  std::vector<float> half = {1, 0, 0, 0};
  half = Apply(Params(RopeScalingType::kNone, RopeLayout::kHalfSplit), half, {1}, 1, 4);
  EXPECT_NEAR(half[0], c1, 1e-7);
  EXPECT_NEAR(half[2], s1, 1e-7);
  EXPECT_EQ(half[1], 0.0f);
  EXPECT_EQ(half[3], 0.0f);
  // Interleaved: pair 0 is dims (0, 1).
  std::vector<float> inter = {1, 0, 0, 0};
  inter = Apply(Params(RopeScalingType::kNone, RopeLayout::kInterleaved), inter, {1}, 1, 4);
  EXPECT_NEAR(inter[0], c1, 1e-7);
  EXPECT_NEAR(inter[1], s1, 1e-7);
  // Pair 1 (ω = 0.01) of (0, 1) at position 100 turns by 1 radian too: (−sin 1, cos 1).
  std::vector<float> second = {0, 0, 0, 1};
  second = Apply(Params(RopeScalingType::kNone, RopeLayout::kInterleaved), second, {100}, 1, 4);
  EXPECT_NEAR(second[2], -s1, 1e-7);
  EXPECT_NEAR(second[3], c1, 1e-7);
}

TEST(RopeValuesTest, PositionZeroIsIdentity) {
  const std::vector<float> x = RandomVector(3 * 16, 5);
  for (RopeLayout layout : {RopeLayout::kHalfSplit, RopeLayout::kInterleaved}) {
    EXPECT_EQ(Apply(Params(RopeScalingType::kNone, layout), x, {0}, 3, 16), x);
  }
}

TEST(RopeValuesTest, Llama31KeepsHighAndDividesLowFrequencies) {
  // Llama 3.1: theta 500000, head_dim 128, factor 8, low 1, high 4, original context 8192.
  RopeParams base = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit, 0, 500000.0);
  RopeParams llama3 = base;
  llama3.scaling.type = RopeScalingType::kLlama3;
  llama3.scaling.factor = 8.0;
  llama3.scaling.low_freq_factor = 1.0;
  llama3.scaling.high_freq_factor = 4.0;
  llama3.scaling.original_max_positions = 8192;
  ASSERT_TRUE(ValidateRope(llama3, 128).ok());
  const std::vector<double> plain = ComputeRopeFrequencies(base, 128, 1).inv_freq;
  const std::vector<double> scaled = ComputeRopeFrequencies(llama3, 128, 1).inv_freq;
  int kept = 0, divided = 0, medium = 0;
  for (size_t k = 0; k < plain.size(); ++k) {
    const double wavelen = 2 * kPi / plain[k];
    if (wavelen < 2048) {
      EXPECT_EQ(scaled[k], plain[k]) << "k=" << k;
      ++kept;
    } else if (wavelen > 8192) {
      EXPECT_DOUBLE_EQ(scaled[k], plain[k] / 8) << "k=" << k;
      ++divided;
    } else {
      EXPECT_GT(scaled[k], plain[k] / 8) << "k=" << k;
      EXPECT_LT(scaled[k], plain[k]) << "k=" << k;
      ++medium;
    }
  }
  // By hand: wavelen_k = 2π·500000^(k/64) < 2048 ⇔ k <= 28, > 8192 ⇔ k >= 35.
  EXPECT_EQ(kept, 29);
  EXPECT_EQ(medium, 6);
  EXPECT_EQ(divided, 29);
}

TEST(RopeValuesTest, Llama3OriginalMaxPositionsZeroMeans8192) {
  RopeParams p = Params(RopeScalingType::kLlama3, RopeLayout::kHalfSplit, 0, 500000.0);
  p.scaling.factor = 8.0;
  RopeParams explicit_8192 = p;
  explicit_8192.scaling.original_max_positions = 8192;
  EXPECT_EQ(ComputeRopeFrequencies(p, 128, 1).inv_freq,
            ComputeRopeFrequencies(explicit_8192, 128, 1).inv_freq);
}

TEST(RopeValuesTest, YarnAttentionFactorForFactor4) {
  RopeParams p = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  p.scaling.factor = 4.0;
  p.scaling.original_max_positions = 4096;
  EXPECT_NEAR(ComputeRopeFrequencies(p, 128, 1).attention_factor, 1.1386294361, 1e-10);
  p.scaling.factor = 1.0;  // no extension: no temperature
  EXPECT_EQ(ComputeRopeFrequencies(p, 128, 1).attention_factor, 1.0);
  p.scaling.factor = 0.5;
  EXPECT_EQ(ComputeRopeFrequencies(p, 128, 1).attention_factor, 1.0);
}

TEST(RopeValuesTest, YarnMscaleRatio) {
  RopeParams p = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  p.scaling.original_max_positions = 4096;
  p.scaling.factor = 40.0;
  p.scaling.mscale = 1.0;  // DeepSeek-V3: mscale = mscale_all_dim → factor 1
  p.scaling.mscale_all_dim = 1.0;
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(p, 64, 1).attention_factor, 1.0);
  p.scaling.factor = std::exp(1.0);  // ln(factor) = 1
  p.scaling.mscale = 2.0;
  EXPECT_NEAR(ComputeRopeFrequencies(p, 64, 1).attention_factor, 1.2 / 1.1, 1e-14);
  p.scaling.mscale_all_dim = 0.0;  // only one set: the plain 0.1·ln(s) + 1
  EXPECT_NEAR(ComputeRopeFrequencies(p, 64, 1).attention_factor, 1.1, 1e-14);
  p.scaling.attention_factor = 0.5;  // the override wins
  EXPECT_EQ(ComputeRopeFrequencies(p, 64, 1).attention_factor, 0.5);
}

TEST(RopeValuesTest, YarnRampBoundsForR128) {
  // r=128, theta 1e4, L=4096: f(32) = 128·ln(4096/(64π))/(2 ln 1e4) = 20.94 → low 20;
  // f(1) = 128·ln(4096/(2π))/(2 ln 1e4) = 45.03 → high 46. Pairs k <= 20 keep the default
  // frequency, k >= 46 are divided by the factor, k = 33 is half way.
  RopeParams base = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  RopeParams yarn = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  yarn.scaling.factor = 16.0;
  yarn.scaling.original_max_positions = 4096;
  const std::vector<double> plain = ComputeRopeFrequencies(base, 128, 1).inv_freq;
  const std::vector<double> scaled = ComputeRopeFrequencies(yarn, 128, 1).inv_freq;
  for (int k = 0; k <= 20; ++k) EXPECT_NEAR(scaled[k], plain[k], 1e-15 * plain[k]) << k;
  EXPECT_LT(scaled[21], plain[21]);
  EXPECT_GT(scaled[45], plain[45] / 16);
  for (int k = 46; k < 64; ++k) EXPECT_NEAR(scaled[k], plain[k] / 16, 1e-15 * plain[k]) << k;
  EXPECT_NEAR(scaled[33], plain[33] * (0.5 + 0.5 / 16), 1e-15 * plain[33]);
}

TEST(RopeValuesTest, YarnCollapsedRampKeepsOnlyPairZero) {
  // L = 6 < 2π: f(beta_slow = 1) = 8·ln(6/2π)/(2 ln 1e4) ∈ (−1, 0] and f(32) < 0, so
  // low = high = 0 and HF widens high to 0.001: pair 0 keeps its frequency, every other pair
  // is divided by the factor.
  RopeParams base = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  RopeParams yarn = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  yarn.scaling.factor = 2.0;
  yarn.scaling.original_max_positions = 6;
  const std::vector<double> plain = ComputeRopeFrequencies(base, 8, 1).inv_freq;
  const std::vector<double> scaled = ComputeRopeFrequencies(yarn, 8, 1).inv_freq;
  EXPECT_DOUBLE_EQ(scaled[0], plain[0]);
  for (int k = 1; k < 4; ++k) EXPECT_DOUBLE_EQ(scaled[k], plain[k] / 2) << k;
}

TEST(RopeValuesTest, LongRopePhi3AttentionFactor) {
  // Phi-3-mini-128k: 131072 / 4096 = 32 → sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12).
  RopeParams p = Params(RopeScalingType::kLongRope, RopeLayout::kHalfSplit, 0);
  p.scaling.short_factor = std::vector<double>(48, 1.0);
  p.scaling.long_factor = std::vector<double>(48, 2.0);
  p.scaling.original_max_positions = 4096;
  p.scaling.max_positions = 131072;
  ASSERT_TRUE(ValidateRope(p, 96).ok());
  EXPECT_NEAR(ComputeRopeFrequencies(p, 96, 1).attention_factor, std::sqrt(17.0 / 12.0), 1e-14);
  EXPECT_NEAR(ComputeRopeFrequencies(p, 96, 1).attention_factor, 1.1902380714238083, 1e-14);
  p.scaling.max_positions = 4096;  // s = 1
  EXPECT_EQ(ComputeRopeFrequencies(p, 96, 1).attention_factor, 1.0);
  p.scaling.attention_factor = 1.5;
  EXPECT_EQ(ComputeRopeFrequencies(p, 96, 1).attention_factor, 1.5);
}

TEST(RopeValuesTest, LongRopeSwitchesFactorsPastOriginalLength) {
  RopeParams p = Params(RopeScalingType::kLongRope, RopeLayout::kHalfSplit, 4);
  p.scaling.short_factor = {1.0, 2.0};
  p.scaling.long_factor = {4.0, 8.0};
  p.scaling.original_max_positions = 16;
  p.scaling.max_positions = 64;
  // inv = 1/(ext_k·10000^(2k/4)): short {1, 0.005}, long {0.25, 0.00125}.
  const RopeFrequencies at_16 = ComputeRopeFrequencies(p, 4, 16);
  EXPECT_DOUBLE_EQ(at_16.inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(at_16.inv_freq[1], 0.005);
  const RopeFrequencies at_17 = ComputeRopeFrequencies(p, 4, 17);
  EXPECT_DOUBLE_EQ(at_17.inv_freq[0], 0.25);
  EXPECT_DOUBLE_EQ(at_17.inv_freq[1], 0.00125);
  // Through ApplyRope, seq_len = max(position) + 1: position 15 → short, 16 → long.
  const std::vector<float> x = RandomVector(2 * 4, 19);
  EXPECT_EQ(Apply(p, x, {15, 0}, 1, 4), Apply(p, x, {15, 0}, 1, 4, 16));
  EXPECT_EQ(Apply(p, x, {16, 0}, 1, 4), Apply(p, x, {16, 0}, 1, 4, 17));
  EXPECT_NE(Apply(p, x, {16, 0}, 1, 4), Apply(p, x, {16, 0}, 1, 4, 16));
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

double HeadNorm(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  return std::sqrt(s);
}

double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<RopeParams> UnitFactorParams(RopeLayout layout) {
  std::vector<RopeParams> out;
  out.push_back(Params(RopeScalingType::kNone, layout));
  out.push_back(Params(RopeScalingType::kNone, layout, 16, 500000.0));
  RopeParams linear = Params(RopeScalingType::kLinear, layout);
  linear.scaling.factor = 3.0;
  out.push_back(linear);
  RopeParams llama3 = Params(RopeScalingType::kLlama3, layout, 0, 500000.0);
  llama3.scaling.factor = 8.0;
  out.push_back(llama3);
  RopeParams ntk = Params(RopeScalingType::kDynamicNtk, layout);
  ntk.scaling.factor = 2.0;
  ntk.scaling.original_max_positions = 8;
  out.push_back(ntk);
  return out;
}

TEST(RopePropertyTest, PreservesTheNormOfEveryHead) {
  const int64_t heads = 4, head_dim = 64;
  const std::vector<int64_t> positions = {0, 1, 77, 4096, 100000};
  const std::vector<float> x = RandomVector(positions.size() * heads * head_dim, 3);
  for (RopeLayout layout : {RopeLayout::kHalfSplit, RopeLayout::kInterleaved}) {
    for (const RopeParams& p : UnitFactorParams(layout)) {
      const std::vector<float> y = Apply(p, x, positions, heads, head_dim);
      for (size_t i = 0; i < x.size(); i += head_dim) {
        const double before = HeadNorm(&x[i], head_dim);
        EXPECT_NEAR(HeadNorm(&y[i], head_dim), before, 1e-6 * before) << "head at " << i;
      }
    }
  }
}

TEST(RopePropertyTest, YarnScalesEachHeadNormByTheAttentionFactor) {
  RopeParams p = Params(RopeScalingType::kYarn, RopeLayout::kInterleaved);
  p.scaling.factor = 4.0;
  p.scaling.original_max_positions = 512;
  const double f = 0.1 * std::log(4.0) + 1;
  const std::vector<int64_t> positions = {3, 900, 2000};
  const std::vector<float> x = RandomVector(positions.size() * 2 * 32, 9);
  const std::vector<float> y = Apply(p, x, positions, 2, 32);
  for (size_t i = 0; i < x.size(); i += 32) {
    EXPECT_NEAR(HeadNorm(&y[i], 32), f * HeadNorm(&x[i], 32), 1e-6 * f * HeadNorm(&x[i], 32));
  }
}

TEST(RopePropertyTest, QueryKeyProductDependsOnlyOnPositionDifference) {
  const int64_t head_dim = 64;
  const std::vector<float> qk = RandomVector(2 * head_dim, 11);  // token 0 = q, token 1 = k
  const double scale = HeadNorm(&qk[0], head_dim) * HeadNorm(&qk[head_dim], head_dim);
  for (RopeLayout layout : {RopeLayout::kHalfSplit, RopeLayout::kInterleaved}) {
    for (const RopeParams& p : UnitFactorParams(layout)) {
      for (int64_t d : {0, 1, 5, 300}) {
        // seq_len fixed so that dynamic NTK uses the same frequencies for every pair.
        std::vector<float> y = Apply(p, qk, {0, d}, 1, head_dim, 1 << 20);
        const double baseline = Dot(&y[0], &y[head_dim], head_dim);
        for (int64_t start : {1, 17, 1000, 65536}) {
          y = Apply(p, qk, {start, start + d}, 1, head_dim, 1 << 20);
          EXPECT_NEAR(Dot(&y[0], &y[head_dim], head_dim), baseline, 2e-6 * scale)
              << "d=" << d << " start=" << start;
        }
      }
      // And a different difference gives a different product (the check can fail).
      const std::vector<float> a = Apply(p, qk, {10, 11}, 1, head_dim, 1 << 20);
      const std::vector<float> b = Apply(p, qk, {10, 14}, 1, head_dim, 1 << 20);
      EXPECT_GT(std::abs(Dot(&a[0], &a[head_dim], head_dim) - Dot(&b[0], &b[head_dim], head_dim)),
                1e-3);
    }
  }
}

TEST(RopePropertyTest, LayoutsAgreeAfterPairPermutation) {
  // Interleaved pair (2k, 2k+1) ↔ half-split pair (k, k + r/2); dims >= r stay in place.
  const int64_t head_dim = 20, r = 12, heads = 3;
  const std::vector<int64_t> positions = {9, 2, 40000, 7, 123};
  std::vector<RopeParams> variants = {Params(RopeScalingType::kNone, RopeLayout::kHalfSplit, r)};
  RopeParams yarn = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit, r);
  yarn.scaling.factor = 8.0;
  yarn.scaling.original_max_positions = 256;
  variants.push_back(yarn);
  const std::vector<float> half_x = RandomVector(positions.size() * heads * head_dim, 21);
  auto permute = [&](const std::vector<float>& half) {
    std::vector<float> inter = half;
    for (size_t base = 0; base < half.size(); base += head_dim) {
      for (int64_t k = 0; k < r / 2; ++k) {
        inter[base + 2 * k] = half[base + k];
        inter[base + 2 * k + 1] = half[base + k + r / 2];
      }
    }
    return inter;
  };
  for (RopeParams p : variants) {
    p.layout = RopeLayout::kHalfSplit;
    const std::vector<float> half_y = Apply(p, half_x, positions, heads, head_dim);
    p.layout = RopeLayout::kInterleaved;
    const std::vector<float> inter_y = Apply(p, permute(half_x), positions, heads, head_dim);
    const std::vector<float> expected = permute(half_y);
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(inter_y[i], expected[i]) << i;
    // The two layouts really do differ on the same input (the permutation matters).
    EXPECT_NE(Apply(p, half_x, positions, heads, head_dim), half_y);
  }
}

TEST(RopePropertyTest, YarnAttentionFactorScalesLogitsBySquare) {
  RopeParams with = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  with.scaling.factor = 4.0;
  with.scaling.original_max_positions = 1024;
  RopeParams without = with;
  without.scaling.attention_factor = 1.0;  // same inv_freq, no temperature
  ASSERT_EQ(ComputeRopeFrequencies(with, 64, 1).inv_freq,
            ComputeRopeFrequencies(without, 64, 1).inv_freq);
  const double f = 0.1 * std::log(4.0) + 1;
  const std::vector<float> qk = RandomVector(2 * 64, 13);
  for (int64_t d : {0, 3, 5000}) {
    const std::vector<float> a = Apply(with, qk, {7, 7 + d}, 1, 64);
    const std::vector<float> b = Apply(without, qk, {7, 7 + d}, 1, 64);
    const double logit_with = Dot(&a[0], &a[64], 64), logit_without = Dot(&b[0], &b[64], 64);
    EXPECT_NEAR(logit_with, f * f * logit_without, 1e-5 * std::abs(f * f * logit_without) + 1e-5)
        << "d=" << d;
  }
}

TEST(RopePropertyTest, DynamicNtkIsDefaultUpToOriginalLengthAndGrowsThetaBeyond) {
  RopeParams base = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  RopeParams ntk = Params(RopeScalingType::kDynamicNtk, RopeLayout::kHalfSplit);
  ntk.scaling.factor = 4.0;
  ntk.scaling.original_max_positions = 2048;
  const std::vector<double> plain = ComputeRopeFrequencies(base, 64, 1).inv_freq;
  for (int64_t seq_len : {1, 100, 2048}) {
    const std::vector<double> f = ComputeRopeFrequencies(ntk, 64, seq_len).inv_freq;
    for (size_t k = 0; k < plain.size(); ++k) EXPECT_NEAR(f[k], plain[k], 1e-14 * plain[k]);
  }
  const std::vector<double> longer = ComputeRopeFrequencies(ntk, 64, 2049).inv_freq;
  EXPECT_EQ(longer[0], 1.0);  // θ'^0
  for (size_t k = 1; k < plain.size(); ++k) EXPECT_LT(longer[k], plain[k]) << k;
  // θ' for seq 8192: 10000·(4·8192/2048 − 3)^(64/62) = 10000·13^(32/31).
  const std::vector<double> at_8192 = ComputeRopeFrequencies(ntk, 64, 8192).inv_freq;
  const double theta_prime = 10000.0 * std::pow(13.0, 32.0 / 31.0);
  EXPECT_NEAR(at_8192[1], 1.0 / std::pow(theta_prime, 2.0 / 64), 1e-15);

  // Through ApplyRope with seq_len from the positions: max position 2047 → default,
  // 2048 → scaled.
  const std::vector<float> x = RandomVector(2 * 64, 23);
  EXPECT_EQ(Apply(ntk, x, {2047, 1000}, 1, 64), Apply(base, x, {2047, 1000}, 1, 64));
  EXPECT_NE(Apply(ntk, x, {2048, 1000}, 1, 64), Apply(base, x, {2048, 1000}, 1, 64));
  // An explicit seq_len overrides the positions.
  EXPECT_NE(Apply(ntk, x, {5, 6}, 1, 64, 4096), Apply(base, x, {5, 6}, 1, 64));
  EXPECT_EQ(Apply(ntk, x, {5, 6}, 1, 64, 2048), Apply(base, x, {5, 6}, 1, 64));
}

TEST(RopePropertyTest, HeadsOfOneTokenShareTheRotation) {
  // Two heads with the same contents at the same token rotate identically.
  std::vector<float> one = RandomVector(16, 31);
  std::vector<float> two = one;
  two.insert(two.end(), one.begin(), one.end());
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  const std::vector<float> y1 = Apply(p, one, {37}, 1, 16);
  const std::vector<float> y2 = Apply(p, two, {37}, 2, 16);
  EXPECT_EQ(std::vector<float>(y2.begin(), y2.begin() + 16), y1);
  EXPECT_EQ(std::vector<float>(y2.begin() + 16, y2.end()), y1);
}

TEST(RopePropertyTest, NoTokensIsANoOp) {
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  EXPECT_TRUE(ApplyRope(p, nullptr, nullptr, 0, 2, 8, 0).ok());
}

// ---------------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------------

struct InvalidCase {
  std::string name;
  RopeParams params;
  int64_t head_dim;
  std::string message;  // substring naming the parameter and its value
};

std::vector<InvalidCase> InvalidCases() {
  std::vector<InvalidCase> cases;
  const RopeParams ok = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  auto with = [&](auto mutate) {
    RopeParams p = ok;
    mutate(p);
    return p;
  };
  cases.push_back({"HeadDimZero", ok, 0, "head_dim=0 must be >= 1"});
  cases.push_back({"RotaryDimOdd", with([](RopeParams& p) { p.rotary_dim = 7; }), 8,
                   "rope.rotary_dim=7 must be even"});
  cases.push_back({"RotaryDimTooLarge", with([](RopeParams& p) { p.rotary_dim = 80; }), 64,
                   "rope.rotary_dim=80 must be <= head_dim=64"});
  cases.push_back({"RotaryDimNegative", with([](RopeParams& p) { p.rotary_dim = -2; }), 64,
                   "rope.rotary_dim=-2"});
  cases.push_back({"RotaryDimDefaultOdd", ok, 7, "head_dim=7"});
  cases.push_back({"RotaryDimDefaultOne", ok, 1, "rope.rotary_dim="});
  cases.push_back({"ThetaNan", with([](RopeParams& p) { p.theta = std::nan(""); }), 8,
                   "rope.theta=nan must be finite and > 1"});
  cases.push_back({"ThetaOne", with([](RopeParams& p) { p.theta = 1.0; }), 8, "rope.theta=1 "});
  cases.push_back(
      {"ThetaInf", with([](RopeParams& p) { p.theta = INFINITY; }), 8, "rope.theta=inf"});

  auto scaled = [&](RopeScalingType type, auto mutate) {
    RopeParams p = ok;
    p.scaling.type = type;
    p.scaling.original_max_positions = 4096;
    p.scaling.max_positions = 8192;
    p.scaling.short_factor.assign(4, 1.0);
    p.scaling.long_factor.assign(4, 2.0);
    mutate(p);
    return p;
  };
  cases.push_back({"LinearFactorZero",
                   scaled(RopeScalingType::kLinear, [](RopeParams& p) { p.scaling.factor = 0; }), 8,
                   "rope.linear.factor=0 must be finite and > 0"});
  cases.push_back({"LinearFactorNan",
                   scaled(RopeScalingType::kLinear, [](RopeParams& p) { p.scaling.factor = NAN; }),
                   8, "rope.linear.factor=nan"});
  cases.push_back(
      {"DynamicFactorNegative",
       scaled(RopeScalingType::kDynamicNtk, [](RopeParams& p) { p.scaling.factor = -1; }), 8,
       "rope.dynamic_ntk.factor=-1"});
  cases.push_back({"DynamicOriginalZero",
                   scaled(RopeScalingType::kDynamicNtk,
                          [](RopeParams& p) { p.scaling.original_max_positions = 0; }),
                   8, "rope.dynamic_ntk.original_max_positions=0 must be >= 1"});
  cases.push_back({"DynamicRotaryDim2",
                   scaled(RopeScalingType::kDynamicNtk, [](RopeParams& p) { p.rotary_dim = 2; }), 8,
                   "rope.rotary_dim=2"});
  cases.push_back(
      {"YarnFactorInf",
       scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.factor = INFINITY; }), 8,
       "rope.yarn.factor=inf"});
  cases.push_back(
      {"YarnOriginalZero",
       scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.original_max_positions = 0; }),
       8, "rope.yarn.original_max_positions=0"});
  cases.push_back({"YarnBetaFastBelowSlow",
                   scaled(RopeScalingType::kYarn,
                          [](RopeParams& p) {
                            p.scaling.beta_fast = 1;
                            p.scaling.beta_slow = 32;
                          }),
                   8, "rope.yarn.beta_fast=1 must be finite and > beta_slow=32"});
  cases.push_back({"YarnBetaFastEqualsSlow",
                   scaled(RopeScalingType::kYarn,
                          [](RopeParams& p) {
                            p.scaling.beta_fast = 2;
                            p.scaling.beta_slow = 2;
                          }),
                   8, "rope.yarn.beta_fast=2"});
  cases.push_back({"YarnBetaSlowZero",
                   scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.beta_slow = 0; }),
                   8, "rope.yarn.beta_slow=0"});
  cases.push_back({"YarnMscaleNegative",
                   scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.mscale = -1; }), 8,
                   "rope.yarn.mscale=-1"});
  cases.push_back(
      {"YarnMscaleAllDimNan",
       scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.mscale_all_dim = NAN; }), 8,
       "rope.yarn.mscale_all_dim=nan"});
  cases.push_back(
      {"YarnAttentionFactorZero",
       scaled(RopeScalingType::kYarn, [](RopeParams& p) { p.scaling.attention_factor = 0.0; }), 8,
       "rope.yarn.attention_factor=0"});
  cases.push_back({"Llama3FactorZero",
                   scaled(RopeScalingType::kLlama3, [](RopeParams& p) { p.scaling.factor = 0; }), 8,
                   "rope.llama3.factor=0"});
  cases.push_back(
      {"Llama3LowFreqZero",
       scaled(RopeScalingType::kLlama3, [](RopeParams& p) { p.scaling.low_freq_factor = 0; }), 8,
       "rope.llama3.low_freq_factor=0"});
  cases.push_back({"Llama3HighNotAboveLow",
                   scaled(RopeScalingType::kLlama3,
                          [](RopeParams& p) {
                            p.scaling.low_freq_factor = 4;
                            p.scaling.high_freq_factor = 4;
                          }),
                   8, "rope.llama3.high_freq_factor=4 must be finite and > low_freq_factor=4"});
  cases.push_back({"Llama3OriginalNegative",
                   scaled(RopeScalingType::kLlama3,
                          [](RopeParams& p) { p.scaling.original_max_positions = -1; }),
                   8, "rope.llama3.original_max_positions=-1"});
  cases.push_back({"LongRopeShortCount",
                   scaled(RopeScalingType::kLongRope,
                          [](RopeParams& p) { p.scaling.short_factor.assign(3, 1.0); }),
                   8, "rope.longrope.short_factor has 3 values; must have rotary_dim/2=4"});
  cases.push_back({"LongRopeCountFollowsRotaryDim",
                   scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.rotary_dim = 4; }), 8,
                   "rope.longrope.short_factor has 4 values; must have rotary_dim/2=2"});
  cases.push_back(
      {"LongRopeLongEmpty",
       scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.scaling.long_factor = {}; }), 8,
       "rope.longrope.long_factor has 0 values; must have rotary_dim/2=4"});
  cases.push_back(
      {"LongRopeShortValue",
       scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.scaling.short_factor[1] = 0; }), 8,
       "rope.longrope.short_factor[1]=0"});
  cases.push_back(
      {"LongRopeLongValue",
       scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.scaling.long_factor[3] = -2; }), 8,
       "rope.longrope.long_factor[3]=-2"});
  cases.push_back({"LongRopeOriginalZero",
                   scaled(RopeScalingType::kLongRope,
                          [](RopeParams& p) { p.scaling.original_max_positions = 0; }),
                   8, "rope.longrope.original_max_positions=0"});
  cases.push_back(
      {"LongRopeMaxBelowOriginal",
       scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.scaling.max_positions = 100; }), 8,
       "rope.longrope.max_positions=100 must be >= original_max_positions=4096"});
  cases.push_back({"LongRopeOriginalOne",
                   scaled(RopeScalingType::kLongRope,
                          [](RopeParams& p) {
                            p.scaling.original_max_positions = 1;
                            p.scaling.max_positions = 10;
                          }),
                   8, "rope.longrope.original_max_positions=1"});
  cases.push_back(
      {"LongRopeAttentionFactorNan",
       scaled(RopeScalingType::kLongRope, [](RopeParams& p) { p.scaling.attention_factor = NAN; }),
       8, "rope.longrope.attention_factor=nan"});
  return cases;
}

class RopeInvalidTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(RopeInvalidTest, IsInvalidArgumentNamingTheParameter) {
  const InvalidCase& c = GetParam();
  const absl::Status status = ValidateRope(c.params, c.head_dim);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  // ApplyRope reports the same error and leaves x alone.
  std::vector<float> x(std::max<int64_t>(c.head_dim, 1), 0.5f);
  const std::vector<float> before = x;
  const int64_t position = 3;
  const absl::Status applied = ApplyRope(c.params, x.data(), &position, 1, 1, c.head_dim, 0);
  EXPECT_EQ(applied, status);
  EXPECT_EQ(x, before);
}

INSTANTIATE_TEST_SUITE_P(Table, RopeInvalidTest, ::testing::ValuesIn(InvalidCases()),
                         [](const ::testing::TestParamInfo<InvalidCase>& info) {
                           return info.param.name;
                         });

TEST(RopeValidationTest, OptionalFieldsOfOtherScalingsAreIgnored) {
  // Fields not used by the chosen scaling do not make it invalid.
  RopeParams p = Params(RopeScalingType::kLinear, RopeLayout::kHalfSplit);
  p.scaling.factor = 2.0;
  p.scaling.beta_fast = -5;
  p.scaling.short_factor = {1.0};
  p.scaling.original_max_positions = -7;
  EXPECT_TRUE(ValidateRope(p, 8).ok());
  p.scaling.type = RopeScalingType::kNone;
  p.scaling.factor = -1;
  EXPECT_TRUE(ValidateRope(p, 8).ok());
}

TEST(RopeValidationTest, NegativePositionIsNamedAndNothingIsWritten) {
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  std::vector<float> x = RandomVector(5 * 8, 41);
  const std::vector<float> before = x;
  const std::vector<int64_t> positions = {0, 1, 2, -1, 4};
  const absl::Status status = ApplyRope(p, x.data(), positions.data(), 5, 1, 8, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("position_ids[3]=-1 must be in [0, 2147483647]"));
  EXPECT_EQ(x, before);
}

TEST(RopeValidationTest, PositionPastTheLimitIsRejectedNotOverflowed) {
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  std::vector<float> x(8, 1.0f);
  const std::vector<int64_t> positions = {std::numeric_limits<int64_t>::max()};
  PositionTableCache tables;
  const absl::Status status = ApplyRope(p, x.data(), positions.data(), 1, 1, 8, 0, &tables);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("position_ids[0]=9223372036854775807"));
}

TEST(RopeValidationTest, ParametersGivingNonFiniteFrequenciesAreRejected) {
  RopeParams p = Params(RopeScalingType::kLinear, RopeLayout::kHalfSplit);
  p.scaling.factor = 5e-324;  // finite and > 0, but inv_freq / factor overflows to inf
  std::vector<float> x(8, 1.0f);
  const std::vector<int64_t> positions = {3};
  const absl::Status status = ApplyRope(p, x.data(), positions.data(), 1, 1, 8, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("non-finite frequency"));
  p = Params(RopeScalingType::kYarn, RopeLayout::kHalfSplit);
  p.scaling.factor = 4;
  p.scaling.original_max_positions = 64;
  p.scaling.attention_factor = 1e300;
  EXPECT_THAT(std::string(ApplyRope(p, x.data(), positions.data(), 1, 1, 8, 0).message()),
              HasSubstr("attention_factor=1e+300"));
}

TEST(RopeValidationTest, ApplyShapeArgumentsAreNamed) {
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  std::vector<float> x(8, 1.0f);
  const int64_t position = 1;
  absl::Status status = ApplyRope(p, x.data(), &position, 1, 0, 8, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("num_heads=0"));
  status = ApplyRope(p, x.data(), &position, -1, 1, 8, 0);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tokens=-1"));
  status = ApplyRope(p, x.data(), &position, 1, 1, 8, -5);
  EXPECT_THAT(std::string(status.message()), HasSubstr("seq_len=-5"));
}

// Head-major rotation is the token-major rotation applied head by head, bit for bit: f32 out of
// place and in place, bf16 bits widened first (and bf16 out: rounded once); both layouts, partial
// rotary with head dims 10 and 96 (vector loops with and without tails, rotary and pass-through
// dims), a scaling whose frequencies depend on seq_len, positions differing per batch element,
// with and without a table cache.
TEST(RopeHeadMajorTest, EqualsApplyRopePerHead) {
  constexpr int64_t kBatch = 2, kHeads = 3, kSeq = 5;
  std::vector<int64_t> positions = {4, 0, 9, 2, 7, 100, 101, 102, 103, 3};
  for (const auto& [head_dim, rotary_dim] :
       {std::pair<int64_t, int64_t>{10, 8}, std::pair<int64_t, int64_t>{96, 72}}) {
    for (const RopeLayout layout : {RopeLayout::kHalfSplit, RopeLayout::kInterleaved}) {
      for (const bool cached : {false, true}) {
        RopeParams p = Params(RopeScalingType::kDynamicNtk, layout);
        p.rotary_dim = rotary_dim;
        p.scaling.factor = 2.0;
        p.scaling.original_max_positions = 16;  // seq_len 104 is past it: frequencies change
        PositionTableCache cache;
        PositionTableCache* tables = cached ? &cache : nullptr;
        std::vector<float> x = RandomVector(kBatch * kHeads * kSeq * head_dim, 23);
        std::vector<uint16_t> bits(x.size());
        for (size_t i = 0; i < x.size(); ++i) bits[i] = FloatToBfloat16(x[i]);
        std::vector<float> widened(x.size());
        for (size_t i = 0; i < x.size(); ++i) widened[i] = Bfloat16ToFloat(bits[i]);
        // Expected: ApplyRope on each head of each batch element, in place.
        auto per_head = [&](std::vector<float> values) {
          for (int64_t b = 0; b < kBatch; ++b) {
            for (int64_t h = 0; h < kHeads; ++h) {
              const absl::Status status =
                  ApplyRope(p, values.data() + (b * kHeads + h) * kSeq * head_dim,
                            positions.data() + b * kSeq, kSeq, 1, head_dim, 104, tables);
              EXPECT_TRUE(status.ok()) << status;
            }
          }
          return values;
        };
        const std::vector<float> expected = per_head(x), expected_bf16 = per_head(widened);
        std::vector<float> out(x.size(), std::numeric_limits<float>::quiet_NaN());
        ASSERT_TRUE(ApplyRopeHeadMajor(p, x.data(), kBatch, kHeads, kSeq, head_dim,
                                       positions.data(), 104, tables, out.data())
                        .ok());
        EXPECT_EQ(out, expected) << "out of place, cached " << cached;
        std::vector<float> in_place = x;
        ASSERT_TRUE(ApplyRopeHeadMajor(p, in_place.data(), kBatch, kHeads, kSeq, head_dim,
                                       positions.data(), 104, tables, in_place.data())
                        .ok());
        EXPECT_EQ(in_place, expected) << "in place, cached " << cached;
        ASSERT_TRUE(ApplyRopeHeadMajor(p, bits.data(), kBatch, kHeads, kSeq, head_dim,
                                       positions.data(), 104, tables, out.data())
                        .ok());
        EXPECT_EQ(out, expected_bf16) << "bf16, cached " << cached;
        std::vector<uint16_t> out_bits(x.size(), 0x7fc1);  // a NaN where nothing is written
        ASSERT_TRUE(ApplyRopeHeadMajor(p, bits.data(), kBatch, kHeads, kSeq, head_dim,
                                       positions.data(), 104, tables, out_bits.data())
                        .ok());
        std::vector<uint16_t> expected_bits(x.size());
        for (size_t i = 0; i < x.size(); ++i) expected_bits[i] = FloatToBfloat16(expected_bf16[i]);
        EXPECT_EQ(out_bits, expected_bits)
            << "bf16 out, cached " << cached << ", head_dim " << head_dim;
      }
    }
  }
}

TEST(RopeHeadMajorTest, BadArgumentsAreNamed) {
  const RopeParams p = Params(RopeScalingType::kNone, RopeLayout::kHalfSplit);
  std::vector<float> x(8, 1.0f);
  const int64_t position = -3;
  const int64_t good_position = 1;
  EXPECT_THAT(std::string(ApplyRopeHeadMajor(p, x.data(), 0, 1, 1, 8, &good_position, 0, nullptr,
                                             x.data())
                              .message()),
              HasSubstr("batch=0"));
  EXPECT_THAT(
      std::string(
          ApplyRopeHeadMajor(p, x.data(), 1, 1, 1, 8, &position, 0, nullptr, x.data()).message()),
      HasSubstr("position_ids[0]=-3"));
}

}  // namespace
}  // namespace attnserve
