// Batched computation against the same work one call at a time, the ratio measured in one run
// (the machines are shared and noisy; only ratios within a run mean something):
//   BM_VarlenSdpa/<packed|separate>/<max_len>   16 sequences of lengths spread over
//                                               max_len/64 … max_len (1…64, 8…512), H 12, hd 64,
//                                               causal, f32: ScaledDotProductAttentionBatch vs
//                                               ScaledDotProductAttention per sequence
//   BM_VarlenLayer/<packed|separate>/<max_len>  the same sequences through a d_model 768, 12-head
//                                               layer: ForwardBatch vs Forward per sequence
//   BM_DecodeStreams/<streams>                  one decoding step of 1 token for each of 1 or 16
//                                               streams (128 tokens cached each) on a d_model
//                                               2048, 16-head layer: DecodeBatch
// Counter `tokens_per_s`: query tokens per second. The summary prints packed / separate
// (targets: >= 2 for 1…64) and 16 streams / 1 stream (target >= 6).
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/counter_reporter.h"
#include "benchmark/benchmark.h"
#include "core/attention/multi_head_attention.h"
#include "core/attention/scaled_dot_product_attention.h"
#include "core/attention/sdpa_batch.h"

namespace attnserve {
namespace {

constexpr int64_t kSequences = 16;
constexpr int64_t kHeads = 12, kHeadDim = 64, kDModel = 768;

std::vector<float> Random(int64_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

// 16 lengths spread evenly over [max_len / 64, max_len] (at least 1).
std::vector<int64_t> Lengths(int64_t max_len) {
  std::vector<int64_t> lengths;
  const int64_t min_len = std::max<int64_t>(1, max_len / 64);
  for (int64_t i = 0; i < kSequences; ++i) {
    lengths.push_back(min_len + (max_len - min_len) * i / (kSequences - 1));
  }
  return lengths;
}

void SetTokens(benchmark::State& state, const std::vector<int64_t>& lengths) {
  int64_t tokens = 0;
  for (int64_t length : lengths) tokens += length;
  state.counters["tokens_per_s"] = benchmark::Counter(
      static_cast<double>(tokens * state.iterations()), benchmark::Counter::kIsRate);
}

// One sequence's q, k, v [1, H, S, hd], output and options.
struct SdpaSequence {
  SdpaShape shape;
  SdpaOptions options;
  std::vector<float> q, k, v, out;
};

void VarlenSdpa(benchmark::State& state, bool packed, int64_t max_len) {
  const std::vector<int64_t> lengths = Lengths(max_len);
  std::vector<SdpaSequence> sequences(kSequences);
  std::vector<SdpaBatchMember<float>> members;
  for (int64_t i = 0; i < kSequences; ++i) {
    SdpaSequence& s = sequences[i];
    const int64_t n = lengths[i] * kHeads * kHeadDim;
    s.shape = SdpaShape{1, kHeads, kHeads, lengths[i], lengths[i], kHeadDim};
    s.options.causal = true;
    s.q = Random(n, 3 * i);
    s.k = Random(n, 3 * i + 1);
    s.v = Random(n, 3 * i + 2);
    s.out.resize(n);
    members.push_back({s.shape, &s.options, s.q.data(), s.k.data(), s.v.data(), s.out.data(),
                       nullptr});
  }
  auto run = [&] {
    if (packed) {
      for (const absl::Status& status : ScaledDotProductAttentionBatch(members)) {
        if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
      }
      return;
    }
    for (SdpaSequence& s : sequences) {
      const absl::Status status = ScaledDotProductAttention(
          s.shape, s.options, s.q.data(), s.k.data(), s.v.data(), s.out.data(), nullptr);
      if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
    }
  };
  run();  // warm-up: primitives for these shapes, buffers
  for (auto _ : state) run();
  SetTokens(state, lengths);
}

std::unique_ptr<MultiHeadAttention> MakeLayer(int64_t d_model, int64_t heads) {
  AttentionConfig config;
  config.d_model = d_model;
  config.num_heads = heads;
  AttentionWeights w;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d_model));
  w.q_proj_weight = Random(d_model * d_model, 11, scale);
  w.k_proj_weight = Random(d_model * d_model, 12, scale);
  w.v_proj_weight = Random(d_model * d_model, 13, scale);
  w.o_proj_weight = Random(d_model * d_model, 14, scale);
  return *MultiHeadAttention::Create(config, std::move(w));
}

void VarlenLayer(benchmark::State& state, bool packed, int64_t max_len) {
  static const MultiHeadAttention* const layer = MakeLayer(kDModel, kHeads).release();
  const std::vector<int64_t> lengths = Lengths(max_len);
  std::vector<std::vector<float>> queries, outs;
  std::vector<std::vector<int64_t>> positions;
  std::vector<AttendInputs> inputs(kSequences);
  std::vector<LayerBatchMember> members;
  for (int64_t i = 0; i < kSequences; ++i) {
    queries.push_back(Random(lengths[i] * kDModel, 100 + i));
    outs.emplace_back(lengths[i] * kDModel);
    positions.emplace_back(lengths[i]);
    for (int64_t t = 0; t < lengths[i]; ++t) positions.back()[t] = t;
  }
  for (int64_t i = 0; i < kSequences; ++i) {
    inputs[i].query = queries[i].data();
    inputs[i].batch = 1;
    inputs[i].q_len = lengths[i];
    inputs[i].positions = positions[i].data();
    inputs[i].causal = true;
    members.push_back({&inputs[i], outs[i].data(), nullptr});
  }
  auto run = [&] {
    if (packed) {
      for (const absl::Status& status : layer->ForwardBatch(members)) {
        if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
      }
      return;
    }
    for (const LayerBatchMember& member : members) {
      const absl::Status status = layer->Forward(*member.inputs, member.out, nullptr);
      if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
    }
  };
  run();  // warm-up: primitives for these shapes, buffers
  for (auto _ : state) run();
  SetTokens(state, lengths);
}

// Steps of 1 token on `streams` streams with 128 tokens cached each; each iteration adds a token
// to every cache (the iterations are fixed, so the caches end at 128 + iterations).
void DecodeStreams(benchmark::State& state) {
  static const MultiHeadAttention* const layer = MakeLayer(2048, 16).release();
  const int64_t streams = state.range(0), cached = 128, d = 2048;
  std::vector<KvCache> caches(streams);
  const std::vector<float> prefix = Random(cached * d, 7);
  std::vector<float> prefix_out(cached * d);
  DecodeInputs prefix_inputs;
  prefix_inputs.query = prefix.data();
  prefix_inputs.new_tokens = cached;
  for (KvCache& cache : caches) {
    if (!layer->Decode(prefix_inputs, &cache, prefix_out.data(), nullptr).ok()) {
      state.SkipWithError("prefix failed");
      return;
    }
  }
  const std::vector<float> token = Random(d, 8);
  std::vector<std::vector<float>> outs(streams, std::vector<float>(d));
  DecodeInputs step;
  step.query = token.data();
  step.new_tokens = 1;
  std::vector<DecodeBatchMember> members;
  for (int64_t s = 0; s < streams; ++s) {
    members.push_back({&step, &caches[s], outs[s].data(), nullptr});
  }
  for (auto _ : state) {
    for (const absl::Status& status : layer->DecodeBatch(members)) {
      if (!status.ok()) state.SkipWithError(std::string(status.message()).c_str());
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(
      static_cast<double>(streams * state.iterations()), benchmark::Counter::kIsRate);
}

void RegisterAll() {
  for (const int64_t max_len : {64, 512}) {
    for (const bool packed : {true, false}) {
      const std::string suffix =
          std::string(packed ? "packed" : "separate") + "/" + std::to_string(max_len);
      benchmark::RegisterBenchmark(("BM_VarlenSdpa/" + suffix).c_str(), VarlenSdpa, packed,
                                   max_len)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("BM_VarlenLayer/" + suffix).c_str(), VarlenLayer, packed,
                                   max_len)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("BM_DecodeStreams", DecodeStreams)
      ->Arg(1)
      ->Arg(16)
      ->Iterations(64)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// "<name>: <numerator / denominator>" for the pairs measured.
void PrintRatio(const std::map<std::string, double>& values, const std::string& label,
                const std::string& numerator, const std::string& denominator) {
  const auto a = values.find(numerator), b = values.find(denominator);
  if (a == values.end() || b == values.end() || b->second <= 0) return;
  std::cout << "  " << label << ": " << a->second / b->second << "\n";
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  attnserve::RegisterAll();
  attnserve::CounterReporter reporter("tokens_per_s");
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const std::map<std::string, double> values = reporter.values();
  std::cout << "\nBatched / one call each (tokens per second, same run):\n";
  for (const char* kernel : {"BM_VarlenSdpa", "BM_VarlenLayer"}) {
    for (const char* max_len : {"64", "512"}) {
      const std::string base = std::string(kernel) + "/";
      attnserve::PrintRatio(values, base + "<packed/separate>/" + max_len + " (target >= 2 at 64)",
                            base + "packed/" + max_len + "/real_time",
                            base + "separate/" + max_len + "/real_time");
    }
  }
  attnserve::PrintRatio(values, "BM_DecodeStreams 16 streams / 1 stream (target >= 6)",
                        "BM_DecodeStreams/16/iterations:64/real_time",
                        "BM_DecodeStreams/1/iterations:64/real_time");
  return 0;
}
