// The projections (Linear, LinearToHeads) in f32 and bf16 compute against double-precision
// references. ctest also runs this binary with oneDNN held to AVX2 (onednn_ops_test_onednn_avx2),
// where oneDNN 2.6 has no bf16 matmul and bf16 compute takes the emulated path. And the compute
// threads, shared among the computations running at once.
#include "core/kernels/onednn_ops.h"

#include <omp.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;
using ::attnserve::testing::ReferenceLinear;
using ::attnserve::testing::RelativeError;
using ::attnserve::testing::SplitHeads;

// f32 accumulation over k ≤ 200 terms of exact products.
constexpr double kRelativeTolerance = 1e-5;

std::vector<float> Rounded(const std::vector<float>& values) {
  std::vector<float> rounded(values.size());
  for (size_t i = 0; i < values.size(); ++i) rounded[i] = RoundToBfloat16(values[i]);
  return rounded;
}

std::vector<uint16_t> Bits(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = FloatToBfloat16(values[i]);
  return bits;
}

TEST(ComputeThreadsTest, RunningComputationsShareTheCores) {
  const int before = omp_get_max_threads();  // restored at the end for the tests after this one
  omp_set_num_threads(6);
  SetComputeThreads(0);  // share this thread's 6
  EXPECT_EQ(ApplyComputeThreads(), 6);  // none counted running: OpenMP's count
  {
    RunningComputation first;
    EXPECT_EQ(ApplyComputeThreads(), 6);  // alone: all of them
    auto second = std::make_unique<RunningComputation>();
    RunningComputation third;
    EXPECT_EQ(ApplyComputeThreads(), 2);
    second.reset();
    EXPECT_EQ(ApplyComputeThreads(), 3);  // widens again when one ends
    std::vector<RunningComputation> many(10);
    EXPECT_EQ(ApplyComputeThreads(), 1);  // never less than one
  }
  SetComputeThreads(5);  // 5 shared, whatever this thread's count
  EXPECT_EQ(ApplyComputeThreads(), 5);
  RunningComputation a, b;
  EXPECT_EQ(ApplyComputeThreads(), 2);
  omp_set_num_threads(before);
  SetComputeThreads(0);  // shares `before`: every later computation gets what OpenMP gave it
}

TEST(OneDnnOpsTest, Bfloat16MatmulProbeFollowsTheIsa) {
  const std::string isa = OneDnnCpuIsa();
  if (isa == "avx512_core_bf16" || isa == "avx512_core_amx") {
    EXPECT_TRUE(OneDnnHasBfloat16Matmul()) << isa;
  }
  const char* limit = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (limit != nullptr && std::string(limit) == "AVX2") {
    EXPECT_EQ(isa, "avx2");
    EXPECT_FALSE(OneDnnHasBfloat16Matmul());
  }
}

struct LinearCase {
  int64_t m, k, n;
  bool bias;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, Float32MatchesDoubleReference) {
  const auto [m, k, n, with_bias] = GetParam();
  const std::vector<float> x = RandomVector(m * k, 1), w = RandomVector(n * k, 2);
  const std::vector<float> b = with_bias ? RandomVector(n, 3) : std::vector<float>();
  std::vector<float> y(m * n, std::nanf(""));
  ASSERT_TRUE(Linear(x.data(), m, k, w.data(), with_bias ? b.data() : nullptr, n, y.data()).ok());
  EXPECT_LT(RelativeError(y, ReferenceLinear(x, m, k, w, b, n)), kRelativeTolerance);
}

// bf16 compute multiplies the bf16-rounded x and W exactly and accumulates in f32: it matches the
// double product of the rounded operands, and differs measurably from the unrounded product.
TEST_P(LinearTest, Bfloat16IsTheProductOfRoundedOperands) {
  const auto [m, k, n, with_bias] = GetParam();
  const std::vector<float> x = RandomVector(m * k, 4), w = RandomVector(n * k, 5);
  const std::vector<float> b = with_bias ? RandomVector(n, 6) : std::vector<float>();
  const std::vector<double> reference = ReferenceLinear(Rounded(x), m, k, Rounded(w), b, n);
  std::vector<float> y(m * n, std::nanf(""));
  ASSERT_TRUE(Linear(x.data(), m, k, w.data(), with_bias ? b.data() : nullptr, n, y.data(),
                     ComputeType::kBfloat16)
                  .ok());
  EXPECT_LT(RelativeError(y, reference), kRelativeTolerance);
  EXPECT_GT(RelativeError(y, ReferenceLinear(x, m, k, w, b, n)), 1e-4);

  // Pre-rounded weights are what is used: W itself is not read (here it is other values).
  const std::vector<float> other = RandomVector(n * k, 7);
  const std::vector<uint16_t> w_bits = Bits(w);
  std::fill(y.begin(), y.end(), std::nanf(""));
  ASSERT_TRUE(Linear(x.data(), m, k, other.data(), with_bias ? b.data() : nullptr, n, y.data(),
                     ComputeType::kBfloat16, w_bits.data())
                  .ok());
  EXPECT_LT(RelativeError(y, reference), kRelativeTolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 16, 8, false}, LinearCase{7, 96, 40, true},
                                           LinearCase{33, 200, 64, true}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) {
                           const LinearCase& c = info.param;
                           return "m" + std::to_string(c.m) + "k" + std::to_string(c.k) + "n" +
                                  std::to_string(c.n) + (c.bias ? "Bias" : "");
                         });

// LinearToHeads = Linear, then [B, S, heads, hd] → [B, heads, S, hd].
TEST(LinearToHeadsTest, MatchesTheProductSplitIntoHeads) {
  const int64_t batch = 2, seq = 9, k = 48, heads = 3, hd = 16, n = heads * hd;
  const std::vector<float> x = RandomVector(batch * seq * k, 8), w = RandomVector(n * k, 9);
  const std::vector<float> bias = RandomVector(n, 10);
  for (const ComputeType compute : {ComputeType::kFloat32, ComputeType::kBfloat16}) {
    const bool bf16 = compute == ComputeType::kBfloat16;
    const std::vector<double> reference = SplitHeads(
        ReferenceLinear(bf16 ? Rounded(x) : x, batch * seq, k, bf16 ? Rounded(w) : w, bias, n),
        batch, seq, heads, hd);
    std::vector<float> head_major(reference.size(), std::nanf(""));
    ASSERT_TRUE(LinearToHeads(x.data(), batch, seq, k, w.data(), bias.data(), heads, hd,
                              head_major.data(), compute)
                    .ok());
    EXPECT_LT(RelativeError(head_major, reference), kRelativeTolerance) << bf16;
  }
}

}  // namespace
}  // namespace attnserve
