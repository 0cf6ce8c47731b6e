// Matrix products of attention tiles through oneDNN matmul primitives, for the tiled attention
// (core/attention/flash_attention_gemm.cc).
#ifndef ATTNSERVE_CORE_KERNELS_TILE_GEMM_H_
#define ATTNSERVE_CORE_KERNELS_TILE_GEMM_H_

#include <cstdint>
#include <vector>

#include "core/kernels/compute_type.h"
#include "dnnl.hpp"

namespace attnserve {

// Row-major C [M,N] (+)= alpha·A·op(B), A [M,K], B [K,N] (or [N,K] when b_transposed), C f32,
// through oneDNN matmul primitives built once per shape for this thread (ThreadMatmul): the
// brgemm kernels, far faster on tiles than the gemm:jit behind dnnl_sgemm. Operands are f32, or
// bf16 (uint16_t bits) with f32 accumulation — widened to f32 per call where oneDNN has no bf16
// matmul (OneDnnHasBfloat16Matmul). Not thread-safe: each compute thread keeps its own.
class TileGemm {
 public:
  explicit TileGemm(ComputeType compute);

  // a: [m, k] dense; b: [k, n] dense (or [n, k] when b_transposed); c: [m, n] dense.
  void Run(int64_t m, int64_t n, int64_t k, float alpha, const void* a, const void* b,
           bool b_transposed, bool accumulate, float* c);

 private:
  dnnl::stream stream_;
  bool widen_;  // bf16 operands, but oneDNN has no bf16 matmul here
  dnnl::memory::data_type operand_;
  std::vector<float> a_wide_, b_wide_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_TILE_GEMM_H_
