#include "server/observability/metrics.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "server/rpc/tsan_hand_off.h"

namespace attnserve {
namespace {

// Upper bounds in seconds: 100 µs to 10 s, the span of attention requests from one token to
// long sequences.
const prometheus::Histogram::BucketBoundaries& HandlingBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0};
  return *buckets;
}

// Requests per batch: 1 to 256, powers of two.
const prometheus::Histogram::BucketBoundaries& BatchRequestBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *buckets;
}

// Query tokens per batch: 1 to 64 Ki, powers of four.
const prometheus::Histogram::BucketBoundaries& BatchTokenBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 4, 16, 64, 256, 1024, 4096, 16384, 65536};
  return *buckets;
}

absl::string_view RpcTypeName(grpc::experimental::ServerRpcInfo::Type type) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  switch (type) {
    case Type::UNARY:
      return "unary";
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

// The kind of `full_method` ("/package.Service/Method") as its protobuf descriptor declares it;
// empty when the generated descriptors do not have it.
std::string DeclaredRpcType(absl::string_view full_method) {
  const size_t slash = full_method.rfind('/');
  if (full_method.size() < 2 || full_method[0] != '/' || slash == 0) return "";
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(full_method.substr(1, slash - 1)));
  const google::protobuf::MethodDescriptor* method =
      service == nullptr ? nullptr
                         : service->FindMethodByName(std::string(full_method.substr(slash + 1)));
  if (method == nullptr) return "";
  using Type = grpc::experimental::ServerRpcInfo::Type;
  if (method->client_streaming()) {
    return std::string(
        RpcTypeName(method->server_streaming() ? Type::BIDI_STREAMING : Type::CLIENT_STREAMING));
  }
  return std::string(RpcTypeName(method->server_streaming() ? Type::SERVER_STREAMING : Type::UNARY));
}

// One per RPC: counts the start when created, the outcome and duration when the status is sent.
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerMetrics* metrics, grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics),
        method_(info->method() != nullptr ? info->method() : ""),
        type_(metrics->RpcType(method_, info->type())),
        start_(std::chrono::steady_clock::now()) {
    metrics_->RecordStarted(method_, type_);
    tsan_hand_off::Release(this);
  }
  // gRPC destroys the interceptors when the RPC is over, however it ended.
  ~MetricsInterceptor() override {
    tsan_hand_off::Acquire(this);
    metrics_->RecordFinished(method_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    // gRPC runs one call's hooks one after another, on whichever thread moves the call on.
    tsan_hand_off::Acquire(this);
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE)) {
      metrics_->RecordMessage(method_, type_, /*received=*/true);
    }
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      metrics_->RecordMessage(method_, type_, /*received=*/false);
    }
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
      metrics_->RecordHandled(method_, type_, methods->GetSendStatus().error_code(),
                              elapsed.count());
    }
    tsan_hand_off::Release(this);
    methods->Proceed();
  }

 private:
  ServerMetrics* metrics_;
  std::string method_;
  absl::string_view type_;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(ServerMetrics* metrics) : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info);
  }

 private:
  ServerMetrics* metrics_;
};

}  // namespace

absl::string_view ServerMetrics::RpcType(absl::string_view full_method,
                                         grpc::experimental::ServerRpcInfo::Type seen) const {
  const auto it = served_types_.find(full_method);
  return it != served_types_.end() ? absl::string_view(it->second) : RpcTypeName(seen);
}

absl::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

ServerMetrics::ServerMetrics(prometheus::Registry& registry,
                             const std::vector<std::string>& served_methods)
    : served_methods_(served_methods.begin(), served_methods.end()),
      served_types_([&served_methods] {
        std::map<std::string, std::string, std::less<>> types;
        for (const std::string& method : served_methods) {
          if (std::string type = DeclaredRpcType(method); !type.empty()) types[method] = type;
        }
        return types;
      }()),
      started_(prometheus::BuildCounter()
                   .Name("grpc_server_started_total")
                   .Help("RPCs started on the server.")
                   .Register(registry)),
      handled_(prometheus::BuildCounter()
                   .Name("grpc_server_handled_total")
                   .Help("RPCs completed on the server, by status code.")
                   .Register(registry)),
      msg_received_(prometheus::BuildCounter()
                        .Name("grpc_server_msg_received_total")
                        .Help("Messages received from clients, by RPC.")
                        .Register(registry)),
      msg_sent_(prometheus::BuildCounter()
                    .Name("grpc_server_msg_sent_total")
                    .Help("Messages sent to clients, by RPC.")
                    .Register(registry)),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("attnserve_queue_wait_seconds")
                         .Help("Time a computation waited for a compute worker, in seconds.")
                         .Register(registry)),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("attnserve_compute_seconds")
                           .Help("Time a computation ran on a compute worker, in seconds.")
                           .Register(registry)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("grpc_server_handling_seconds")
                            .Help("Time from the start of an RPC to its status being sent, in "
                                  "seconds.")
                            .Register(registry)),
      requests_(prometheus::BuildCounter()
                    .Name("attnserve_requests_total")
                    .Help("Computing requests (Encode, Attend, ScaledDotProductAttention, "
                          "PositionBias, KServe v2 inference) by RPC, model and status code, "
                          "from either door.")
                    .Register(registry)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("attnserve_request_seconds")
                           .Help("Time from a computing request's admission to its result, in "
                                 "seconds, by RPC and model.")
                           .Register(registry)),
      http_requests_(prometheus::BuildCounter()
                         .Name("http_requests_total")
                         .Help("HTTP requests answered (the KServe v2 REST door), by route "
                               "template, method and status code.")
                         .Register(registry)),
      http_seconds_(prometheus::BuildHistogram()
                        .Name("http_request_duration_seconds")
                        .Help("Time from an HTTP request's header to its answer, in seconds.")
                        .Register(registry)),
      batch_requests_(prometheus::BuildHistogram()
                          .Name("attnserve_batch_requests")
                          .Help("Requests computed together in one batch (1: alone), by RPC "
                                "and model.")
                          .Register(registry)),
      batch_tokens_(prometheus::BuildHistogram()
                        .Name("attnserve_batch_tokens")
                        .Help("Query tokens computed together in one batch, by RPC and model.")
                        .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("attnserve_tokens_total")
                  .Help("Query tokens processed by successful computations, by RPC and model.")
                  .Register(registry)),
      flops_(prometheus::BuildCounter()
                 .Name("attnserve_flops_total")
                 .Help("Useful floating-point operations of successful computations.")
                 .Register(registry)),
      rejected_(prometheus::BuildCounter()
                    .Name("attnserve_rejected_requests_total")
                    .Help("Requests refused before computing, by reason.")
                    .Register(registry)),
      decode_streams_(prometheus::BuildGauge()
                          .Name("attnserve_decode_streams")
                          .Help("Open Decode streams.")
                          .Register(registry)
                          .Add({})),
      kv_cache_bytes_(prometheus::BuildGauge()
                          .Name("attnserve_kv_cache_bytes")
                          .Help("Bytes held by the Decode streams' K/V caches.")
                          .Register(registry)
                          .Add({})),
      request_memory_bytes_(prometheus::BuildGauge()
                                .Name("attnserve_request_memory_bytes")
                                .Help("Bytes the unary calls being served hold of the memory "
                                      "budget (requests, computations, answers; estimated "
                                      "from above).")
                                .Register(registry)
                                .Add({})),
      request_memory_budget_bytes_(prometheus::BuildGauge()
                                       .Name("attnserve_request_memory_budget_bytes")
                                       .Help("The memory budget of the unary calls "
                                             "(--max_request_memory_bytes).")
                                       .Register(registry)
                                       .Add({})),
      build_info_(prometheus::BuildGauge()
                      .Name("attnserve_build_info")
                      .Help("Build of the server: value 1, labelled with versions.")
                      .Register(registry)),
      model_info_(prometheus::BuildGauge()
                      .Name("attnserve_model_info")
                      .Help("Loaded models: value 1, labelled with their shape and encoding.")
                      .Register(registry)),
      model_stale_(prometheus::BuildGauge()
                       .Name("attnserve_model_stale")
                       .Help("1 for a model served in an earlier version because its current "
                             "files failed to load.")
                       .Register(registry)),
      model_reloads_(prometheus::BuildCounter()
                         .Name("attnserve_model_reloads_total")
                         .Help("Reloads of the model repository, by result (ok, or failed when "
                               "the repository or a changed model could not be loaded).")
                         .Register(registry)),
      model_load_failures_(prometheus::BuildCounter()
                               .Name("attnserve_model_load_failures_total")
                               .Help("Model folders whose files failed to load at a reload "
                                     "(once per version of the files).")
                               .Register(registry)),
      secrets_reloads_(prometheus::BuildCounter()
                           .Name("attnserve_secrets_reloads_total")
                           .Help("Reloads of changed secret files, by secret (tls, tokens) and "
                                 "result (ok, or failed: the previous ones stay in use; once per "
                                 "version of the files).")
                           .Register(registry)),
      compute_busy_workers_(prometheus::BuildGauge()
                                .Name("attnserve_compute_busy_workers")
                                .Help("Compute workers running a computation now.")
                                .Register(registry)
                                .Add({})),
      compute_waiting_requests_(prometheus::BuildGauge()
                                    .Name("attnserve_compute_waiting_requests")
                                    .Help("Requests waiting for a compute worker now.")
                                    .Register(registry)
                                    .Add({})),
      compute_workers_(prometheus::BuildGauge()
                           .Name("attnserve_compute_workers")
                           .Help("Compute workers of the server (--compute_workers).")
                           .Register(registry)
                           .Add({})),
      compute_queue_capacity_(prometheus::BuildGauge()
                                  .Name("attnserve_compute_queue_capacity")
                                  .Help("Requests that may wait for a compute worker "
                                        "(--compute_queue_depth).")
                                  .Register(registry)
                                  .Add({})),
      inflight_(prometheus::BuildGauge()
                    .Name("attnserve_inflight_requests")
                    .Help("RPCs started and not yet finished (streams count once).")
                    .Register(registry)
                    .Add({})) {}

void ServerMetrics::SetBuildInfo(const std::string& version, const std::string& onednn_version,
                                 const std::string& cpu_isa) {
  build_info_.Add({{"version", version}, {"onednn_version", onednn_version}, {"cpu_isa", cpu_isa}})
      .Set(1);
}

void ServerMetrics::SetModels(const std::vector<ModelInfo>& models,
                              const std::vector<std::string>& stale_models) {
  std::lock_guard<std::mutex> lock(models_mutex_);
  std::vector<prometheus::Gauge*> series;
  for (const ModelInfo& info : models) {
    prometheus::Gauge& gauge = model_info_.Add({{"model", info.model},
                                                {"encoding", info.encoding},
                                                {"heads", std::to_string(info.heads)},
                                                {"kv_heads", std::to_string(info.kv_heads)},
                                                {"head_dim", std::to_string(info.head_dim)},
                                                {"d_model", std::to_string(info.d_model)},
                                                {"dtype", info.dtype}});
    gauge.Set(1);
    series.push_back(&gauge);
  }
  for (const std::string& model : stale_models) {
    prometheus::Gauge& gauge = model_stale_.Add({{"model", model}});
    gauge.Set(1);
    series.push_back(&gauge);
  }
  for (prometheus::Gauge* old : model_series_) {
    if (std::find(series.begin(), series.end(), old) != series.end()) continue;
    // Each series belongs to one of the two families; Remove ignores the other one's.
    model_info_.Remove(old);
    model_stale_.Remove(old);
  }
  model_series_ = std::move(series);
}

void ServerMetrics::RecordReload(bool ok, const std::vector<std::string>& failed_models) {
  model_reloads_.Add({{"result", ok ? "ok" : "failed"}}).Increment();
  for (const std::string& model : failed_models) {
    model_load_failures_.Add({{"model", model}}).Increment();
  }
}

void ServerMetrics::RecordSecretsReload(absl::string_view secret, bool ok) {
  secrets_reloads_.Add({{"secret", std::string(secret)}, {"result", ok ? "ok" : "failed"}})
      .Increment();
}

void ServerMetrics::RecordWork(absl::string_view rpc, absl::string_view model, double tokens,
                               double flops) {
  const std::map<std::string, std::string> labels = {{"rpc", std::string(rpc)},
                                                     {"model", std::string(model)}};
  tokens_.Add(labels).Increment(tokens);
  flops_.Add(labels).Increment(flops);
}

void ServerMetrics::RecordRejected(absl::string_view reason) {
  rejected_.Add({{"reason", std::string(reason)}}).Increment();
}

void ServerMetrics::ObserveRequestMemory(int64_t bytes) {
  request_memory_bytes_.Set(static_cast<double>(bytes));
}

void ServerMetrics::SetRequestMemoryBudget(int64_t bytes) {
  request_memory_budget_bytes_.Set(static_cast<double>(bytes));
}

void ServerMetrics::ObserveDecode(int64_t open_streams, int64_t kv_cache_bytes) {
  decode_streams_.Set(static_cast<double>(open_streams));
  kv_cache_bytes_.Set(static_cast<double>(kv_cache_bytes));
}

void ServerMetrics::ObserveCompute(int busy_workers, int waiting_requests) {
  compute_busy_workers_.Set(busy_workers);
  compute_waiting_requests_.Set(waiting_requests);
}

void ServerMetrics::SetComputeCapacity(int workers, int queue_capacity) {
  compute_workers_.Set(workers);
  compute_queue_capacity_.Set(queue_capacity);
}

std::map<std::string, std::string> ServerMetrics::MethodLabels(absl::string_view full_method,
                                                               absl::string_view type) const {
  std::pair<absl::string_view, absl::string_view> parts("unknown", "unknown");
  if (served_methods_.find(full_method) != served_methods_.end()) {
    // "/attnserve.v1.AttentionService/Encode" → service, method.
    parts = absl::StrSplit(absl::StripPrefix(full_method, "/"), absl::MaxSplits('/', 1));
  }
  return {{"grpc_service", std::string(parts.first)},
          {"grpc_method", std::string(parts.second)},
          {"grpc_type", std::string(type)}};
}

namespace {
// In flight counts the unary work RPCs: long-lived streams — health Watch (client-side health
// checking), Decode (an open stream idles between its steps; attnserve_decode_streams counts
// them) — would otherwise hold the gauge up and skew autoscaling on it.
bool CountsInFlight(absl::string_view full_method) {
  return absl::StartsWith(full_method, "/attnserve.v1.AttentionService/") &&
         full_method != "/attnserve.v1.AttentionService/Decode";
}
}  // namespace

void ServerMetrics::RecordStarted(absl::string_view full_method, absl::string_view type) {
  started_.Add(MethodLabels(full_method, type)).Increment();
  if (CountsInFlight(full_method)) inflight_.Increment();
}

void ServerMetrics::RecordFinished(absl::string_view full_method) {
  if (CountsInFlight(full_method)) inflight_.Decrement();
}

void ServerMetrics::RecordMessage(absl::string_view full_method, absl::string_view type,
                                  bool received) {
  (received ? msg_received_ : msg_sent_).Add(MethodLabels(full_method, type)).Increment();
}

void ServerMetrics::RecordCompute(absl::string_view rpc, absl::string_view model,
                                  double queue_seconds, double compute_seconds) {
  const std::map<std::string, std::string> labels = {{"rpc", std::string(rpc)},
                                                     {"model", std::string(model)}};
  queue_seconds_.Add(labels, HandlingBuckets()).Observe(queue_seconds);
  compute_seconds_.Add(labels, HandlingBuckets()).Observe(compute_seconds);
}

void ServerMetrics::RecordRequest(absl::string_view rpc, absl::string_view model,
                                  absl::string_view code, double seconds) {
  std::map<std::string, std::string> labels = {{"rpc", std::string(rpc)},
                                               {"model", std::string(model)}};
  request_seconds_.Add(labels, HandlingBuckets()).Observe(seconds);
  labels.emplace("code", std::string(code));
  requests_.Add(labels).Increment();
}

void ServerMetrics::RecordBatch(absl::string_view rpc, absl::string_view model, int requests,
                                int64_t tokens) {
  const std::map<std::string, std::string> labels = {{"rpc", std::string(rpc)},
                                                     {"model", std::string(model)}};
  batch_requests_.Add(labels, BatchRequestBuckets()).Observe(requests);
  batch_tokens_.Add(labels, BatchTokenBuckets()).Observe(static_cast<double>(tokens));
}

void ServerMetrics::RecordHandled(absl::string_view full_method, absl::string_view type,
                                  grpc::StatusCode code, double seconds) {
  std::map<std::string, std::string> labels = MethodLabels(full_method, type);
  handling_seconds_.Add(labels, HandlingBuckets()).Observe(seconds);
  labels.emplace("grpc_code", std::string(StatusCodeName(code)));
  handled_.Add(labels).Increment();
}

void ServerMetrics::RecordHttp(absl::string_view route, absl::string_view method, unsigned code,
                               double seconds) {
  const std::map<std::string, std::string> labels = {{"route", std::string(route)},
                                                     {"method", std::string(method)}};
  http_seconds_.Add(labels, HandlingBuckets()).Observe(seconds);
  std::map<std::string, std::string> counted = labels;
  counted.emplace("code", std::to_string(code));
  http_requests_.Add(counted).Increment();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::CreateInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

}  // namespace attnserve
