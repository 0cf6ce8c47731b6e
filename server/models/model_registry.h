// The loaded models, immutable after creation (so lookups need no lock). A reload builds a new
// registry that shares the unchanged models with the old one (ModelStore swaps them).
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_REGISTRY_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/model_config.pb.h"
#include "core/attention/multi_head_attention.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/loaded_model.h"

namespace attnserve {

// What ModelRegistry::Reload changed, for the log and the metrics (model names, sorted).
struct ReloadReport {
  std::vector<std::string> added;      // new folders, now served
  std::vector<std::string> updated;    // changed files, the new version served
  std::vector<std::string> removed;    // folder gone: no longer served
  std::vector<std::string> unchanged;  // same files as before: the same loaded model
  // Folders whose new files failed to load in this reload, with the reason. Each is reported once
  // per version of its files: an unchanged broken folder is not retried.
  std::map<std::string, absl::Status> failed;
  // The failed models that were being served: their previous version goes on serving.
  std::vector<std::string> kept_previous;
};

class ModelRegistry {
 public:
  // The built-in demo models, one per encoding family, with seeded random weights and tables:
  // demo-sinusoidal, demo-nope-gqa, demo-learned, demo-rope, demo-alibi, demo-t5, demo-cope
  // (their ModelConfig descriptions give the shapes).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> CreateWithDemoModels();

  // The models of a repository folder: one sub-folder per model with `config.pbtxt` (text-format
  // ModelConfig; `name` defaults to the folder's name and must match it) and its weights file
  // (safetensors, F32/BF16/F16, Hugging Face tensor names unless overridden). A model that fails
  // to load is skipped, and its reason kept for Find() and failures(); the others load.
  // NOT_FOUND when the folder cannot be read.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> CreateFromRepository(
      const std::string& path);

  // The repository at `path` as it is now, reusing what `serving` (a registry of the same
  // repository) already loaded: a folder whose files are unchanged (names, sizes, inodes,
  // modification times, and config.pbtxt's bytes) keeps its loaded model; changed and new folders
  // load; models whose folder is gone are left out. A folder whose new files fail to load keeps
  // serving the model `serving` had for it, if any. NOT_FOUND when the folder cannot be read
  // (then nothing changes). `report` (may be null) receives what changed.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Reload(const ModelRegistry& serving,
                                                               const std::string& path,
                                                               ReloadReport* report);

  // Models of the repository that failed to load, by folder name, with the reason.
  const std::map<std::string, absl::Status>& failures() const { return failures_; }
  // Served models whose folder's current files failed to load, so an earlier version is served,
  // with the reason.
  const std::map<std::string, absl::Status>& stale() const { return stale_; }

  // NOT_FOUND naming the model and listing the loaded ones (or, for a repository model that
  // failed to load, giving the reason); INVALID_ARGUMENT for an empty name.
  absl::StatusOr<const LoadedModel*> Find(absl::string_view name) const;

  // Sorted by name.
  std::vector<const LoadedModel*> List() const;

 private:
  ModelRegistry() = default;
  // `encoding` is the config's encoding with its tables attached.
  absl::Status Add(v1::ModelConfig config, AttentionWeights weights, PositionalEncoding encoding,
                   std::string weights_dtype);

  // Serves `model` under its name.
  void Insert(LoadedModel model);

  // Loads `folder`/config.pbtxt and its weights. Messages name the file and tensor.
  absl::Status LoadModelFolder(const std::string& folder, const std::string& folder_name);

  // Shared with the registries reloaded from this one while their files are unchanged.
  std::map<std::string, std::shared_ptr<const LoadedModel>, std::less<>> models_;
  std::map<std::string, absl::Status> failures_;
  std::map<std::string, absl::Status> stale_;
  // Repository registries: each folder's files as last loaded or tried (FolderFingerprint).
  std::map<std::string, std::string> fingerprints_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_REGISTRY_H_
