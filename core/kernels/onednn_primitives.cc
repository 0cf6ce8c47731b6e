#include "core/kernels/onednn_primitives.h"

#include <omp.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

namespace attnserve {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

constexpr size_t kMaxPrimitivesPerThread = 64;

struct Key {
  MatmulShape shape;
  int threads;

  bool operator<(const Key& o) const {
    const MatmulShape &a = shape, &b = o.shape;
    return std::tie(a.m, a.n, a.k, a.src_batch, a.weights_batch, a.operand, a.weights_transposed,
                    a.output_scale, a.accumulate, a.bias, a.addend_heads, threads) <
           std::tie(b.m, b.n, b.k, b.src_batch, b.weights_batch, b.operand, b.weights_transposed,
                    b.output_scale, b.accumulate, b.bias, b.addend_heads, o.threads);
  }
};

// The memory descriptors of `shape`, as MatmulPrimitive holds them (primitive unset).
MatmulPrimitive Descriptors(const MatmulShape& s) {
  MatmulPrimitive d;
  if (s.src_batch[0] == 0) {
    d.src = memory::desc({s.m, s.k}, s.operand, tag::ab);
    d.weights = memory::desc({s.k, s.n}, s.operand, s.weights_transposed ? tag::ba : tag::ab);
    d.dst = memory::desc({s.m, s.n}, dt::f32, tag::ab);
    if (s.bias) d.bias = memory::desc({1, s.n}, dt::f32, tag::ab);
    return d;
  }
  const memory::dim d0 = std::max(s.src_batch[0], s.weights_batch[0]);
  const memory::dim d1 = std::max(s.src_batch[1], s.weights_batch[1]);
  d.src = memory::desc({s.src_batch[0], s.src_batch[1], s.m, s.k}, s.operand, tag::abcd);
  d.weights = memory::desc({s.weights_batch[0], s.weights_batch[1], s.k, s.n}, s.operand,
                           s.weights_transposed ? tag::abdc : tag::abcd);
  d.dst = memory::desc({d0, d1, s.m, s.n}, dt::f32, tag::abcd);
  if (s.addend_heads > 0) {
    d.addend = memory::desc({d0, s.addend_heads, s.m, s.n}, dt::f32, tag::abcd);
  }
  return d;
}

MatmulPrimitive Build(const MatmulShape& shape) {
  MatmulPrimitive built = Descriptors(shape);
  // Output scales apply before post-ops.
  dnnl::primitive_attr attr;
  if (shape.output_scale.has_value()) attr.set_output_scales(0, {*shape.output_scale});
  if (shape.accumulate || shape.addend_heads > 0) {
    dnnl::post_ops ops;
    if (shape.accumulate) ops.append_sum(1.0f);
    if (shape.addend_heads > 0) ops.append_binary(dnnl::algorithm::binary_add, built.addend);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(
      dnnl::matmul::desc(built.src, built.weights, built.bias, built.dst), attr, CpuEngine());
  built.primitive = dnnl::matmul(pd);
  built.reference = std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
  return built;
}

}  // namespace

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

const MatmulPrimitive& ThreadMatmul(const MatmulShape& shape) {
  thread_local std::map<Key, MatmulPrimitive> primitives;
  const Key key{shape, omp_get_max_threads()};
  auto it = primitives.find(key);
  if (it != primitives.end()) return it->second;
  MatmulPrimitive built = Build(shape);
  if (primitives.size() >= kMaxPrimitivesPerThread) primitives.clear();
  return primitives.emplace(key, std::move(built)).first->second;
}

}  // namespace attnserve
