#include "core/kernels/onednn_ops.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/onednn_primitives.h"
#include "dnnl.hpp"

namespace attnserve {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// SetComputeThreads' threads (0 while never set), divided among g_running computations.
std::atomic<int> g_shared_threads{0};
std::atomic<int> g_running{0};

memory Wrap(const memory::desc& md, const void* data) {
  return memory(md, CpuEngine(), const_cast<void*>(data));
}

// Runs `body` (which builds and executes primitives on `stream`), turning oneDNN exceptions
// into an INTERNAL status naming the operation.
template <typename Body>
absl::Status RunPrimitives(const char* op, Body body) {
  ApplyComputeThreads();
  try {
    dnnl::stream stream(CpuEngine());
    body(stream);
    stream.wait();
    return absl::OkStatus();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(op, ": oneDNN error ", e.status, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(op, ": ", e.what()));
  }
}

// *x_mem and *w_mem (f32) as the bf16 operands `matmul` takes, rounded to nearest even by oneDNN
// reorders; W from w_bf16 instead when given (W already rounded).
void RoundOperands(dnnl::stream& stream, const MatmulPrimitive& matmul, const uint16_t* w_bf16,
                   memory* x_mem, memory* w_mem) {
  memory x_rounded(matmul.src, CpuEngine());
  dnnl::reorder(*x_mem, x_rounded).execute(stream, *x_mem, x_rounded);
  *x_mem = x_rounded;
  if (w_bf16 != nullptr) {
    *w_mem = Wrap(matmul.weights, w_bf16);
    return;
  }
  memory w_rounded(matmul.weights, CpuEngine());
  dnnl::reorder(*w_mem, w_rounded).execute(stream, *w_mem, w_rounded);
  *w_mem = w_rounded;
}

}  // namespace

void SetComputeThreads(int threads) {
  g_shared_threads.store(threads > 0 ? threads : omp_get_max_threads());
}

RunningComputation::RunningComputation() { g_running.fetch_add(1, std::memory_order_relaxed); }

RunningComputation::~RunningComputation() { g_running.fetch_sub(1, std::memory_order_relaxed); }

std::string OneDnnVersion() {
  const dnnl_version_t* version = dnnl_version();
  return absl::StrCat(version->major, ".", version->minor, ".", version->patch);
}

std::string OneDnnCpuIsa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::all: break;
  }
  return "unknown";
}

bool OneDnnHasBfloat16Matmul() {
  static const bool has = [] {
    const memory::desc operand_md({16, 16}, dt::bf16, tag::ab);
    try {
      dnnl::matmul::primitive_desc(
          dnnl::matmul::desc(operand_md, operand_md, memory::desc({16, 16}, dt::f32, tag::ab)),
          CpuEngine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}

int ApplyComputeThreads() {
  const int shared = g_shared_threads.load(std::memory_order_relaxed);
  if (shared == 0) return omp_get_max_threads();
  const int running = g_running.load(std::memory_order_relaxed);
  const int threads = std::max(1, shared / std::max(1, running));
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  return threads;
}

absl::Status Linear(const float* x, int64_t m, int64_t k, const float* w, const float* b,
                    int64_t n, float* y, ComputeType compute, const uint16_t* w_bf16) {
  if (compute == ComputeType::kBfloat16 && !OneDnnHasBfloat16Matmul()) {
    // The f32 product of the bf16-rounded operands (see OneDnnHasBfloat16Matmul).
    std::vector<float> x_rounded(m * k), w_rounded(n * k);
    RoundToBfloat16Parallel(x, m * k, x_rounded.data());
    if (w_bf16 != nullptr) {
      WidenBfloat16Parallel(w_bf16, n * k, w_rounded.data());
    } else {
      RoundToBfloat16Parallel(w, n * k, w_rounded.data());
    }
    return Linear(x_rounded.data(), m, k, w_rounded.data(), b, n, y);
  }
  return RunPrimitives("linear", [&](dnnl::stream& stream) {
    MatmulShape shape(m, n, k);
    shape.operand = compute == ComputeType::kBfloat16 ? dt::bf16 : dt::f32;
    shape.weights_transposed = true;  // W [N,K] row-major seen as Wᵀ [K,N]
    shape.bias = b != nullptr;
    const MatmulPrimitive& matmul = ThreadMatmul(shape);
    memory x_mem = Wrap(memory::desc({m, k}, dt::f32, tag::ab), x);
    memory w_mem = Wrap(memory::desc({k, n}, dt::f32, tag::ba), w);
    if (shape.operand != dt::f32) RoundOperands(stream, matmul, w_bf16, &x_mem, &w_mem);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, Wrap(matmul.dst, y)}};
    if (b != nullptr) args.emplace(DNNL_ARG_BIAS, Wrap(matmul.bias, b));
    matmul.primitive.execute(stream, args);
  });
}

absl::Status LinearToHeads(const float* x, int64_t batch, int64_t seq, int64_t k, const float* w,
                           const float* bias, int64_t heads, int64_t hd, float* head_major,
                           ComputeType compute, const uint16_t* w_bf16) {
  bool batched = false;
  absl::Status status = RunPrimitives("linear_to_heads", [&](dnnl::stream& stream) {
    // x [B, 1, S, K] broadcast over the heads; W seen as [1, H, K, hd]: element (h, i, c) is
    // W[h·hd + c][i]; dst [B, H, S, hd].
    MatmulShape shape(seq, hd, k);
    shape.src_batch = {batch, 1};
    shape.weights_batch = {1, heads};
    shape.operand = compute == ComputeType::kBfloat16 ? dt::bf16 : dt::f32;
    shape.weights_transposed = true;
    // Without a bf16 matmul (CPUs without AVX-512) the 2D product below emulates one. oneDNN may
    // also have no implementation of this form, or only its reference one (as it had for a
    // [1, H, 1, hd] bias: ~1000× slower than its GEMM): then the 2D product does it too.
    if (shape.operand == dt::bf16 && !OneDnnHasBfloat16Matmul()) return;
    const MatmulPrimitive* matmul;
    try {
      matmul = &ThreadMatmul(shape);
    } catch (const dnnl::error&) {
      return;
    }
    if (matmul->reference) return;
    batched = true;
    memory x_mem = Wrap(memory::desc({batch, 1, seq, k}, dt::f32, tag::abcd), x);
    memory w_mem = Wrap(memory::desc({1, heads, k, hd}, dt::f32, tag::abdc), w);
    if (shape.operand != dt::f32) RoundOperands(stream, *matmul, w_bf16, &x_mem, &w_mem);
    matmul->primitive.execute(stream, {{DNNL_ARG_SRC, x_mem},
                                       {DNNL_ARG_WEIGHTS, w_mem},
                                       {DNNL_ARG_DST, Wrap(matmul->dst, head_major)}});
  });
  if (!status.ok()) return status;
  if (!batched) {
    // [B·S, H·hd] by the 2D product (bias included), then split into heads.
    std::vector<float> rows(batch * seq * heads * hd);
    if (status = Linear(x, batch * seq, k, w, bias, heads * hd, rows.data(), compute, w_bf16);
        !status.ok()) {
      return status;
    }
    return SwapMiddleAxes(rows.data(), batch, seq, heads, hd, head_major);
  }
  if (bias != nullptr) {
    // The bias of head h, dims c, added to every row of that head.
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < batch * heads * seq; ++row) {
      const float* head_bias = bias + (row / seq) % heads * hd;
      float* out = head_major + row * hd;
      for (int64_t c = 0; c < hd; ++c) out[c] += head_bias[c];
    }
  }
  return absl::OkStatus();
}

absl::Status SwapMiddleAxes(const float* src, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                            float* dst) {
  return RunPrimitives("swap_middle_axes", [&](dnnl::stream& stream) {
    // Describe src in dst's logical order [d0, d2, d1, d3] with src's strides.
    const memory::desc src_md({d0, d2, d1, d3}, dt::f32, {d1 * d2 * d3, d3, d2 * d3, 1});
    const memory::desc dst_md({d0, d2, d1, d3}, dt::f32, tag::abcd);
    memory src_mem = Wrap(src_md, src);
    memory dst_mem = Wrap(dst_md, dst);
    dnnl::reorder(src_mem, dst_mem).execute(stream, src_mem, dst_mem);
  });
}

absl::Status AttentionScores(const float* q, const float* k, const float* bias,
                             int64_t bias_heads, int64_t b, int64_t hkv, int64_t rows, int64_t sk,
                             int64_t hd, float scale, float* scores) {
  return RunPrimitives("attention_scores", [&](dnnl::stream& stream) {
    // scores [B,Hkv,R,Sk] = Q [B,Hkv,R,hd] · Kᵀ (K [B,Hkv,Sk,hd] row-major seen as Kᵀ) · scale
    // + bias. A bias [B,1,R,Sk] or [B,Hkv,R,Sk] keeps the brgemm kernel; [1,H,R,Sk] would fall
    // back to ref.
    MatmulShape shape(rows, sk, hd);
    shape.src_batch = shape.weights_batch = {b, hkv};
    shape.weights_transposed = true;
    shape.output_scale = scale;
    if (bias != nullptr) shape.addend_heads = bias_heads;
    const MatmulPrimitive& matmul = ThreadMatmul(shape);
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, Wrap(matmul.src, q)},
                                            {DNNL_ARG_WEIGHTS, Wrap(matmul.weights, k)},
                                            {DNNL_ARG_DST, Wrap(matmul.dst, scores)}};
    if (bias != nullptr) {
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, Wrap(matmul.addend, bias));
    }
    matmul.primitive.execute(stream, args);
  });
}

absl::Status SoftmaxRows(float* data, int64_t rows, int64_t cols) {
  return RunPrimitives("softmax", [&](dnnl::stream& stream) {
    const memory::desc md({rows, cols}, dt::f32, tag::ab);
    memory mem = Wrap(md, data);
    const dnnl::softmax_forward::primitive_desc pd(
        dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1), CpuEngine());
    dnnl::softmax_forward(pd).execute(stream, {{DNNL_ARG_SRC, mem}, {DNNL_ARG_DST, mem}});
  });
}

absl::Status ProbsTimesValues(const float* probs, const float* v, int64_t b, int64_t hkv,
                              int64_t rows, int64_t sk, int64_t hd, float* out) {
  return RunPrimitives("attention_values", [&](dnnl::stream& stream) {
    // out [B,Hkv,R,hd] = P [B,Hkv,R,Sk] · V [B,Hkv,Sk,hd]
    MatmulShape shape(rows, hd, sk);
    shape.src_batch = shape.weights_batch = {b, hkv};
    const MatmulPrimitive& matmul = ThreadMatmul(shape);
    matmul.primitive.execute(stream, {{DNNL_ARG_SRC, Wrap(matmul.src, probs)},
                                      {DNNL_ARG_WEIGHTS, Wrap(matmul.weights, v)},
                                      {DNNL_ARG_DST, Wrap(matmul.dst, out)}});
  });
}

}  // namespace attnserve
