// The built-in demo models (ModelRegistry::CreateWithDemoModels): one per encoding family, with
// seeded random weights and tables, so that the server is useful the moment it starts.
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/encodings/encoding_tables.h"
#include "server/models/model_registry.h"
#include "server/models/encoding_proto.h"

namespace attnserve {
namespace {

// `count` values uniform in ±1/sqrt(fan_in), torch.nn.Linear's default initialisation range
// for both weight and bias.
std::vector<float> SeededUniform(std::mt19937& rng, int64_t count, int64_t fan_in) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  std::vector<float> values(count);
  for (float& value : values) value = uniform(rng);
  return values;
}

v1::ModelConfig DemoConfig(const char* name, const char* description, int64_t d_model,
                           int64_t num_heads, int64_t num_kv_heads, bool biases) {
  v1::ModelConfig config;
  config.set_name(name);
  config.set_description(description);
  config.set_d_model(d_model);
  config.set_num_heads(num_heads);
  config.set_num_kv_heads(num_kv_heads);
  config.set_qkv_bias(biases);
  config.set_o_bias(biases);
  return config;
}

// Seeded weights matching `config` (defaults resolved).
AttentionWeights DemoWeights(const v1::ModelConfig& config, std::mt19937& rng) {
  const int64_t d = config.d_model();
  const int64_t q_width = config.num_heads() * config.head_dim();
  const int64_t kv_width = config.num_kv_heads() * config.head_dim();
  AttentionWeights weights;
  weights.q_proj_weight = SeededUniform(rng, q_width * d, d);
  weights.k_proj_weight = SeededUniform(rng, kv_width * d, d);
  weights.v_proj_weight = SeededUniform(rng, kv_width * d, d);
  weights.o_proj_weight = SeededUniform(rng, d * q_width, q_width);
  if (config.qkv_bias()) {
    weights.q_proj_bias = SeededUniform(rng, q_width, d);
    weights.k_proj_bias = SeededUniform(rng, kv_width, d);
    weights.v_proj_bias = SeededUniform(rng, kv_width, d);
  }
  if (config.o_bias()) weights.o_proj_bias = SeededUniform(rng, d, q_width);
  return weights;
}

// A seeded table for an encoding that carries learned weights, shaped as the layer needs it.
void AttachDemoTable(const v1::ModelConfig& config, std::mt19937& rng,
                     PositionalEncoding& encoding) {
  const std::optional<EncodingTableSpec> spec = EncodingTable(
      encoding, TableLayerShape{config.d_model(), config.num_heads(), config.head_dim(),
                                config.max_positions()});
  if (!spec.has_value()) return;
  std::normal_distribution<float> normal(0.0f, spec->init_stddev);
  auto table = std::make_shared<std::vector<float>>(spec->rows * spec->cols);
  for (float& value : *table) value = normal(rng);
  AttachTable(std::move(table), encoding);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::CreateWithDemoModels() {
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry());
  std::vector<v1::ModelConfig> configs;

  configs.push_back(DemoConfig("demo-sinusoidal",
                               "Demo: d_model 512, 8 heads, q/k/v/o biases, Vaswani sinusoidal "
                               "encoding added to the input",
                               512, 8, 8, true));
  configs.back().mutable_encoding()->mutable_sinusoidal()->set_variant(v1::VASWANI);

  configs.push_back(DemoConfig("demo-nope-gqa",
                               "Demo: d_model 256, 8 query heads sharing 2 key/value heads (GQA), "
                               "no biases, no positional encoding",
                               256, 8, 2, false));
  configs.back().mutable_encoding()->mutable_none();

  configs.push_back(DemoConfig("demo-learned",
                               "Demo: d_model 256, 4 heads, biases, learned absolute positions "
                               "(8192-row table, GPT-2 style) added to the input",
                               256, 4, 4, true));
  configs.back().mutable_encoding()->mutable_learned();
  configs.back().set_max_positions(8192);

  configs.push_back(DemoConfig("demo-rope",
                               "Demo: LLaMA-style d_model 256, 8 query heads, 4 key/value heads, "
                               "no biases, RoPE half-split theta 10000",
                               256, 8, 4, false));
  configs.back().mutable_encoding()->mutable_rope()->set_theta(10000);

  configs.push_back(DemoConfig("demo-alibi",
                               "Demo: BLOOM-style d_model 384, 12 heads (non-power-of-two ALiBi "
                               "slopes), biases, ALiBi max_bias 8",
                               384, 12, 12, true));
  configs.back().mutable_encoding()->mutable_alibi()->set_max_bias(8);

  configs.push_back(DemoConfig("demo-t5",
                               "Demo: T5-style d_model 256, 8 heads, no biases, no score scaling, "
                               "bidirectional relative bias (32 buckets, max distance 128)",
                               256, 8, 8, false));
  configs.back().mutable_encoding()->mutable_t5();
  configs.back().set_scale(1.0);

  configs.push_back(DemoConfig("demo-cope",
                               "Demo: d_model 256, 4 heads, no biases, CoPE with 64 position "
                               "embeddings (use with causal=true, as trained)",
                               256, 4, 4, false));
  configs.back().mutable_encoding()->mutable_cope()->set_npos_max(64);

  uint32_t seed = 20240601;
  for (v1::ModelConfig& config : configs) {
    config.set_description(absl::StrCat(config.description(), "; seeded random weights"));
    config.set_head_dim(config.d_model() / config.num_heads());
    std::mt19937 rng(seed++);
    AttentionWeights weights = DemoWeights(config, rng);
    absl::StatusOr<PositionalEncoding> encoding = EncodingFromProto(config.encoding(), "encoding");
    if (!encoding.ok()) return encoding.status();
    AttachDemoTable(config, rng, *encoding);
    if (absl::Status status =
            registry->Add(std::move(config), std::move(weights), *std::move(encoding), "F32");
        !status.ok()) {
      return status;
    }
  }
  return registry;
}

}  // namespace attnserve
