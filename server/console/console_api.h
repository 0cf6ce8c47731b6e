// The JSON the web console's pages read (GET /console/api/models and /console/api/metrics on the
// HTTP door), made from the server's own state: the models snapshot and the Prometheus registry.
// Transport-free: the HTTP door (server/kserve/http_door.h) serves them.
#ifndef ATTNSERVE_SERVER_CONSOLE_CONSOLE_API_H_
#define ATTNSERVE_SERVER_CONSOLE_CONSOLE_API_H_

#include <string>
#include <vector>

#include "prometheus/metric_family.h"
#include "server/models/model_registry.h"

namespace attnserve {

// {"server": {"version", "draining"},
//  "models": [{"name", "state", "reason", "config"}]}, sorted by name. state: "loaded";
// "stale" (served in an earlier version because its current files failed to load; reason says
// why); "failed" (a repository folder that never loaded: reason, and no config). config is the
// model's ModelConfig as proto3 JSON with the proto's field names, every field present.
std::string ConsoleModelsJson(const ModelRegistry& models, const std::string& server_version,
                              bool draining);

// {"time_seconds": <Unix time>, "monotonic_seconds": <a steady clock's reading, for differences>,
//  "families": [{"name", "help", "type", "samples": [...]}]}, the registry's families as
// collected (a family with no series yet is left out). A sample is {"labels": {…}, "value"} for a counter, gauge or
// untyped metric; {"labels", "count", "sum", "buckets": [{"le", "count"}]} for a histogram, its
// counts cumulative as in the exposition format and the last le null (+Inf); {"labels", "count",
// "sum", "quantiles": [{"quantile", "value"}]} for a summary. Non-finite values are null.
std::string MetricsJson(const std::vector<prometheus::MetricFamily>& families,
                        double time_seconds, double monotonic_seconds);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_CONSOLE_CONSOLE_API_H_
