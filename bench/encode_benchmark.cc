// Encode's core path (positional encodings applied to [tokens, d_model] float32 embeddings) against
// the memory bandwidth of the same binary's memcpy. Applying an encoding is memory-bound, so the
// figure of merit is bytes of embeddings processed per second relative to memcpy's, printed as
// ratios at the end of the run. Tables are cached (computed once per parameter set), as in the
// server.
//
//   build/bench/encode_benchmark [--tokens=4096] [--d_model=4096] [benchmark flags]
#include <omp.h>

#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/counter_reporter.h"
#include "benchmark/benchmark.h"
#include "core/encodings/position_table_cache.h"
#include "core/encodings/positional_encoding.h"

ABSL_FLAG(int64_t, tokens, 4096, "positions per request (batch 1)");
ABSL_FLAG(int64_t, d_model, 4096, "embedding width");
ABSL_FLAG(int64_t, head_dim, 128, "RoPE head width (d_model / head_dim heads)");

namespace attnserve {
namespace {

struct Workload {
  int64_t tokens = 0, d_model = 0, head_dim = 0;
  std::vector<float> x, out;
  std::vector<int64_t> positions;
  int64_t bytes() const { return tokens * d_model * static_cast<int64_t>(sizeof(float)); }
};

Workload& SharedWorkload() {
  static Workload* workload = [] {
    auto* w = new Workload;
    w->tokens = absl::GetFlag(FLAGS_tokens);
    w->d_model = absl::GetFlag(FLAGS_d_model);
    w->head_dim = absl::GetFlag(FLAGS_head_dim);
    w->x.assign(w->tokens * w->d_model, 0.5f);
    w->out.assign(w->x.size(), 0.0f);
    for (int64_t t = 0; t < w->tokens; ++t) w->positions.push_back(t);
    return w;
  }();
  return *workload;
}

void BM_Memcpy(benchmark::State& state) {
  Workload& w = SharedWorkload();
  for (auto _ : state) {
    std::memcpy(w.out.data(), w.x.data(), w.bytes());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.bytes());
}

// Arg 0: OpenMP threads.
void RunEncode(benchmark::State& state, const PositionalEncoding& encoding) {
  Workload& w = SharedWorkload();
  omp_set_num_threads(static_cast<int>(state.range(0)));
  PositionTableCache tables;
  const int64_t heads = w.d_model / w.head_dim;
  auto encode = [&] {
    return EncodeEmbeddings(encoding, w.out.data(), w.positions.data(), w.tokens, heads,
                            w.head_dim, 1.0f, 0, w.out.data(), &tables);
  };
  if (absl::Status status = encode(); !status.ok()) {  // warms the table cache
    state.SkipWithError(std::string(status.message()).c_str());
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(encode());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.bytes());
}

void BM_EncodeSinusoidal(benchmark::State& state) { RunEncode(state, SinusoidalParams{}); }
void BM_EncodeRope(benchmark::State& state) { RunEncode(state, RopeParams{}); }

void ThreadArgs(benchmark::internal::Benchmark* b) {
  b->Arg(1);
  if (omp_get_max_threads() > 1) b->Arg(omp_get_max_threads());
  b->UseRealTime();
}

BENCHMARK(BM_Memcpy)->UseRealTime();
BENCHMARK(BM_EncodeSinusoidal)->Apply(ThreadArgs);
BENCHMARK(BM_EncodeRope)->Apply(ThreadArgs);

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  attnserve::CounterReporter reporter("bytes_per_second");
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto& rates = reporter.values();
  auto memcpy_rate = rates.find("BM_Memcpy/real_time");
  if (memcpy_rate == rates.end()) return 0;
  const attnserve::Workload& w = attnserve::SharedWorkload();
  std::cout << "\nEncode bandwidth / memcpy bandwidth, [" << w.tokens << ", " << w.d_model
            << "] float32 (target >= 0.50):\n";
  for (const auto& [name, rate] : rates) {
    if (name == memcpy_rate->first) continue;
    std::cout << "  " << name << ": " << rate / memcpy_rate->second << "\n";
  }
  return 0;
}
