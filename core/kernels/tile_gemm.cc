#include "core/kernels/tile_gemm.h"

#include <optional>
#include <unordered_map>

#include "core/kernels/bfloat16.h"
#include "core/kernels/onednn_ops.h"
#include "core/kernels/onednn_primitives.h"

namespace attnserve {
namespace {

// bits as f32 values in `wide` (grown as needed; this runs inside one work item's thread).
const float* Widened(const uint16_t* bits, int64_t count, std::vector<float>& wide) {
  if (static_cast<int64_t>(wide.size()) < count) wide.resize(count);
  for (int64_t i = 0; i < count; ++i) wide[i] = Bfloat16ToFloat(bits[i]);
  return wide.data();
}

}  // namespace

TileGemm::TileGemm(ComputeType compute)
    : stream_(CpuEngine()),
      widen_(compute == ComputeType::kBfloat16 && !OneDnnHasBfloat16Matmul()),
      operand_(compute == ComputeType::kBfloat16 && !widen_ ? dnnl::memory::data_type::bf16
                                                            : dnnl::memory::data_type::f32) {}

void TileGemm::Run(int64_t m, int64_t n, int64_t k, float alpha, const void* a, const void* b,
                   bool b_transposed, bool accumulate, float* c) {
  if (widen_) {
    a = Widened(static_cast<const uint16_t*>(a), m * k, a_wide_);
    b = Widened(static_cast<const uint16_t*>(b), k * n, b_wide_);
  }
  MatmulShape shape(m, n, k);
  shape.operand = operand_;
  shape.weights_transposed = b_transposed;
  if (alpha != 1.0f) shape.output_scale = alpha;
  shape.accumulate = accumulate;
  const MatmulPrimitive& matmul = ThreadMatmul(shape);
  std::unordered_map<int, dnnl::memory>& args = matmul.tile_args;
  if (args.empty()) {
    const dnnl::engine& engine = CpuEngine();
    args = {{DNNL_ARG_SRC, dnnl::memory(matmul.src, engine, DNNL_MEMORY_NONE)},
            {DNNL_ARG_WEIGHTS, dnnl::memory(matmul.weights, engine, DNNL_MEMORY_NONE)},
            {DNNL_ARG_DST, dnnl::memory(matmul.dst, engine, DNNL_MEMORY_NONE)}};
  }
  args[DNNL_ARG_SRC].set_data_handle(const_cast<void*>(a));
  args[DNNL_ARG_WEIGHTS].set_data_handle(const_cast<void*>(b));
  args[DNNL_ARG_DST].set_data_handle(c);
  matmul.primitive.execute(stream_, args);
}

}  // namespace attnserve
