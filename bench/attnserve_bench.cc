// The attention core against the machine's limit: every figure is GFLOP/s (counter `gflops`) and
// the summary prints ratios to the oneDNN GEMM ceiling measured by this same binary in the same
// run. Names are a contract with tooling:
//   BM_GemmCeiling/<f32|bf16>                       2048×2048×2048 oneDNN matmul
//   BM_Sdpa/<dtype>/<seq>/<causal 0|1>/<encoding>   B=1, H=12, head_dim 64; useful FLOPs =
//                                                   4·B·H·Sq·Sk·hd, halved for causal; bf16:
//                                                   bf16 tensors in and out (as PyTorch's bf16
//                                                   SDPA and a BFLOAT16 client take them)
//   BM_Layer/<dtype>/<seq>                          the whole layer, d_model 768, 12 heads
//   BM_LongContext                                  B=1, H=1, hd 64, seq 65536, causal, f32;
//                                                   counter peak_rss_mb
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/counter_reporter.h"
#include "benchmark/benchmark.h"
#include "core/kernels/bfloat16.h"
#include "core/attention/multi_head_attention.h"
#include "core/kernels/onednn_ops.h"
#include "core/encodings/position_table_cache.h"
#include "core/attention/scaled_dot_product_attention.h"
#include "dnnl.hpp"

namespace attnserve {
namespace {

std::vector<float> Filled(int64_t count, float scale) {
  std::vector<float> values(count);
  uint32_t state = 12345;
  for (float& value : values) {
    state = state * 1664525u + 1013904223u;
    value = scale * (static_cast<float>(state >> 8) / 16777216.0f - 0.5f);
  }
  return values;
}

void SetGflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["gflops"] = benchmark::Counter(flops_per_iteration * 1e-9 * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

void GemmCeiling(benchmark::State& state, dnnl::memory::data_type type) {
  using dnnl::memory;
  if (type == memory::data_type::bf16 && !OneDnnHasBfloat16Matmul()) {
    state.SkipWithError(("oneDNN has no bf16 matmul on this CPU (ISA " + OneDnnCpuIsa() +
                         "): BFLOAT16 compute runs as f32 products of rounded operands")
                            .c_str());
    return;
  }
  const memory::dim n = 2048;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc a_md({n, n}, type, memory::format_tag::ab);
  const memory::desc c_md({n, n}, memory::data_type::f32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, a_md, c_md), engine);
  dnnl::matmul matmul(pd);
  memory a(a_md, engine), b(a_md, engine), c(c_md, engine);
  // Zero bytes are valid f32 and bf16 zeros; the kernels' speed does not depend on the values.
  std::memset(a.get_data_handle(), 0, a_md.get_size());
  std::memset(b.get_data_handle(), 0, a_md.get_size());
  for (auto _ : state) {
    matmul.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
  }
  SetGflops(state, 2.0 * n * n * n);
}

// Times self-attention (Sq = Sk) of random q, k, v under `options` — f32 tensors, or bf16 ones
// (`Tensor` float or uint16_t); sets the `gflops` counter (useful FLOPs 4·B·H·S²·hd, halved for
// causal). Returns false after reporting an error.
template <typename Tensor>
bool TimeAttention(benchmark::State& state, const SdpaShape& shape, const SdpaOptions& options) {
  const int64_t q_count = shape.batch * shape.num_heads * shape.q_len * shape.head_dim;
  const int64_t kv_count = shape.batch * shape.num_kv_heads * shape.kv_len * shape.head_dim;
  auto filled = [](int64_t count) {
    const std::vector<float> values = Filled(count, 1.0f);
    if constexpr (std::is_same_v<Tensor, float>) {
      return values;
    } else {
      std::vector<uint16_t> bits(count);
      for (int64_t i = 0; i < count; ++i) bits[i] = FloatToBfloat16(values[i]);
      return bits;
    }
  };
  const std::vector<Tensor> q = filled(q_count), k = filled(kv_count), v = filled(kv_count);
  std::vector<Tensor> out(q_count);
  for (auto _ : state) {
    absl::Status status;
    if constexpr (std::is_same_v<Tensor, float>) {
      status = ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(), out.data(),
                                         nullptr);
    } else {
      status = ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(), out.data());
    }
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return false;
    }
  }
  SetGflops(state, 4.0 * shape.batch * shape.num_heads * shape.q_len * shape.kv_len *
                       shape.head_dim * (options.causal ? 0.5 : 1.0));
  return true;
}

PositionalEncoding EncodingNamed(const std::string& name) {
  if (name == "rope") return RopeParams{};
  if (name == "alibi") return AlibiParams{};
  return NoPositionalEncoding{};
}

void Sdpa(benchmark::State& state, ComputeType compute, int64_t seq, bool causal,
          const std::string& encoding) {
  SdpaOptions options;
  options.causal = causal;
  options.compute = compute;
  options.encoding = EncodingNamed(encoding);
  for (int64_t t = 0; t < seq; ++t) options.q_positions.push_back(t);
  options.k_positions = options.q_positions;
  PositionTableCache tables;  // as the server keeps RoPE tables across requests
  options.tables = &tables;
  const SdpaShape shape{1, 12, 12, seq, seq, 64};
  if (compute == ComputeType::kBfloat16) {
    TimeAttention<uint16_t>(state, shape, options);
  } else {
    TimeAttention<float>(state, shape, options);
  }
}

void Layer(benchmark::State& state, ComputeType compute, int64_t seq) {
  const int64_t d = 768, heads = 12;
  AttentionConfig config;
  config.d_model = d;
  config.num_heads = heads;
  AttentionWeights weights;
  weights.q_proj_weight = Filled(d * d, 0.05f);
  weights.k_proj_weight = Filled(d * d, 0.05f);
  weights.v_proj_weight = Filled(d * d, 0.05f);
  weights.o_proj_weight = Filled(d * d, 0.05f);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, std::move(weights));
  if (!layer.ok()) {
    state.SkipWithError(layer.status().ToString().c_str());
    return;
  }
  const std::vector<float> x = Filled(seq * d, 1.0f);
  std::vector<float> out(seq * d);
  std::vector<int64_t> positions(seq);
  for (int64_t t = 0; t < seq; ++t) positions[t] = t;
  AttendInputs inputs;
  inputs.query = x.data();
  inputs.batch = 1;
  inputs.q_len = seq;
  inputs.positions = positions.data();
  inputs.compute = compute;
  for (auto _ : state) {
    absl::Status status = (*layer)->Forward(inputs, out.data(), nullptr);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
  }
  // Four d×d projections plus attention (4·S²·d).
  SetGflops(state, 4.0 * 2.0 * seq * d * d + 4.0 * seq * seq * d);
}

void LongContext(benchmark::State& state) {
  const int64_t seq = 65536, hd = 64;
  SdpaOptions options;
  options.causal = true;
  if (!TimeAttention<float>(state, SdpaShape{1, 1, 1, seq, seq, hd}, options)) return;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void RegisterAll() {
  using dnnl::memory;
  benchmark::RegisterBenchmark("BM_GemmCeiling/f32", GemmCeiling, memory::data_type::f32)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_GemmCeiling/bf16", GemmCeiling, memory::data_type::bf16)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  const std::pair<const char*, ComputeType> dtypes[] = {{"f32", ComputeType::kFloat32},
                                                        {"bf16", ComputeType::kBfloat16}};
  for (const auto& [dtype, compute] : dtypes) {
    for (int64_t seq : {128, 512, 2048, 8192}) {
      for (bool causal : {false, true}) {
        for (const char* encoding : {"none", "rope", "alibi"}) {
          const std::string name = std::string("BM_Sdpa/") + dtype + "/" + std::to_string(seq) +
                                   "/" + (causal ? "1" : "0") + "/" + encoding;
          benchmark::RegisterBenchmark(name.c_str(), Sdpa, compute, seq, causal,
                                       std::string(encoding))
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
      }
    }
    for (int64_t seq : {128, 512, 2048}) {
      const std::string name = std::string("BM_Layer/") + dtype + "/" + std::to_string(seq);
      benchmark::RegisterBenchmark(name.c_str(), Layer, compute, seq)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("BM_LongContext", LongContext)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(1);
}

// Ratios to the same run's ceiling of the same dtype.
void PrintRatios(const std::map<std::string, double>& gflops) {
  std::cout << "\nGFLOP/s as a fraction of this run's BM_GemmCeiling of the same dtype:\n";
  for (const auto& [name, value] : gflops) {
    if (name.rfind("BM_GemmCeiling", 0) == 0) continue;
    const std::string dtype = name.find("/bf16/") != std::string::npos ? "bf16" : "f32";
    auto ceiling = gflops.find("BM_GemmCeiling/" + dtype + "/real_time");
    if (ceiling == gflops.end()) continue;
    std::cout << "  " << name << ": " << value / ceiling->second << "\n";
  }
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  attnserve::RegisterAll();
  attnserve::CounterReporter reporter("gflops");
  benchmark::RunSpecifiedBenchmarks(&reporter);
  attnserve::PrintRatios(reporter.values());
  return 0;
}
