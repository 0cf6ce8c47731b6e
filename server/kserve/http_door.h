// The KServe v2 REST door (--http_address): the protocol's routes over the HTTP transport
// (server/http/http_server.h), the caller's bearer token checked before a body is read, and
// inference through the same request path as the gRPC doors (AttentionServiceImpl: admission and
// drain, memory budget, request threads, batching, metrics). docs/kserve.md is the user's view.
//
//   GET  /v2/health/live                 200 {"live":true}
//   GET  /v2/health/ready                200 {"ready":true}; 503 {"ready":false} while draining
//   GET  /v2                             server metadata
//   GET  /v2/models/{m}[/versions/{v}]   model metadata
//   GET  /v2/models/{m}[/versions/{v}]/ready   200 ready; 404 unknown; 503 draining
//   POST /v2/models/{m}[/versions/{v}]/infer   inference: JSON, or JSON + binary tensor data
//
// With the web console on (Options::console_metrics set; docs/console.md):
//   GET  /, /console/{file}              the console's pages and scripts (no token: they hold no
//                                        data)
//   GET  /console/api/models             the models with their configs and states (ConsoleModelsJson)
//   GET  /console/api/metrics            the metrics registry as JSON (MetricsJson)
//
// Errors are {"error": "..."} with the status of their kind (HttpStatusOf).
#ifndef ATTNSERVE_SERVER_KSERVE_HTTP_DOOR_H_
#define ATTNSERVE_SERVER_KSERVE_HTTP_DOOR_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "prometheus/collectable.h"
#include "server/http/http_server.h"
#include "server/models/model_store.h"
#include "server/observability/access_log.h"
#include "server/observability/metrics.h"
#include "server/rpc/attention_service.h"
#include "server/rpc/secrets.h"

namespace attnserve {

// The HTTP status of a failed request's status code: 400 for bad input, 404 not found, 429
// RESOURCE_EXHAUSTED (retry later), 503 UNAVAILABLE (draining), 401/403 for credentials, 504
// DEADLINE_EXCEEDED, 499 CANCELLED, 500 otherwise.
unsigned HttpStatusOf(absl::StatusCode code);

class HttpDoor {
 public:
  struct Options {
    std::string server_version;
    ServerMetrics* metrics = nullptr;   // http_requests_total, …; null: none
    AccessLog* access_log = nullptr;    // a line per request; null: none
    // The registry the console's metrics route reads; null: no web console.
    const prometheus::Collectable* console_metrics = nullptr;
  };
  // Everything must outlive the door.
  HttpDoor(AttentionServiceImpl* service, const ModelStore* models, const Secrets* secrets,
           Options options);

  // The HttpServer handler: answers at once, or reads the body and computes on a request thread.
  void Handle(std::shared_ptr<HttpExchange> exchange);
  // HttpServer's `refused`: an answer the transport gave itself, measured and logged.
  void Refused(const HttpExchange& exchange, unsigned code) const;

 private:
  class InferCall;

  // What one request's answer is measured and logged with.
  struct Answering {
    std::string route;       // the route's template: "/v2/models/{model}/infer", …, "other"
    std::string request_id;  // the client's x-request-id; "" when it sent none
    std::string model;       // the model the path names, if any
    std::chrono::steady_clock::time_point start;
  };
  // What a request's answer will be measured and logged with, its clock started now.
  Answering StartAnswering(const HttpRequestHead& head) const;
  // Sends `response` (the client's x-request-id echoed), counts it in the HTTP metrics and
  // writes its access line.
  void Answer(HttpExchange& exchange, const Answering& answering, HttpResponse response) const;
  // Counts a request's outcome in the HTTP metrics and writes its access line.
  void Record(const HttpExchange& exchange, const Answering& answering, unsigned code) const;
  // The console's JSON route `path` (after the token check); NOT_FOUND for another path.
  absl::StatusOr<std::string> ConsoleApi(absl::string_view path) const;
  // The metrics route's JSON, collected again only when the last one is older than
  // kMetricsRefreshInterval: it is answered on an I/O thread, so whatever the request rate the
  // registry is collected at most a few times a second.
  std::string MetricsJsonAtMostEvery() const;

  AttentionServiceImpl* const service_;
  const ModelStore* const models_;
  const Secrets* const secrets_;
  const Options options_;
  // The metrics route's last answer and when it was collected (MetricsJsonAtMostEvery).
  mutable std::mutex metrics_mutex_;
  mutable std::chrono::steady_clock::time_point metrics_collected_;  // guarded by metrics_mutex_
  mutable std::string metrics_json_;                                 // guarded by metrics_mutex_
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_HTTP_DOOR_H_
