// The loaded models, immutable after creation (so lookups need no lock).
#ifndef ATTNSERVE_SERVER_MODEL_REGISTRY_H_
#define ATTNSERVE_SERVER_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/model_config.pb.h"
#include "core/multi_head_attention.h"

namespace attnserve {

struct LoadedModel {
  v1::ModelConfig config;  // as listed by ListModels, defaults resolved
  std::unique_ptr<MultiHeadAttention> layer;
};

class ModelRegistry {
 public:
  // The built-in demo models, one per encoding family, with seeded random weights and tables:
  // demo-sinusoidal, demo-nope-gqa, demo-learned, demo-rope, demo-alibi, demo-t5, demo-cope
  // (their ModelConfig descriptions give the shapes).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> CreateWithDemoModels();

  // NOT_FOUND naming the model and listing the loaded ones; INVALID_ARGUMENT for an empty name.
  absl::StatusOr<const LoadedModel*> Find(absl::string_view name) const;

  // Sorted by name.
  std::vector<const LoadedModel*> List() const;

 private:
  ModelRegistry() = default;
  // `encoding` is the config's encoding with its tables attached.
  absl::Status Add(v1::ModelConfig config, AttentionWeights weights, PositionalEncoding encoding);

  std::map<std::string, LoadedModel, std::less<>> models_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODEL_REGISTRY_H_
