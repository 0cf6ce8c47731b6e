// Thin wrappers over oneDNN 2.6 primitives used by the attention core, built for the exact
// shape (runtime dims would fall back from the brgemm kernels to gemm:jit): the matmuls once per
// shape and thread (core/kernels/onednn_primitives.h), the reorders and the softmax per call
// through oneDNN's own primitive cache. All buffers are row-major f32 owned by the caller.
#ifndef ATTNSERVE_CORE_KERNELS_ONEDNN_OPS_H_
#define ATTNSERVE_CORE_KERNELS_ONEDNN_OPS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/kernels/compute_type.h"

namespace attnserve {

// Sets the OpenMP threads the computations share from now on: `threads`, or with 0 the calling
// thread's OpenMP thread count (by default all cores, or OMP_NUM_THREADS). A lone computation
// (RunningComputation) uses them all, and N running at once use 1/N each (at least one thread).
// Sharing matters under load: OpenMP teams that together ask for more threads than there are
// cores spin at their barriers waiting for a thread the kernel has descheduled (that took three
// quarters of a loaded server's CPU on two cores). Until it is called, every computation keeps
// OpenMP's default.
void SetComputeThreads(int threads);

// Counts the calling thread's computation among those sharing the cores (SetComputeThreads(0))
// for as long as it lives. Each parallel entry point rereads the count, so a computation that
// started alone narrows when another starts and widens again when that one ends.
class RunningComputation {
 public:
  RunningComputation();
  ~RunningComputation();
  RunningComputation(const RunningComputation&) = delete;
  RunningComputation& operator=(const RunningComputation&) = delete;
};

// oneDNN's version, "major.minor.patch".
std::string OneDnnVersion();

// The instruction set oneDNN's kernels use on this CPU, as oneDNN names it ("avx2",
// "avx512_core_bf16", "avx512_core_amx", …).
std::string OneDnnCpuIsa();

// Whether oneDNN has a bf16 matmul on this CPU (2.6 has none without AVX-512). Where it has
// none, kBfloat16 products run as f32 products of the bf16-rounded operands: the same arithmetic
// (a product of two bf16 values is exact in f32, and the accumulation is f32 either way, so only
// the order of the sums may differ), at f32 speed.
bool OneDnnHasBfloat16Matmul();

// Applies SetComputeThreads' setting (and the current share) to the calling thread (OpenMP's
// thread count is per thread), and returns the threads a parallel region started now gets. Every
// parallel compute entry point calls it first.
int ApplyComputeThreads();

// y[M,N] = x[M,K]·Wᵀ + b; W: [N,K] (torch.nn.Linear layout); b: [N] or nullptr. With kBfloat16,
// x and W are rounded to bf16 for the product (f32 accumulation, f32 bias and output); w_bf16,
// when given, is W already rounded (bf16 bits, same layout), which saves rounding it per call.
absl::Status Linear(const float* x, int64_t m, int64_t k, const float* w, const float* b,
                    int64_t n, float* y, ComputeType compute = ComputeType::kFloat32,
                    const uint16_t* w_bf16 = nullptr);

// head_major[b, h, s, :] = x[b, s, :]·W_hᵀ + bias_h: Linear followed by the split into heads, as
// one batched product writing the head-major layout directly. x: [B, S, K]; W: [heads·hd, K]
// (torch.nn.Linear layout; W_h its rows h·hd…h·hd + hd − 1); bias: [heads·hd] or nullptr;
// w_bf16 as in Linear; head_major: [B, heads, S, hd].
absl::Status LinearToHeads(const float* x, int64_t batch, int64_t seq, int64_t k, const float* w,
                           const float* bias, int64_t heads, int64_t hd, float* head_major,
                           ComputeType compute = ComputeType::kFloat32,
                           const uint16_t* w_bf16 = nullptr);

// dst[a, c, b, d] = src[a, b, c, d] for a src of dims [d0, d1, d2, d3]; e.g. [B, S, H, hd] →
// [B, H, S, hd]. src and dst must not overlap.
absl::Status SwapMiddleAxes(const float* src, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                            float* dst);

// Batched attention scores over G query groups sharing one K/V head:
//   q: [B, Hkv, R, hd]   (R = G·Sq rows: the query heads of one kv head, stacked)
//   k: [B, Hkv, Sk, hd]
//   bias: [B, bias_heads, R, Sk] additive (bias_heads 1 or Hkv; −inf masks), or nullptr
//   scores: [B, Hkv, R, Sk] ← q·kᵀ·scale + bias
absl::Status AttentionScores(const float* q, const float* k, const float* bias,
                             int64_t bias_heads, int64_t b, int64_t hkv, int64_t rows, int64_t sk,
                             int64_t hd, float scale, float* scores);

// In place softmax over the last axis of data: [rows, cols]. A row of all −inf comes out NaN;
// callers zero such rows.
absl::Status SoftmaxRows(float* data, int64_t rows, int64_t cols);

// out: [B, Hkv, R, hd] ← probs [B, Hkv, R, Sk] · v [B, Hkv, Sk, hd]
absl::Status ProbsTimesValues(const float* probs, const float* v, int64_t b, int64_t hkv,
                              int64_t rows, int64_t sk, int64_t hd, float* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_ONEDNN_OPS_H_
