// A served model: its config as clients see it and its attention layer.
#ifndef ATTNSERVE_SERVER_MODELS_LOADED_MODEL_H_
#define ATTNSERVE_SERVER_MODELS_LOADED_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "attnserve/v1/model_config.pb.h"
#include "core/attention/multi_head_attention.h"
#include "core/encodings/positional_encoding.h"

namespace attnserve {

struct LoadedModel {
  v1::ModelConfig config;  // as listed by ListModels, defaults resolved
  std::unique_ptr<MultiHeadAttention> layer;
  // How the weights were stored before loading (held as float32 either way): "F32", "BF16",
  // "F16", or several joined by "+" (e.g. "BF16+F16").
  std::string weights_dtype;
};

// The layer of `config` (defaults resolved) over `weights`, with `encoding` (the config's, its
// table attached); the returned config lists the resolved defaults. Messages are prefixed with
// the model's name.
absl::StatusOr<LoadedModel> BuildModel(v1::ModelConfig config, AttentionWeights weights,
                                       PositionalEncoding encoding, std::string weights_dtype);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_LOADED_MODEL_H_
