// All Prometheus metric families of the server, registered in a registry passed in.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status_code_enum.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace attnserve {

// gRPC server metrics with the names and labels of go-grpc-prometheus, so existing dashboards
// and alerts apply:
//   grpc_server_started_total{grpc_service, grpc_method, grpc_type}
//   grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code}
//   grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type} (histogram)
// A method the server does not serve (any path a client makes up) is labelled
// grpc_service="unknown", grpc_method="unknown", so clients cannot grow the label sets.
class ServerMetrics {
 public:
  // served_methods: "/package.Service/Method" of every RPC the server registers.
  ServerMetrics(prometheus::Registry& registry, const std::vector<std::string>& served_methods);

  // full_method: "/package.Service/Method". Also counts an AttentionService RPC in flight until
  // RecordFinished (health and reflection streams are not work).
  void RecordStarted(absl::string_view full_method, absl::string_view type);
  // An RPC recorded by RecordStarted is over (whatever its outcome, cancellation included).
  void RecordFinished(absl::string_view full_method);
  // One message received from / sent to the client on an RPC (streams count each message).
  void RecordMessage(absl::string_view full_method, absl::string_view type, bool received);
  // A computation of `rpc` (e.g. "Attend") on `model` (a loaded model, "inline" or "unknown"):
  // seconds waiting for a compute worker and computing.
  void RecordCompute(absl::string_view rpc, absl::string_view model, double queue_seconds,
                     double compute_seconds);
  void RecordHandled(absl::string_view full_method, absl::string_view type, grpc::StatusCode code,
                     double seconds);
  // A computing request of `rpc` on `model` (as in RecordCompute) ended with `code` (its gRPC
  // name: "OK", "INVALID_ARGUMENT", …), `seconds` after it was admitted, whichever door it came
  // through: attnserve_requests_total{rpc, model, code} and attnserve_request_seconds{rpc, model}.
  // The per-model view of traffic (the web console's models page).
  void RecordRequest(absl::string_view rpc, absl::string_view model, absl::string_view code,
                     double seconds);
  // One HTTP request answered: http_requests_total{route, method, code} and
  // http_request_duration_seconds{route, method}. `route` is the route's template (e.g.
  // "/v2/models/{model}/infer", "other"), `method` GET, POST or "other": a bounded label set.
  void RecordHttp(absl::string_view route, absl::string_view method, unsigned code,
                  double seconds);

  // attnserve_build_info{version, onednn_version, cpu_isa} 1; cpu_isa: the instruction set
  // oneDNN dispatches to on this machine (e.g. avx512_core_amx).
  void SetBuildInfo(const std::string& version, const std::string& onednn_version,
                    const std::string& cpu_isa);
  // One served model's labels on attnserve_model_info.
  struct ModelInfo {
    std::string model;
    std::string encoding;
    int64_t heads = 0;
    int64_t kv_heads = 0;
    int64_t head_dim = 0;
    int64_t d_model = 0;
    std::string dtype;  // how its weights were stored (LoadedModel::weights_dtype)
  };
  // attnserve_model_info{model, encoding, heads, kv_heads, head_dim, d_model, dtype} 1 for each
  // model served now, and attnserve_model_stale{model} 1 for those of `stale_models` (served in
  // an earlier version because their current files failed to load). Series of models no longer
  // listed are removed (after the new ones are added, so a scrape never sees none).
  void SetModels(const std::vector<ModelInfo>& models,
                 const std::vector<std::string>& stale_models);
  // A reload of the model repository: attnserve_model_reloads_total{result="ok"} when the
  // repository was read and every changed folder loaded, else result="failed"; and
  // attnserve_model_load_failures_total{model} for each folder that failed to load.
  void RecordReload(bool ok, const std::vector<std::string>& failed_models);
  // A reload of secrets whose files changed: attnserve_secrets_reloads_total{secret="tls" or
  // "tokens", result="ok" or "failed"} (failed: the previous ones stay in use).
  void RecordSecretsReload(absl::string_view secret, bool ok);

  // A batch of `requests` requests holding `tokens` query tokens began computing for `rpc` on
  // `model` (a lone request is a batch of one): attnserve_batch_requests and
  // attnserve_batch_tokens.
  void RecordBatch(absl::string_view rpc, absl::string_view model, int requests, int64_t tokens);
  // Work done by a successful computation: `tokens` query tokens and `flops` useful FLOPs for
  // `rpc` on `model` ("inline" for weight-free RPCs).
  void RecordWork(absl::string_view rpc, absl::string_view model, double tokens, double flops);
  // A request refused before computing; reason: queue_full, deadline, cancelled, draining,
  // kv_cache_budget, memory_budget, read_timeout, unauthenticated, rpc_threads, decode_streams,
  // decode_idle_timeout.
  void RecordRejected(absl::string_view reason);
  // Bytes the unary calls hold of the memory budget (attnserve_request_memory_bytes), and the
  // budget (attnserve_request_memory_budget_bytes).
  void ObserveRequestMemory(int64_t bytes);
  void SetRequestMemoryBudget(int64_t bytes);
  // Open Decode streams and the bytes their K/V caches hold.
  void ObserveDecode(int64_t open_streams, int64_t kv_cache_bytes);

  // The compute pool's state: workers computing and requests waiting for one.
  void ObserveCompute(int busy_workers, int waiting_requests);
  // The compute pool's size: attnserve_compute_workers and attnserve_compute_queue_capacity (so
  // that saturation is waiting / capacity in PromQL).
  void SetComputeCapacity(int workers, int queue_capacity);

  // The grpc_type label of `full_method`: the kind its descriptor declares for a served method
  // (a unary method served through gRPC's generic API looks like a stream to gRPC), else gRPC's
  // view (`seen`).
  absl::string_view RpcType(absl::string_view full_method,
                            grpc::experimental::ServerRpcInfo::Type seen) const;

  // An interceptor factory that records every RPC of the server it is installed in.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateInterceptorFactory();

 private:
  // The labels of full_method: its service and method if served, else "unknown" for both.
  std::map<std::string, std::string> MethodLabels(absl::string_view full_method,
                                                  absl::string_view type) const;

  const std::set<std::string, std::less<>> served_methods_;
  // The kind each served method's descriptor declares (RpcType), read once.
  const std::map<std::string, std::string, std::less<>> served_types_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& msg_received_;
  prometheus::Family<prometheus::Counter>& msg_sent_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Family<prometheus::Histogram>& compute_seconds_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Counter>& http_requests_;
  prometheus::Family<prometheus::Histogram>& http_seconds_;
  prometheus::Family<prometheus::Histogram>& batch_requests_;
  prometheus::Family<prometheus::Histogram>& batch_tokens_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Counter>& flops_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Gauge& decode_streams_;
  prometheus::Gauge& kv_cache_bytes_;
  prometheus::Gauge& request_memory_bytes_;
  prometheus::Gauge& request_memory_budget_bytes_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& model_info_;
  prometheus::Family<prometheus::Gauge>& model_stale_;
  prometheus::Family<prometheus::Counter>& model_reloads_;
  prometheus::Family<prometheus::Counter>& model_load_failures_;
  prometheus::Family<prometheus::Counter>& secrets_reloads_;
  // The series SetModels set last (guarded by models_mutex_).
  std::mutex models_mutex_;
  std::vector<prometheus::Gauge*> model_series_;
  prometheus::Gauge& compute_busy_workers_;
  prometheus::Gauge& compute_waiting_requests_;
  prometheus::Gauge& compute_workers_;
  prometheus::Gauge& compute_queue_capacity_;
  prometheus::Gauge& inflight_;
};

// "OK", "INVALID_ARGUMENT", … as in the grpc_code label.
absl::string_view StatusCodeName(grpc::StatusCode code);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
