#include "server/models/model_reload.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/encodings/positional_encoding.h"
#include "spdlog/spdlog.h"

namespace attnserve {

void PublishModels(const ModelRegistry& registry, ServerMetrics& metrics) {
  std::vector<ServerMetrics::ModelInfo> models;
  for (const LoadedModel* model : registry.List()) {
    const AttentionConfig& config = model->layer->config();
    models.push_back({model->config.name(), EncodingName(config.encoding), config.num_heads,
                      config.num_kv_heads, config.head_dim, config.d_model,
                      model->weights_dtype});
  }
  std::vector<std::string> stale;
  for (const auto& [name, reason] : registry.stale()) stale.push_back(name);
  metrics.SetModels(models, stale);
}

absl::StatusOr<ReloadReport> ReloadModels(const std::string& repository, ModelStore& store,
                                          ServerMetrics* metrics) {
  ReloadReport report;
  absl::StatusOr<std::unique_ptr<ModelRegistry>> next;
  try {
    next = ModelRegistry::Reload(*store.Current(), repository, &report);
  } catch (const std::exception& e) {
    // Out of memory for a huge weights file, or an I/O error thrown by the standard library:
    // the reload runs on the server's signal thread, which must go on serving.
    next = absl::ResourceExhaustedError(absl::StrCat("reading ", repository, ": ", e.what()));
  }
  if (!next.ok()) {
    spdlog::error("model reload failed, serving the models as they were: {}",
                  std::string(next.status().message()));
    if (metrics != nullptr) metrics->RecordReload(false, {});
    return next.status();
  }
  std::shared_ptr<const ModelRegistry> registry = *std::move(next);
  store.Replace(registry);

  std::vector<std::string> failed;
  for (const auto& [name, status] : report.failed) {
    failed.push_back(name);
    const bool kept = std::find(report.kept_previous.begin(), report.kept_previous.end(), name) !=
                      report.kept_previous.end();
    spdlog::error("model {} failed to load{}: {}", name,
                  kept ? "; its previous version goes on serving" : "",
                  std::string(status.message()));
  }
  const bool changed =
      !report.added.empty() || !report.updated.empty() || !report.removed.empty();
  if (changed) {
    spdlog::info("models reloaded: added [{}], updated [{}], removed [{}], unchanged [{}]",
                 absl::StrJoin(report.added, ", "), absl::StrJoin(report.updated, ", "),
                 absl::StrJoin(report.removed, ", "), absl::StrJoin(report.unchanged, ", "));
  } else if (failed.empty()) {
    spdlog::debug("model repository unchanged");
  }
  if (registry->List().empty()) {
    spdlog::warn("no model is served after the reload of {}", repository);
  }
  if (metrics != nullptr) {
    metrics->RecordReload(failed.empty(), failed);
    PublishModels(*registry, *metrics);
  }
  return report;
}

}  // namespace attnserve
