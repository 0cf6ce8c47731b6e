// T5 relative-position buckets against published Hugging Face values and a double-precision
// reference of the formula; bias maps against an independent gather from a random table.
#include "core/encodings/t5_bias.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

// transformers' T5Attention._relative_position_bucket written from its Python source, in double
// precision. `product` receives log(rel/max_exact)/log(max_distance/max_exact)·(buckets−max_exact)
// when the logarithmic branch is taken (NaN otherwise), so callers can tell where float32 and
// double truncation may legitimately disagree.
int64_t ReferenceBucket(int64_t rel, bool bidirectional, int64_t num_buckets, int64_t max_distance,
                        double* product) {
  *product = std::nan("");
  int64_t relative_buckets = 0;
  if (bidirectional) {
    num_buckets /= 2;
    relative_buckets += rel > 0 ? num_buckets : 0;
    rel = std::llabs(rel);
  } else {
    rel = rel < 0 ? -rel : 0;
  }
  const int64_t max_exact = num_buckets / 2;
  if (rel < max_exact) return relative_buckets + rel;
  *product = std::log(static_cast<double>(rel) / max_exact) /
             std::log(static_cast<double>(max_distance) / max_exact) *
             static_cast<double>(num_buckets - max_exact);
  int64_t if_large = max_exact + static_cast<int64_t>(*product);
  if (if_large > num_buckets - 1) if_large = num_buckets - 1;
  return relative_buckets + if_large;
}

TEST(T5BucketTest, PublishedBidirectionalValues) {
  // HF T5 encoder buckets, num_buckets=32, max_distance=128, relative_position = j − i.
  const std::vector<std::pair<int64_t, int64_t>> published = {
      {-1, 1},    {-7, 7},    {-8, 8}, {-16, 10}, {-20, 10}, {-64, 14},
      {-127, 15}, {-200, 15}, {1, 17}, {8, 24},   {127, 31}, {0, 0}};
  for (const auto& [rel, bucket] : published) {
    EXPECT_EQ(T5RelativeBucket(rel, /*bidirectional=*/true, 32, 128), bucket) << "rel=" << rel;
  }
}

TEST(T5BucketTest, PublishedCausalValues) {
  // HF T5 decoder buckets: only the past (rel < 0) is bucketed; the future all maps to 0.
  const std::vector<std::pair<int64_t, int64_t>> published = {
      {-20, 17}, {-64, 26}, {-200, 31}, {0, 0}, {1, 0}, {8, 0}, {127, 0}, {100000, 0}};
  for (const auto& [rel, bucket] : published) {
    EXPECT_EQ(T5RelativeBucket(rel, /*bidirectional=*/false, 32, 128), bucket) << "rel=" << rel;
  }
}

TEST(T5BucketTest, FirstDistanceOfEachBucketMatchesPyTorch) {
  // The smallest |j − i| that lands in each bucket, recorded by running HF's function in
  // PyTorch 1.13.1 (Debian python3-torch) over rel in [−20000, 20000] with 32 buckets and max
  // distance 128. Checking d and d − 1 pins every boundary, including those where the exact
  // product is an integer (bidirectional 16, 32, 64: log ratios of powers of two).
  const std::vector<int64_t> bidirectional = {0, 1,  2,  3,  4,  5,  6,  7,
                                              8, 12, 16, 23, 32, 46, 64, 91};
  for (int64_t b = 1; b < 16; ++b) {
    const int64_t d = bidirectional[b];
    EXPECT_EQ(T5RelativeBucket(-d, true, 32, 128), b) << "rel=-" << d;
    EXPECT_EQ(T5RelativeBucket(-(d - 1), true, 32, 128), b - 1) << "rel=-" << d - 1;
    EXPECT_EQ(T5RelativeBucket(d, true, 32, 128), 16 + b) << "rel=" << d;
    // rel = 0 is bucket 0, not the first future bucket.
    EXPECT_EQ(T5RelativeBucket(d - 1, true, 32, 128), b == 1 ? 0 : 16 + b - 1) << "rel=" << d - 1;
  }
  const std::vector<int64_t> causal = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                       11, 12, 13, 14, 15, 16, 19, 21, 24, 27, 31,
                                       35, 40, 46, 52, 59, 67, 77, 87, 99, 113};
  for (int64_t b = 1; b < 32; ++b) {
    const int64_t d = causal[b];
    EXPECT_EQ(T5RelativeBucket(-d, false, 32, 128), b) << "rel=-" << d;
    EXPECT_EQ(T5RelativeBucket(-(d - 1), false, 32, 128), b - 1) << "rel=-" << d - 1;
  }
}

TEST(T5BucketTest, Float32RoundingMatchesPyTorchWhereDoubleDoesNot) {
  // Configurations where the exact product is (nearly) an integer and torch's float32 roundings
  // decide the truncation. Recorded from HF's function in PyTorch 1.13.1 (Debian python3-torch);
  // a double-precision evaluation gives the bucket in the last column instead.
  struct Recorded {
    int64_t num_buckets, max_distance;
    bool bidirectional;
    int64_t rel, torch_bucket, double_bucket;
  };
  const std::vector<Recorded> recorded = {
      {9, 128, false, -8, 5, 4},       {9, 128, false, -64, 8, 7},
      {36, 32, false, -24, 27, 26},    {36, 50, false, -30, 26, 27},
      {72, 100, false, -60, 53, 54},   {83, 1000, false, -796, 80, 79},
      {99, 1024, false, -224, 74, 73}, {108, 128, false, -72, 72, 71},
      {18, 128, true, -64, 8, 7},      {18, 128, true, 16, 15, 14},
      {72, 50, true, 30, 62, 63},      {108, 64, true, 36, 90, 89}};
  for (const Recorded& r : recorded) {
    EXPECT_EQ(T5RelativeBucket(r.rel, r.bidirectional, r.num_buckets, r.max_distance),
              r.torch_bucket)
        << "num_buckets=" << r.num_buckets << " max_distance=" << r.max_distance
        << " bidirectional=" << r.bidirectional << " rel=" << r.rel;
    double product = 0;
    EXPECT_EQ(ReferenceBucket(r.rel, r.bidirectional, r.num_buckets, r.max_distance, &product),
              r.double_bucket);  // the case really is one where precision matters
  }
}

struct BucketConfig {
  int64_t num_buckets;
  int64_t max_distance;
  bool bidirectional;
};

void PrintTo(const BucketConfig& c, std::ostream* os) {
  *os << "num_buckets=" << c.num_buckets << " max_distance=" << c.max_distance
      << " bidirectional=" << c.bidirectional;
}

class T5BucketReferenceTest : public ::testing::TestWithParam<BucketConfig> {};

TEST_P(T5BucketReferenceTest, MatchesDoublePrecisionFormula) {
  // The implementation rounds like PyTorch's float32 tensors; the reference is in double. They
  // may disagree only where the product lands within 1e-5 of an integer (float32 rounding then
  // decides the truncation); such rel are skipped and counted. In practice none disagree for
  // these configurations, and the skip count stays small.
  const BucketConfig& c = GetParam();
  T5BiasParams params;
  params.num_buckets = c.num_buckets;
  params.max_distance = c.max_distance;
  params.bidirectional = c.bidirectional;
  params.table = std::make_shared<const std::vector<float>>(c.num_buckets, 0.0f);
  ASSERT_TRUE(ValidateT5Bias(params, 1).ok());
  int skipped = 0;
  for (int64_t rel = -5000; rel <= 5000; ++rel) {
    double product = 0;
    const int64_t expected =
        ReferenceBucket(rel, c.bidirectional, c.num_buckets, c.max_distance, &product);
    if (!std::isnan(product) && std::fabs(product - std::round(product)) < 1e-5) {
      ++skipped;
      continue;
    }
    ASSERT_EQ(T5RelativeBucket(rel, c.bidirectional, c.num_buckets, c.max_distance), expected)
        << "rel=" << rel;
  }
  EXPECT_LT(skipped, 40);
}

INSTANTIATE_TEST_SUITE_P(Configs, T5BucketReferenceTest,
                         ::testing::Values(BucketConfig{32, 128, true},
                                           BucketConfig{32, 128, false},
                                           BucketConfig{64, 256, true},
                                           BucketConfig{64, 256, false}, BucketConfig{16, 64, true},
                                           BucketConfig{8, 20, true}, BucketConfig{8, 20, false},
                                           BucketConfig{32, 1000, true}, BucketConfig{4, 3, false},
                                           BucketConfig{3, 7, false}));

TEST(T5BucketTest, MonotoneInDistanceWithinEachDirection) {
  for (bool bidirectional : {true, false}) {
    int64_t previous_past = -1, previous_future = -1;
    for (int64_t d = 0; d <= 3000; ++d) {
      const int64_t past = T5RelativeBucket(-d, bidirectional, 32, 128);
      const int64_t future = T5RelativeBucket(d, bidirectional, 32, 128);
      EXPECT_GE(past, previous_past) << "d=" << d;
      EXPECT_GE(future, previous_future) << "d=" << d;
      // Past and future use disjoint bucket halves when bidirectional (0 is shared).
      if (bidirectional && d > 0) {
        EXPECT_LT(past, 16);
        EXPECT_GE(future, 17);
      }
      EXPECT_GE(past, 0);
      EXPECT_LT(future, 32);
      previous_past = past;
      previous_future = future;
    }
  }
}

TEST(T5BucketTest, ExtremeDistancesSaturate) {
  EXPECT_EQ(T5RelativeBucket(-(int64_t{1} << 40), true, 32, 128), 15);
  EXPECT_EQ(T5RelativeBucket(int64_t{1} << 40, true, 32, 128), 31);
  EXPECT_EQ(T5RelativeBucket(-(int64_t{1} << 40), false, 32, 128), 31);
  // A tiny log(max_distance / max_exact) makes the float product (~2e23) overflow int64: still
  // the last bucket.
  const int64_t buckets = int64_t{1} << 40;
  EXPECT_EQ(T5RelativeBucket(-(int64_t{1} << 41), false, buckets, buckets / 2 + 1), buckets - 1);
}

std::vector<float> RandomTable(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> table(n);
  for (float& v : table) v = dist(rng);
  return table;
}

TEST(T5BiasTest, GathersTheTableRowOfEachBucket) {
  for (bool bidirectional : {true, false}) {
    const int64_t heads = 3;
    T5BiasParams params;
    params.bidirectional = bidirectional;
    params.table = std::make_shared<const std::vector<float>>(RandomTable(32 * heads, 7));
    ASSERT_TRUE(ValidateT5Bias(params, heads).ok());
    // Decode-like queries (bottom-right) and arbitrary key ids, spanning every bucket range.
    const std::vector<int64_t> qp = {0, 5, 150, 300};
    const std::vector<int64_t> kp = {0, 1, 4, 5, 6, 13, 20, 70, 149, 150, 151, 170, 299, 300, 600};
    const int64_t q_len = static_cast<int64_t>(qp.size());
    const int64_t kv_len = static_cast<int64_t>(kp.size());
    std::vector<float> bias(heads * q_len * kv_len, 12345.0f);
    T5Bias(params, heads, qp.data(), q_len, kp.data(), kv_len, bias.data());
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < q_len; ++i) {
        for (int64_t j = 0; j < kv_len; ++j) {
          double product = 0;
          const int64_t bucket = ReferenceBucket(kp[j] - qp[i], bidirectional, 32, 128, &product);
          // The gather copies the float table entry: exact equality.
          EXPECT_EQ(bias[(h * q_len + i) * kv_len + j], (*params.table)[bucket * heads + h])
              << "bidirectional=" << bidirectional << " h=" << h << " i=" << i << " j=" << j;
        }
      }
    }
  }
}

TEST(T5BiasTest, DiagonalIsBucketZeroOfEachHead) {
  const int64_t heads = 4;
  T5BiasParams params;
  params.table = std::make_shared<const std::vector<float>>(RandomTable(32 * heads, 11));
  const std::vector<int64_t> pos = {10, 11, 12};
  std::vector<float> bias(heads * 9);
  T5Bias(params, heads, pos.data(), 3, pos.data(), 3, bias.data());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(bias[(h * 3 + i) * 3 + i], (*params.table)[h]);
    // Bidirectional: one step into the future is bucket 17, one into the past bucket 1.
    EXPECT_EQ(bias[(h * 3 + 0) * 3 + 1], (*params.table)[17 * heads + h]);
    EXPECT_EQ(bias[(h * 3 + 1) * 3 + 0], (*params.table)[1 * heads + h]);
  }
}

TEST(T5ValidationTest, InvalidParametersAreNamed) {
  T5BiasParams params;
  params.table = std::make_shared<const std::vector<float>>(64, 0.0f);
  EXPECT_TRUE(ValidateT5Bias(params, 2).ok());

  T5BiasParams p = params;
  p.num_buckets = 1;
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()), HasSubstr("t5.num_buckets=1"));
  p = params;
  p.num_buckets = 31;
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()),
              HasSubstr("t5.num_buckets=31 must be even"));
  p.bidirectional = false;  // odd counts are fine for causal buckets
  p.table = std::make_shared<const std::vector<float>>(62, 0.0f);
  EXPECT_TRUE(ValidateT5Bias(p, 2).ok());
  p = params;
  p.num_buckets = 2;  // bidirectional 2 buckets: no exact bucket, HF divides 0 by 0
  p.table = std::make_shared<const std::vector<float>>(4, 0.0f);
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()), HasSubstr("t5.num_buckets=2"));
  p.bidirectional = false;
  EXPECT_TRUE(ValidateT5Bias(p, 2).ok());

  p = params;
  p.max_distance = 0;
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()), HasSubstr("t5.max_distance=0"));
  p.max_distance = 8;  // bidirectional max_exact = 32/4 = 8: log(8/8) = 0
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()),
              HasSubstr("t5.max_distance=8 must be > max_exact=8"));
  p.max_distance = 9;
  EXPECT_TRUE(ValidateT5Bias(p, 2).ok());
  p.bidirectional = false;  // causal max_exact = 32/2 = 16
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()), HasSubstr("t5.max_distance=9"));

  p = params;
  p.table = nullptr;
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()), HasSubstr("t5.table"));
  p.table = std::make_shared<const std::vector<float>>(10, 0.0f);
  EXPECT_THAT(std::string(ValidateT5Bias(p, 2).message()),
              HasSubstr("t5.table has 10 values; must be num_buckets·num_heads=64"));
  EXPECT_THAT(std::string(ValidateT5Bias(params, 0).message()),
              HasSubstr("num_heads=0 must be >= 1"));
}

}  // namespace
}  // namespace attnserve
