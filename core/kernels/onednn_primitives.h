// The oneDNN engine of the core and its one caching policy for matmul primitives: built once per
// shape on each thread, then reused. A primitive-descriptor creation costs more than a tile
// product (and runtime dims would fall back from the brgemm kernels to gemm:jit), so the tiled
// attention (TileGemm), the projections (Linear, LinearToHeads) and the materialised attention
// (AttentionScores, ProbsTimesValues) all take theirs from here. Internal to core/kernels.
#ifndef ATTNSERVE_CORE_KERNELS_ONEDNN_PRIMITIVES_H_
#define ATTNSERVE_CORE_KERNELS_ONEDNN_PRIMITIVES_H_

#include <array>
#include <cstdint>
#include <optional>

#include <unordered_map>

#include "dnnl.hpp"

namespace attnserve {

// The CPU engine every primitive of the core is built for and runs on.
const dnnl::engine& CpuEngine();

// A matmul as the core runs them: dst (+)= scale·src·weights (+ bias), row-major, dst f32.
// 2D: src [m, k], weights [k, n], dst [m, n]. Batched: each with two leading dims (dst's the
// larger of src's and weights', which broadcast where 1).
struct MatmulShape {
  MatmulShape(int64_t m, int64_t n, int64_t k) : m(m), n(n), k(k) {}

  int64_t m, n, k;
  std::array<int64_t, 2> src_batch = {0, 0};  // {0, 0}: a 2D product
  std::array<int64_t, 2> weights_batch = {0, 0};
  dnnl::memory::data_type operand = dnnl::memory::data_type::f32;  // src and weights
  bool weights_transposed = false;  // weights stored [n, k] (torch.nn.Linear's layout, Kᵀ)
  std::optional<float> output_scale;  // unset: none
  bool accumulate = false;            // dst += the product (a sum post-op)
  bool bias = false;                  // 2D: a bias [1, n] f32 added
  int64_t addend_heads = 0;  // batched: [dst_batch[0], addend_heads, m, n] f32 added; 0 = none
};

// A built primitive and the memory descriptors to run it with.
struct MatmulPrimitive {
  dnnl::matmul primitive;
  dnnl::memory::desc src, weights, dst, bias, addend;
  // oneDNN chose its reference implementation, orders of magnitude slower than its own kernels.
  bool reference = false;
  // TileGemm's arguments for this primitive: made by its first product, then pointed at each
  // product's buffers (making them for every product cost a sixth of a small tile's time).
  // Thread-local like the primitive; empty until used.
  mutable std::unordered_map<int, dnnl::memory> tile_args;
};

// This thread's primitive for `shape` (and the current OpenMP thread count, which oneDNN sizes
// its blocking by), built on first use; throws dnnl::error where oneDNN has no implementation.
// Valid until the calling thread's next call: shapes come from the requests, so the cache starts
// over rather than grow without bound.
const MatmulPrimitive& ThreadMatmul(const MatmulShape& shape);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_ONEDNN_PRIMITIVES_H_
