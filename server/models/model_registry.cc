#include "server/models/model_registry.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "server/models/model_spec.h"
#include "server/models/safetensors.h"

namespace attnserve {
namespace {

// The entries of `folder`, sorted; an entry that cannot be read ends the listing early, and
// `error` (when not null) says why. Never throws: reloads run on the server's signal thread.
std::vector<std::filesystem::path> ListFolder(const std::filesystem::path& folder,
                                              std::error_code* error = nullptr) {
  std::error_code ignored;
  std::error_code& status = error != nullptr ? *error : ignored;
  std::vector<std::filesystem::path> entries;
  for (std::filesystem::directory_iterator it(folder, status), end; !status && it != end;
       it.increment(status)) {
    entries.push_back(it->path());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Identifies the version of a model folder's files without reading the weights: config.pbtxt's
// bytes, and each regular file's name, size, inode and modification time (a file replaced by
// rename gets a new inode even within the file system's timestamp granularity).
std::string FolderFingerprint(const std::filesystem::path& folder) {
  std::vector<std::string> files;
  for (const std::filesystem::path& path : ListFolder(folder)) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) continue;
    files.push_back(absl::StrCat(path.filename().string(), ":", info.st_size, ":", info.st_ino,
                                 ":", info.st_mtim.tv_sec, ".", info.st_mtim.tv_nsec));
  }
  std::sort(files.begin(), files.end());
  std::ifstream config(folder / "config.pbtxt", std::ios::binary);
  const std::string config_text((std::istreambuf_iterator<char>(config)),
                                std::istreambuf_iterator<char>());
  return absl::StrCat(absl::StrJoin(files, "|"), "\n", config_text);
}

}  // namespace

absl::Status ModelRegistry::Add(v1::ModelConfig config, AttentionWeights weights,
                                PositionalEncoding encoding, std::string weights_dtype) {
  ASSIGN_OR_RETURN(LoadedModel model, BuildModel(std::move(config), std::move(weights),
                                                 std::move(encoding), std::move(weights_dtype)));
  Insert(std::move(model));
  return absl::OkStatus();
}

void ModelRegistry::Insert(LoadedModel model) {
  std::string name = model.config.name();
  models_[name] = std::make_shared<const LoadedModel>(std::move(model));
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::CreateFromRepository(
    const std::string& path) {
  return Reload(ModelRegistry(), path, nullptr);
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Reload(const ModelRegistry& serving,
                                                                     const std::string& path,
                                                                     ReloadReport* report) {
  std::error_code error;
  std::vector<std::filesystem::path> folders;
  for (const std::filesystem::path& entry : ListFolder(path, &error)) {
    std::error_code type_error;
    if (std::filesystem::is_directory(entry, type_error)) folders.push_back(entry);
  }
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("--model_repository=", path, " cannot be read: ", error.message()));
  }
  ReloadReport changes;
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry());
  for (const std::filesystem::path& folder : folders) {
    const std::string name = folder.filename().string();
    const std::string fingerprint = FolderFingerprint(folder);
    registry->fingerprints_[name] = fingerprint;
    const auto previous = serving.models_.find(name);
    const bool was_served = previous != serving.models_.end();
    if (const auto tried = serving.fingerprints_.find(name);
        tried != serving.fingerprints_.end() && tried->second == fingerprint) {
      // The files this registry was built from (or last failed on): nothing new to load.
      if (was_served) {
        registry->models_.insert(*previous);
        changes.unchanged.push_back(name);
        if (const auto stale = serving.stale_.find(name); stale != serving.stale_.end()) {
          registry->stale_.insert(*stale);
        }
      } else if (const auto failure = serving.failures_.find(name);
                 failure != serving.failures_.end()) {
        registry->failures_.insert(*failure);
      }
      continue;
    }
    if (absl::Status status = registry->LoadModelFolder(folder.string(), name); !status.ok()) {
      changes.failed.emplace(name, status);
      if (was_served) {
        registry->models_.insert(*previous);
        registry->stale_.emplace(name, status);
        changes.kept_previous.push_back(name);
      } else {
        registry->failures_.emplace(name, std::move(status));
      }
      continue;
    }
    (was_served ? changes.updated : changes.added).push_back(name);
  }
  for (const auto& [name, model] : serving.models_) {
    if (!registry->models_.count(name)) changes.removed.push_back(name);
  }
  if (report != nullptr) *report = std::move(changes);
  return registry;
}

absl::Status ModelRegistry::LoadModelFolder(const std::string& folder,
                                            const std::string& folder_name) {
  const std::string config_path = folder + "/config.pbtxt";
  std::ifstream config_file(config_path);
  if (!config_file) return absl::NotFoundError(absl::StrCat(config_path, ": cannot open"));
  const std::string text((std::istreambuf_iterator<char>(config_file)),
                         std::istreambuf_iterator<char>());
  ASSIGN_OR_RETURN(ModelSpec spec, ParseModelConfig(text, config_path, folder_name));
  const std::string& weights_name = spec.config.weights_file();
  const std::string weights_path =
      folder + "/" + (weights_name.empty() ? "weights.safetensors" : weights_name);
  ASSIGN_OR_RETURN(SafetensorsFile weights_file, SafetensorsFile::Open(weights_path));
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(std::move(spec), weights_file));
  Insert(std::move(model));
  return absl::OkStatus();
}

absl::StatusOr<const LoadedModel*> ModelRegistry::Find(absl::string_view name) const {
  auto it = models_.find(name);
  if (it != models_.end()) return it->second.get();
  if (auto failed = failures_.find(std::string(name)); failed != failures_.end()) {
    return absl::NotFoundError(absl::StrCat("model=\"", name, "\" failed to load: ",
                                            failed->second.message()));
  }
  std::vector<absl::string_view> names;
  for (const auto& [model_name, model] : models_) names.push_back(model_name);
  if (name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model name is empty; loaded models: ", absl::StrJoin(names, ", ")));
  }
  // The name is the client's: echo at most 128 bytes of it, cut at a UTF-8 character boundary.
  std::string shown(name);
  if (constexpr size_t kMaxEchoed = 128; name.size() > kMaxEchoed) {
    size_t cut = kMaxEchoed;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
    shown = absl::StrCat(name.substr(0, cut), "…(", name.size(), " bytes)");
  }
  return absl::NotFoundError(absl::StrCat("model=\"", shown, "\" is not loaded; loaded models: ",
                                          absl::StrJoin(names, ", ")));
}

std::vector<const LoadedModel*> ModelRegistry::List() const {
  std::vector<const LoadedModel*> models;
  for (const auto& [name, model] : models_) models.push_back(model.get());
  return models;
}

}  // namespace attnserve
