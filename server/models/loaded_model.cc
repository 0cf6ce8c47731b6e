#include "server/models/loaded_model.h"

#include <utility>

#include "core/base/field_status.h"

namespace attnserve {

absl::StatusOr<LoadedModel> BuildModel(v1::ModelConfig config, AttentionWeights weights,
                                       PositionalEncoding encoding, std::string weights_dtype) {
  AttentionConfig core_config;
  core_config.d_model = config.d_model();
  core_config.num_heads = config.num_heads();
  core_config.num_kv_heads = config.num_kv_heads();
  core_config.head_dim = config.head_dim();
  if (config.has_scale()) core_config.scale = static_cast<float>(config.scale());
  core_config.encoding = std::move(encoding);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(core_config, std::move(weights));
  if (!layer.ok()) return WithFieldPrefix(layer.status(), config.name());
  // List the resolved defaults so clients see the shapes the layer really uses.
  config.set_num_kv_heads((*layer)->config().num_kv_heads);
  config.set_head_dim((*layer)->config().head_dim);
  return LoadedModel{std::move(config), *std::move(layer), std::move(weights_dtype)};
}

}  // namespace attnserve
