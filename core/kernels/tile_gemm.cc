#include "core/kernels/tile_gemm.h"

#include <tuple>

#include "core/kernels/bfloat16.h"
#include "core/kernels/onednn_ops.h"

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
    : engine_(dnnl::engine::kind::cpu, 0),
      stream_(engine_),
      widen_(compute == ComputeType::kBfloat16 && !OneDnnHasBfloat16Matmul()),
      operand_(compute == ComputeType::kBfloat16 && !widen_ ? dnnl::memory::data_type::bf16
                                                            : dnnl::memory::data_type::f32) {}

void TileGemm::Run(int64_t m, int64_t n, int64_t k, float alpha, const void* a, const void* b,
                   bool b_transposed, bool accumulate, float* c) {
  using dnnl::memory;
  if (widen_) {
    a = Widened(static_cast<const uint16_t*>(a), m * k, a_wide_);
    b = Widened(static_cast<const uint16_t*>(b), k * n, b_wide_);
  }
  const Key key{m, n, k, b_transposed, accumulate, alpha};
  auto it = primitives_.find(key);
  if (it == primitives_.end()) {
    // Edge tiles take shapes from the requests; start over rather than grow without bound.
    if (primitives_.size() >= kMaxPrimitives) primitives_.clear();
    const memory::desc a_md({m, k}, operand_, memory::format_tag::ab);
    const memory::desc b_md({k, n}, operand_,
                            b_transposed ? memory::format_tag::ba : memory::format_tag::ab);
    const memory::desc c_md({m, n}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine_);
    it = primitives_.emplace(key, Entry{dnnl::matmul(pd), a_md, b_md, c_md}).first;
  }
  Entry& e = it->second;
  e.primitive.execute(stream_,
                      {{DNNL_ARG_SRC, dnnl::memory(e.a, engine_, const_cast<void*>(a))},
                       {DNNL_ARG_WEIGHTS, dnnl::memory(e.b, engine_, const_cast<void*>(b))},
                       {DNNL_ARG_DST, dnnl::memory(e.c, engine_, c)}});
}

bool TileGemm::Key::operator<(const Key& o) const {
  return std::tie(m, n, k, b_transposed, accumulate, alpha) <
         std::tie(o.m, o.n, o.k, o.b_transposed, o.accumulate, o.alpha);
}

}  // namespace attnserve
