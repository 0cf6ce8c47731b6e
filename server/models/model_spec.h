// A model folder's config.pbtxt checked, and the tensors its weights file must hold.
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_SPEC_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/model_config.pb.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/loaded_model.h"
#include "server/models/safetensors.h"

namespace attnserve {

// A config.pbtxt parsed and checked: the layer's shape with defaults resolved, and its encoding
// (tables not attached yet: they come from the weights file).
struct ModelSpec {
  v1::ModelConfig config;
  std::string config_path;  // names the config in messages
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  PositionalEncoding encoding;
};

// One tensor a model's weights file must hold.
struct RequiredTensor {
  std::string role;  // its Hugging Face name, e.g. "q_proj.weight"
  std::string name;  // as stored: the role, or the config's tensor_names override
  std::vector<int64_t> shape;
};

// Parses the text of `config_path` (text-format ModelConfig) and checks what needs no weights:
// `name` defaults to `folder_name` and must equal it; every dimension is in [0, 2^20] (so that
// tensor shapes cannot overflow) and they fit together; the encoding converts. INVALID_ARGUMENT
// naming the file (and line and column for a parse error).
absl::StatusOr<ModelSpec> ParseModelConfig(absl::string_view text, const std::string& config_path,
                                           const std::string& folder_name);

// The tensors `spec` reads from its weights file, in the order they are read.
std::vector<RequiredTensor> RequiredTensors(const ModelSpec& spec);

// The model of `spec` with its tensors from `weights` (every tensor of RequiredTensors, F32,
// BF16 or F16, finite) and the layer built. Messages name the files and the tensor.
absl::StatusOr<LoadedModel> LoadModel(ModelSpec spec, const SafetensorsFile& weights);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_SPEC_H_
