#include "server/app/server_runner.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/kernels/onednn_ops.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/resource_quota.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/app/memory_limit.h"
#include "server/http/http_server.h"
#include "server/kserve/grpc_inference_service.h"
#include "server/kserve/http_door.h"
#include "server/models/model_registry.h"
#include "server/models/model_reload.h"
#include "server/models/model_store.h"
#include "server/observability/metrics.h"
#include "server/observability/process_metrics.h"
#include "server/rpc/attention_service.h"
#include "server/rpc/caller_credentials.h"
#include "server/rpc/secrets.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace attnserve {
namespace {

constexpr char kServiceName[] = "attnserve.v1.AttentionService";

constexpr char kInferenceServiceName[] = "inference.GRPCInferenceService";

// "/package.Service/Method" of every RPC the server registers: AttentionService and the KServe v2
// GRPCInferenceService (from their generated descriptors), the health service and server
// reflection. Metrics label anything else "unknown".
std::vector<std::string> ServedMethods() {
  std::vector<std::string> methods = {
      "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};
  for (const char* name : {kServiceName, kInferenceServiceName}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    for (int i = 0; i < service->method_count(); ++i) {
      methods.push_back(absl::StrCat("/", name, "/", service->method(i)->name()));
    }
  }
  return methods;
}

// Removes server reflection from a ServerBuilder (linking grpc++_reflection adds its plugin to
// every builder).
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
                                    return plugin->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

// "0.0.0.0:0" with bound port 1234 → "0.0.0.0:1234".
std::string WithPort(const std::string& address, int port) {
  return absl::StrCat(address.substr(0, address.rfind(':')), ":", port);
}

// Waits for one of `signals` (blocked in every thread) for at most `timeout_seconds` (forever when
// <= 0); the signal's number, or 0 when the time ran out.
int WaitForSignal(const sigset_t& signals, double timeout_seconds) {
  while (true) {
    if (timeout_seconds <= 0) {
      int signal_number = 0;
      if (sigwait(&signals, &signal_number) == 0) return signal_number;
      continue;
    }
    double whole = 0;
    const double fraction = std::modf(timeout_seconds, &whole);
    const timespec timeout{static_cast<time_t>(std::min(whole, 1e9)),
                           static_cast<long>(fraction * 1e9)};
    const int signal_number = sigtimedwait(&signals, nullptr, &timeout);
    if (signal_number > 0) return signal_number;
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) {  // EINTR: interrupted by a signal outside the set; wait again
      spdlog::error("sigtimedwait failed ({}); the repository is no longer polled",
                    std::strerror(errno));
      timeout_seconds = 0;
    }
  }
}

// The options' own ranges, and the compute threads each worker gets (OpenMP).
absl::Status CheckOptionsAndSetThreads(const ServerOptions& options) {
  const int workers = options.limits.compute_workers;
  const int queue_depth = options.limits.compute_queue_depth;
  if (const double flops = options.limits.max_request_flops; !(flops > 0 && flops < 1e300)) {
    return absl::InvalidArgumentError(
        fmt::format("--max_request_flops={} must be a positive number", flops));
  }
  if (workers < 1 || queue_depth < 0 || options.compute_threads < 0 ||
      options.limits.rpc_threads < 0 || options.limits.max_decode_streams < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--compute_workers=", workers, " must be >= 1, --compute_queue_depth=", queue_depth,
        " >= 0, --compute_threads=", options.compute_threads, " >= 0, --rpc_threads=",
        options.limits.rpc_threads, " >= 0 and --max_decode_streams=",
        options.limits.max_decode_streams, " >= 1"));
  }
  const BatchLimits& batching = options.limits.batching;
  // An hour bounds the waits far below any overflow of the clock arithmetic.
  constexpr int64_t kMaxBatchWaitMicros = int64_t{3600} * 1000 * 1000;
  const auto wait_in_range = [](std::chrono::microseconds wait) {
    return wait.count() >= 0 && wait.count() <= kMaxBatchWaitMicros;
  };
  if (batching.max_requests < 1 || batching.max_tokens < 0 || !wait_in_range(batching.timeout) ||
      !wait_in_range(batching.step_wait)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_batch_requests=", batching.max_requests, " must be >= 1, --max_batch_tokens=",
        batching.max_tokens, " >= 0, and --batch_timeout_micros=", batching.timeout.count(),
        " and --decode_step_wait_micros=", batching.step_wait.count(), " in [0, ",
        kMaxBatchWaitMicros, "]"));
  }
  // Polls closer than this would reread every config.pbtxt (or secret file) back to back.
  constexpr double kMinPollSeconds = 0.1;
  if (const double poll = options.model_poll_seconds;
      !(poll == 0 || (poll >= kMinPollSeconds && poll <= 1e9))) {
    // fmt, as the log always printed it: the shortest form that reads back as the same double.
    return absl::InvalidArgumentError(
        fmt::format("--model_poll_seconds={} must be 0 (reload on SIGHUP only) or in [{}, 1e9]",
                    poll, kMinPollSeconds));
  }
  if (const double poll = options.secrets_poll_seconds;
      !(poll == 0 || (poll >= kMinPollSeconds && poll <= 1e9))) {
    return absl::InvalidArgumentError(
        fmt::format("--secrets_poll_seconds={} must be 0 (reload on SIGHUP only) or in [{}, 1e9]",
                    poll, kMinPollSeconds));
  }
  if (options.limits.max_request_memory_bytes < 0 || options.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_request_memory_bytes=", options.limits.max_request_memory_bytes,
        " must be >= 0 (0: sized from the memory) and --max_concurrent_streams=",
        options.max_concurrent_streams, " >= 1"));
  }
  for (const auto& [flag, seconds] :
       {std::pair<const char*, double>{"keepalive_time_seconds", options.keepalive_time_seconds},
        {"keepalive_timeout_seconds", options.keepalive_timeout_seconds},
        {"keepalive_min_client_interval_seconds", options.keepalive_min_client_interval_seconds}}) {
    if (!(seconds > 0 && seconds <= 1e6)) {
      return absl::InvalidArgumentError(
          fmt::format("--{}={} must be in (0, 1e6]", flag, seconds));
    }
  }
  SetComputeThreads(options.compute_threads);
  return absl::OkStatus();
}

// The options with the memory budget sized (when 0: half) from the container's or machine's memory;
// logged either way.
ServerOptions WithMemoryBudget(ServerOptions options) {
  int64_t& budget = options.limits.max_request_memory_bytes;
  constexpr double kMiB = 1 << 20;
  if (budget == 0) {
    const MemoryLimit limit = DetectMemoryLimit();
    budget = limit.bytes / 2;
    spdlog::info("memory budget of calls: {:.0f} MiB, half of {} ({:.0f} MiB)",
                 budget / kMiB, limit.source, limit.bytes / kMiB);
  } else {
    spdlog::info("memory budget of calls: {:.0f} MiB (--max_request_memory_bytes)",
                 budget / kMiB);
  }
  return options;
}

// The repository's models (or the demo models), at least one; failures logged.
absl::StatusOr<std::unique_ptr<ModelRegistry>> LoadModels(const std::string& repository) {
  absl::StatusOr<std::unique_ptr<ModelRegistry>> models =
      repository.empty() ? ModelRegistry::CreateWithDemoModels()
                         : ModelRegistry::CreateFromRepository(repository);
  if (!models.ok()) {
    return absl::Status(models.status().code(),
                        absl::StrCat("loading models failed: ", models.status().ToString()));
  }
  for (const auto& [name, status] : (*models)->failures()) {
    spdlog::error("model {} not loaded: {}", name, std::string(status.message()));
  }
  if ((*models)->List().empty()) {
    return absl::NotFoundError(
        absl::StrCat("no model loaded from --model_repository=", repository));
  }
  for (const LoadedModel* model : (*models)->List()) {
    spdlog::info("loaded model {}: {}", model->config.name(), model->config.description());
  }
  return models;
}

// The Prometheus endpoint and the metric families it serves (the exposer holds its collectables
// weakly: they live here).
struct MetricsEndpoint {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  ServerMetrics metrics{*registry, ServedMethods()};
  std::shared_ptr<ProcessMetrics> process_metrics = std::make_shared<ProcessMetrics>();
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string address;
};

// The metrics endpoint has no authentication: it stays on loopback when the gRPC port is
// restricted, unless an address is given.
absl::StatusOr<std::unique_ptr<MetricsEndpoint>> StartMetricsEndpoint(
    const ServerOptions& options, bool restricted, const ModelRegistry& models) {
  auto endpoint = std::make_unique<MetricsEndpoint>();
  endpoint->address = options.metrics_address;
  if (endpoint->address.empty()) {
    endpoint->address = restricted ? "127.0.0.1:9464" : "0.0.0.0:9464";
  }
  try {
    endpoint->exposer = std::make_unique<prometheus::Exposer>(endpoint->address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", endpoint->address, ": ", e.what()));
  }
  endpoint->exposer->RegisterCollectable(endpoint->registry);
  endpoint->metrics.SetComputeCapacity(options.limits.compute_workers,
                                       options.limits.compute_queue_depth);
  endpoint->metrics.SetBuildInfo(options.version, OneDnnVersion(), OneDnnCpuIsa());
  endpoint->metrics.SetRequestMemoryBudget(options.limits.max_request_memory_bytes);
  PublishModels(models, endpoint->metrics);
  endpoint->exposer->RegisterCollectable(endpoint->process_metrics);
  return endpoint;
}

// Milliseconds as an int channel argument: at most INT_MAX (24.8 days).
int ChannelMilliseconds(double seconds) {
  return static_cast<int>(std::clamp(seconds * 1000, 0.0, double{INT_MAX}));
}

// The transport's bounds (message sizes, the memory quota of its buffers, streams per
// connection, keepalive), connection age and interceptors (metrics, request id echo, access log)
// of the gRPC server.
void ConfigureTransport(const ServerOptions& options, ServerMetrics& metrics,
                        AccessLog* access_log, grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.limits.max_response_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.limits.max_response_bytes));
  // Messages still arriving live in gRPC's buffers until they are parsed and reach the service
  // (and its MemoryBudget): under this quota gRPC reads less and cancels streams.
  grpc::ResourceQuota quota("attnserve-transport");
  quota.Resize(static_cast<size_t>(options.limits.max_request_memory_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // Each stream's window stays at HTTP/2's 64 KiB until its message is read (gRPC then opens it
  // to the message's size): with the bandwidth-delay probe, gRPC widened every stream's window,
  // and calls not yet read, or refused unread, held megabytes each in its buffers (a flood of 16
  // clients peaked at 3.7 times the budget; docs/reliability.md "Memory").
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             ChannelMilliseconds(options.keepalive_time_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             ChannelMilliseconds(options.keepalive_timeout_seconds));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             ChannelMilliseconds(options.keepalive_min_client_interval_seconds));
  // Clients may ping between calls (a pool of idle connections), no more often than the above.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  if (const double age = options.max_connection_age_seconds; age > 0) {
    // gRPC adds ±10% jitter, so the replicas' clients do not all reconnect at once.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ChannelMilliseconds(age));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               ChannelMilliseconds(options.max_connection_age_grace_seconds));
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics.CreateInterceptorFactory());
  interceptors.push_back(CreateRequestIdEchoFactory());
  if (access_log != nullptr) interceptors.push_back(CreateAccessLogFactory(access_log));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
}

// The services' health SERVING on `server` (the server's as a whole is by default).
void SetServing(grpc::Server& server) {
  for (const char* name : {kServiceName, kInferenceServiceName}) {
    server.GetHealthCheckService()->SetServingStatus(name, true);
  }
}

// The gRPC server with the service, health and reflection, callers checked by `secrets`;
// `port` receives the bound port.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(const ServerOptions& options,
                                                              const Secrets& secrets,
                                                              ServerMetrics& metrics,
                                                              AttentionServiceImpl& service,
                                                              GrpcInferenceService& inference,
                                                              AccessLog* access_log, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      options.grpc_address,
      CreateCallerCredentials(&secrets, [&metrics] { metrics.RecordRejected("unauthenticated"); }),
      port);
  builder.RegisterService(&service);
  builder.RegisterService(&inference);
  builder.RegisterCallbackGenericService(service.unary_calls());
  ConfigureTransport(options, metrics, access_log, builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", options.grpc_address));
  }
  SetServing(*server);
  return server;
}

// The next time a task repeated every `period_seconds` (0: never) is due.
std::chrono::steady_clock::time_point NextDue(double period_seconds) {
  if (period_seconds <= 0) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(period_seconds));
}

// The plaintext health port (--health_address): grpc.health.v1 only. gRPC adds its health
// service only beside some other service, so a generic one answers every other method
// UNIMPLEMENTED.
struct HealthEndpoint {
  grpc::CallbackGenericService unimplemented;
  std::unique_ptr<grpc::Server> server;
};

absl::StatusOr<std::unique_ptr<HealthEndpoint>> StartHealthEndpoint(const ServerOptions& options,
                                                                    int* port) {
  auto endpoint = std::make_unique<HealthEndpoint>();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.health_address, grpc::InsecureServerCredentials(), port);
  builder.RegisterCallbackGenericService(&endpoint->unimplemented);
  builder.SetOption(std::make_unique<WithoutReflection>());
  endpoint->server = builder.BuildAndStart();
  if (endpoint->server == nullptr || *port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for health checks on ", options.health_address));
  }
  SetServing(*endpoint->server);
  return endpoint;
}

// Serves until SIGTERM or SIGINT (returned). SIGHUP reloads the model repository and the
// secrets; besides, the repository is read again every model_poll_seconds and the secrets every
// secrets_poll_seconds (each: 0 = on SIGHUP only).
int ServeUntilStopSignal(const ServerOptions& options, const sigset_t& signals,
                         ModelStore& model_store, Secrets& secrets, ServerMetrics& metrics) {
  using Clock = std::chrono::steady_clock;
  const std::string& repository = options.model_repository;
  const double model_poll = repository.empty() ? 0 : options.model_poll_seconds;
  Clock::time_point models_due = NextDue(model_poll);
  Clock::time_point secrets_due = NextDue(options.secrets_poll_seconds);
  while (true) {
    const Clock::time_point due = std::min(models_due, secrets_due);
    // WaitForSignal waits forever for a timeout <= 0; a task already due waits a millisecond.
    const double timeout = due == Clock::time_point::max()
                               ? 0
                               : std::max(1e-3, std::chrono::duration<double>(due - Clock::now()).count());
    const int signal_number = WaitForSignal(signals, timeout);
    if (signal_number != 0 && signal_number != SIGHUP) return signal_number;
    const bool hangup = signal_number == SIGHUP;
    if (hangup || Clock::now() >= secrets_due) {
      secrets.Reload();  // refusals are logged and counted there; the secrets in use stay
      secrets_due = NextDue(options.secrets_poll_seconds);
    }
    if (!hangup && Clock::now() < models_due) continue;
    models_due = NextDue(model_poll);
    if (repository.empty()) {
      spdlog::info("SIGHUP: serving the built-in demo models, nothing to reload");
      continue;
    }
    if (hangup) spdlog::info("SIGHUP: reloading {}", repository);
    // Errors are logged and counted there; the served models stay as they were.
    ReloadModels(repository, model_store, &metrics).IgnoreError();
  }
}

// Health turns NOT_SERVING (on the health port too, when there is one) and new requests are
// answered UNAVAILABLE while the running ones finish (at most the grace period); then the ports
// close and anything left is cancelled.
void Drain(const ServerOptions& options, grpc::Server& server, AttentionServiceImpl& service,
           HealthEndpoint* health, HttpServer* http) {
  server.GetHealthCheckService()->Shutdown();
  if (health != nullptr) health->server->GetHealthCheckService()->Shutdown();
  service.StartDraining();
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(options.shutdown_grace_seconds));
  const auto grace_end = std::chrono::system_clock::now() + grace;
  if (!service.WaitUntilIdle(grace_end)) {
    spdlog::warn("requests still running after {} s; cancelling them",
                 options.shutdown_grace_seconds);
  }
  // Handlers have returned; their responses may still be on the wire. Give those up to 2 s (within
  // the grace period) — gRPC would otherwise also wait that long for idle client connections.
  const auto shutdown_end =
      std::min(grace_end, std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (http != nullptr) http->Shutdown(shutdown_end);
  server.Shutdown(shutdown_end);
  server.Wait();
  if (health != nullptr) health->server->Shutdown(shutdown_end);
}

// The TLS context of new HTTPS connections: the server's identity in use (rebuilt when it
// rotates), and with a client CA, a client certificate it signed required.
std::function<std::shared_ptr<boost::asio::ssl::context>()> HttpsContexts(const Secrets& secrets) {
  struct Cache {
    std::mutex mutex;
    int64_t version = -1;
    std::shared_ptr<boost::asio::ssl::context> context;
  };
  auto cache = std::make_shared<Cache>();
  return [&secrets, cache]() -> std::shared_ptr<boost::asio::ssl::context> {
    int64_t version = 0;
    const std::shared_ptr<const TlsIdentity> identity = secrets.tls_identity(&version);
    std::lock_guard<std::mutex> lock(cache->mutex);
    if (version == cache->version) return cache->context;
    namespace ssl = boost::asio::ssl;
    auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1);
    // The PEMs were checked when loaded (CheckTlsIdentity).
    context->use_certificate_chain(
        boost::asio::buffer(identity->cert_chain.data(), identity->cert_chain.size()));
    context->use_private_key(
        boost::asio::buffer(identity->private_key.data(), identity->private_key.size()),
        ssl::context::pem);
    if (!identity->client_ca.empty()) {
      context->add_certificate_authority(
          boost::asio::buffer(identity->client_ca.data(), identity->client_ca.size()));
      context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
    cache->version = version;
    cache->context = std::move(context);
    return cache->context;
  };
}

// The KServe v2 REST door on --http_address (null when it is empty).
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpDoor(const ServerOptions& options,
                                                          const Secrets& secrets, HttpDoor& door) {
  if (options.http_address.empty()) return nullptr;
  HttpServer::Options http;
  http.address = options.http_address;
  http.io_threads = options.http_threads;
  http.max_body_bytes = options.limits.max_response_bytes;
  http.io_timeout = options.limits.request_read_timeout;
  if (secrets.tls()) http.tls = HttpsContexts(secrets);
  http.refused = [&door](const HttpExchange& exchange, unsigned code) {
    door.Refused(exchange, code);
  };
  return HttpServer::Start(std::move(http), [&door](std::shared_ptr<HttpExchange> exchange) {
    door.Handle(std::move(exchange));
  });
}

// Logs a failed step's message and gives the process's exit code.
int Failed(const absl::Status& status) {
  spdlog::error("{}", std::string(status.message()));
  return 1;
}

}  // namespace

int RunServer(const ServerOptions& flags, const sigset_t& signals) {
  if (absl::Status status = CheckOptionsAndSetThreads(flags); !status.ok()) {
    return Failed(status);
  }
  const ServerOptions options = WithMemoryBudget(flags);
  if (const int64_t budget = options.limits.max_request_memory_bytes,
      message = options.limits.max_response_bytes;
      budget < 2 * message) {
    return Failed(absl::InvalidArgumentError(absl::StrCat(
        "the memory budget (--max_request_memory_bytes=", budget,
        ") must hold at least twice --max_message_bytes=", message,
        ": reading a message reserves that much; lower --max_message_bytes or raise the "
        "budget")));
  }
  absl::StatusOr<std::unique_ptr<ModelRegistry>> models = LoadModels(options.model_repository);
  if (!models.ok()) return Failed(models.status());
  // Tokens or client certificates restrict the gRPC port; the metrics then stay on loopback.
  const bool restricted =
      !options.secrets.auth_token_file.empty() || !options.secrets.tls_client_ca_file.empty();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      StartMetricsEndpoint(options, restricted, **models);
  if (!endpoint.ok()) return Failed(endpoint.status());
  ServerMetrics& metrics = (*endpoint)->metrics;
  absl::StatusOr<std::unique_ptr<Secrets>> secrets =
      Secrets::Load(options.secrets, [&metrics](absl::string_view group, bool ok) {
        metrics.RecordSecretsReload(group, ok);
      });
  if (!secrets.ok()) return Failed(secrets.status());

  ModelStore model_store(*std::move(models));
  AttentionServiceImpl service(&model_store, options.limits, &metrics);
  std::unique_ptr<AccessLog> access_log;
  if (options.access_log.has_value()) access_log = std::make_unique<AccessLog>(*options.access_log);
  GrpcInferenceService inference(
      &model_store, {.server_version = options.version,
                     .draining = [&service] { return service.draining(); }});
  int grpc_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(options, **secrets, metrics, service, inference, access_log.get(),
                      &grpc_port);
  if (!server.ok()) return Failed(server.status());
  spdlog::info("gRPC listening on {}", WithPort(options.grpc_address, grpc_port));
  HttpDoor http_door(&service, &model_store, secrets->get(),
                     {.server_version = options.version,
                      .metrics = &metrics,
                      .access_log = access_log.get(),
                      .console_metrics = options.console ? (*endpoint)->registry.get() : nullptr});
  absl::StatusOr<std::unique_ptr<HttpServer>> http = StartHttpDoor(options, **secrets, http_door);
  if (!http.ok()) return Failed(http.status());
  if (*http != nullptr) {
    const std::string http_url = absl::StrCat((*secrets)->tls() ? "https" : "http", "://",
                                              WithPort(options.http_address, (*http)->port()));
    spdlog::info("HTTP (KServe v2) listening on {}", http_url);
    if (options.console) spdlog::info("web console at {}/", http_url);
  }
  std::unique_ptr<HealthEndpoint> health;
  if (!options.health_address.empty()) {
    int health_port = 0;
    absl::StatusOr<std::unique_ptr<HealthEndpoint>> started =
        StartHealthEndpoint(options, &health_port);
    if (!started.ok()) return Failed(started.status());
    health = *std::move(started);
    spdlog::info("health (grpc.health.v1 only, plaintext) listening on {}",
                 WithPort(options.health_address, health_port));
  }
  spdlog::info("metrics listening on http://{}/metrics",
               WithPort((*endpoint)->address, (*endpoint)->exposer->GetListeningPorts().front()));

  const int signal_number =
      ServeUntilStopSignal(options, signals, model_store, **secrets, metrics);
  spdlog::info("received signal {}; draining", signal_number);
  Drain(options, **server, service, health.get(), http->get());
  spdlog::info("stopped");
  // Flushed, not shut down: a request still running past the grace period may log before the
  // process ends.
  spdlog::default_logger()->flush();
  // Every RPC has finished. Destroying the metrics endpoint would only wait out its HTTP
  // server's 2-second poll (civetweb's fixed quantum), so the process ends here instead.
  std::quick_exit(0);
}

}  // namespace attnserve
