// Reloading the model repository while serving (SIGHUP or --model_poll_seconds): the new
// registry replaces the served one in the ModelStore, with what changed logged and counted.
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_RELOAD_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_RELOAD_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/observability/metrics.h"
#include "server/models/model_registry.h"
#include "server/models/model_store.h"

namespace attnserve {

// Sets attnserve_model_info and attnserve_model_stale to the models `registry` serves.
void PublishModels(const ModelRegistry& registry, ServerMetrics& metrics);

// Reloads `repository` (ModelRegistry::Reload on the store's current registry) and serves the
// result from `store`. Changes and failures are logged (info/error; a reload that changed nothing
// at debug) and recorded in `metrics` (may be null). A repository that cannot be read leaves
// the store as it was. Returns the reload's report, or the error that kept the store unchanged.
absl::StatusOr<ReloadReport> ReloadModels(const std::string& repository, ModelStore& store,
                                          ServerMetrics* metrics);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_RELOAD_H_
