// attnserve: the gRPC server binary. Flags live here and only here.
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/kernels/onednn_ops.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/observability/access_log.h"
#include "server/rpc/attention_service.h"
#include "server/rpc/auth.h"
#include "server/app/health_probe.h"
#include "server/observability/logging.h"
#include "server/observability/metrics.h"
#include "server/models/model_registry.h"
#include "server/models/model_reload.h"
#include "server/models/model_store.h"
#include "server/observability/process_metrics.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, grpc_address, "0.0.0.0:50051",
          "host:port the gRPC service listens on; port 0 picks a free port (printed at start)");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port of the Prometheus endpoint (path /metrics); port 0 picks a free port; "
          "empty = 0.0.0.0:9464, or 127.0.0.1:9464 when --auth_token_file or "
          "--tls_client_ca_file restricts the gRPC port");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: require client certificates it signed (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding a bearer token every AttentionService call must send as "
          "'authorization: Bearer <token>' (UNAUTHENTICATED otherwise); the health service stays "
          "open and server reflection is turned off");
ABSL_FLAG(std::string, model_repository, "",
          "folder with one sub-folder per model (config.pbtxt + weights.safetensors); empty = "
          "serve the built-in demo models");
ABSL_FLAG(double, model_poll_seconds, 0,
          "with --model_repository: reload it every this many seconds (0: only on SIGHUP); "
          "unchanged folders are not reloaded");
ABSL_FLAG(int32_t, compute_threads, 0,
          "OpenMP threads per computation; 0 = the cores divided among --compute_workers");
ABSL_FLAG(int32_t, compute_workers, 1,
          "compute worker threads: computations running at once (each uses --compute_threads "
          "threads)");
ABSL_FLAG(int32_t, compute_queue_depth, 64,
          "requests that may wait for a compute worker; more are RESOURCE_EXHAUSTED at once, and "
          "one whose deadline passes while waiting is DEADLINE_EXCEEDED without being computed");
ABSL_FLAG(int32_t, rpc_threads, 0,
          "most threads gRPC may use to run RPCs concurrently; 0 = gRPC's default");
ABSL_FLAG(int64_t, max_batch, 64, "largest batch dimension accepted in a request");
ABSL_FLAG(int64_t, max_sequence_length, 8192, "largest seq / q_len / kv_len accepted");
ABSL_FLAG(int64_t, max_attention_elements, int64_t{1} << 26,
          "largest batch·heads·q_len·kv_len (score matrix elements) one request may need");
ABSL_FLAG(int32_t, max_message_bytes, 64 << 20,
          "largest gRPC request or response, in bytes; a request whose response would be larger "
          "is refused before it is computed");
ABSL_FLAG(int64_t, max_kv_cache_bytes, int64_t{1} << 30,
          "bytes all Decode streams' K/V caches may hold together (a step also counts the copy of "
          "its stream's cache it makes while growing it); a step past it is RESOURCE_EXHAUSTED");
ABSL_FLAG(double, shutdown_grace_seconds, 10.0,
          "on SIGTERM/SIGINT, how long in-flight RPCs may take to finish before being cancelled");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");
ABSL_FLAG(std::string, log_format, "text",
          "server log lines: text, or json (one object per line: time, level, msg)");
ABSL_FLAG(double, max_connection_age_seconds, 0,
          "close client connections after about this long (0 = never; a client reconnects and "
          "is balanced anew, so new replicas get traffic; see docs/scaling.md)");
ABSL_FLAG(double, max_connection_age_grace_seconds, 30,
          "time an aged connection's calls get to finish before it is closed");
ABSL_FLAG(bool, health_probe, false,
          "instead of serving: ask the server at --grpc_address (0.0.0.0 means this host) for "
          "its grpc.health.v1 status and exit 0 if SERVING, 1 otherwise (container HEALTHCHECK, "
          "exec probes)");
ABSL_FLAG(double, health_probe_timeout_seconds, 5.0, "deadline of the --health_probe call");
ABSL_FLAG(std::string, access_log, "text",
          "one line per RPC (request id, method, code, latency, peer): text, json or off");

namespace attnserve {
namespace {

constexpr char kServiceName[] = "attnserve.v1.AttentionService";

// "/package.Service/Method" of every RPC the server below registers: AttentionService (from its
// generated descriptor), the health service and server reflection. Metrics label anything else
// "unknown".
std::vector<std::string> ServedMethods() {
  std::vector<std::string> methods = {
      "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(kServiceName);
  for (int i = 0; i < service->method_count(); ++i) {
    methods.push_back(absl::StrCat("/", kServiceName, "/", service->method(i)->name()));
  }
  return methods;
}

// argv with --tryfromenv=<every flag of this file> after the program name, so that absl reads
// FLAGS_<name> from the environment for each (absent ones are skipped); flags given on the
// command line come later and win. Ends with a null pointer, as argv does; the strings live as
// long as the process.
std::vector<char*> WithFlagsFromEnvironment(int argc, char** argv) {
  std::vector<std::string> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), "server/app/main.cc")) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  static std::string from_environment;
  from_environment = absl::StrCat("--tryfromenv=", absl::StrJoin(names, ","));
  std::vector<char*> args(argv, argv + argc);
  args.insert(args.begin() + 1, from_environment.data());
  args.push_back(nullptr);
  return args;
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

int Run(const sigset_t& signals) {
  const int workers = absl::GetFlag(FLAGS_compute_workers);
  const int queue_depth = absl::GetFlag(FLAGS_compute_queue_depth);
  if (workers < 1 || queue_depth < 0) {
    spdlog::error("--compute_workers={} must be >= 1 and --compute_queue_depth={} >= 0", workers,
                  queue_depth);
    return 1;
  }
  // By default the workers share the cores instead of each spreading over all of them.
  int threads = absl::GetFlag(FLAGS_compute_threads);
  if (threads == 0 && workers > 1) {
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / workers);
  }
  SetComputeThreads(threads);

  const std::string repository = absl::GetFlag(FLAGS_model_repository);
  // Polls closer than this would reread every config.pbtxt back to back.
  constexpr double kMinPollSeconds = 0.1;
  if (const double poll = absl::GetFlag(FLAGS_model_poll_seconds);
      !(poll == 0 || (poll >= kMinPollSeconds && poll <= 1e9))) {
    spdlog::error("--model_poll_seconds={} must be 0 (reload on SIGHUP only) or in [{}, 1e9]",
                  poll, kMinPollSeconds);
    return 1;
  }
  absl::StatusOr<std::unique_ptr<ModelRegistry>> models =
      repository.empty() ? ModelRegistry::CreateWithDemoModels()
                         : ModelRegistry::CreateFromRepository(repository);
  if (!models.ok()) {
    spdlog::error("loading models failed: {}", models.status().ToString());
    return 1;
  }
  for (const auto& [name, status] : (*models)->failures()) {
    spdlog::error("model {} not loaded: {}", name, std::string(status.message()));
  }
  if ((*models)->List().empty()) {
    spdlog::error("no model loaded from --model_repository={}", repository);
    return 1;
  }
  for (const LoadedModel* model : (*models)->List()) {
    spdlog::info("loaded model {}: {}", model->config.name(), model->config.description());
  }

  // Who may call: TLS (mutual with a client CA) and an optional bearer token.
  const TlsFiles tls{absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
                     absl::GetFlag(FLAGS_tls_client_ca_file)};
  const absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentialsFromFiles(tls);
  if (!credentials.ok()) {
    spdlog::error("{}", std::string(credentials.status().message()));
    return 1;
  }
  std::unique_ptr<TokenAuthenticator> authenticator;
  if (const std::string token_file = absl::GetFlag(FLAGS_auth_token_file); !token_file.empty()) {
    absl::StatusOr<std::unique_ptr<TokenAuthenticator>> loaded =
        TokenAuthenticator::FromFile(token_file);
    if (!loaded.ok()) {
      spdlog::error("{}", std::string(loaded.status().message()));
      return 1;
    }
    authenticator = *std::move(loaded);
  }
  const bool restricted = authenticator != nullptr || !tls.client_ca_file.empty();

  auto metrics_registry = std::make_shared<prometheus::Registry>();
  ServerMetrics metrics(*metrics_registry, ServedMethods());
  std::unique_ptr<prometheus::Exposer> exposer;
  // The metrics endpoint has no authentication: keep it on loopback when the gRPC port is
  // restricted, unless an address is given.
  std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (metrics_address.empty()) metrics_address = restricted ? "127.0.0.1:9464" : "0.0.0.0:9464";
  try {
    exposer = std::make_unique<prometheus::Exposer>(metrics_address);
  } catch (const std::exception& e) {
    spdlog::error("cannot serve metrics on {}: {}", metrics_address, e.what());
    return 1;
  }
  exposer->RegisterCollectable(metrics_registry);
  metrics.SetComputeCapacity(workers, queue_depth);
  metrics.SetBuildInfo(ATTNSERVE_VERSION, OneDnnVersion(), OneDnnCpuIsa());
  PublishModels(**models, metrics);
  auto process_metrics = std::make_shared<ProcessMetrics>();
  exposer->RegisterCollectable(process_metrics);

  ServiceLimits limits;
  limits.max_batch = absl::GetFlag(FLAGS_max_batch);
  limits.max_sequence_length = absl::GetFlag(FLAGS_max_sequence_length);
  limits.max_attention_elements = absl::GetFlag(FLAGS_max_attention_elements);
  limits.max_kv_cache_bytes = absl::GetFlag(FLAGS_max_kv_cache_bytes);
  limits.compute_workers = workers;
  limits.compute_queue_depth = queue_depth;
  limits.max_response_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  ModelStore model_store(*std::move(models));
  AttentionServiceImpl service(&model_store, limits, &metrics, authenticator.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string grpc_address = absl::GetFlag(FLAGS_grpc_address);
  int grpc_port = 0;
  builder.AddListeningPort(grpc_address, *credentials, &grpc_port);
  builder.RegisterService(&service);
  // Reflection would answer without the token, so it is off when one is required.
  if (authenticator != nullptr) builder.SetOption(std::make_unique<WithoutReflection>());
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  if (const double age = absl::GetFlag(FLAGS_max_connection_age_seconds); age > 0) {
    // gRPC adds ±10% jitter, so the replicas' clients do not all reconnect at once.
    // Milliseconds as an int channel argument: at most INT_MAX (24.8 days).
    auto milliseconds = [](double seconds) {
      return static_cast<int>(std::clamp(seconds * 1000, 0.0, double{INT_MAX}));
    };
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, milliseconds(age));
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
        milliseconds(absl::GetFlag(FLAGS_max_connection_age_grace_seconds)));
  }
  if (const int rpc_threads = absl::GetFlag(FLAGS_rpc_threads); rpc_threads > 0) {
    grpc::ResourceQuota quota("attnserve");
    quota.SetMaxThreads(rpc_threads);
    builder.SetResourceQuota(quota);
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics.CreateInterceptorFactory());
  if (const std::string access_log = absl::GetFlag(FLAGS_access_log); access_log != "off") {
    if (access_log != "text" && access_log != "json") {
      spdlog::error("--access_log={} must be text, json or off", access_log);
      return 1;
    }
    interceptors.push_back(CreateAccessLogFactory(
        access_log == "json" ? AccessLogFormat::kJson : AccessLogFormat::kText));
  }
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    spdlog::error("cannot listen for gRPC on {}", grpc_address);
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(kServiceName, true);
  spdlog::info("gRPC listening on {}", WithPort(grpc_address, grpc_port));
  spdlog::info("metrics listening on http://{}/metrics",
               WithPort(metrics_address, exposer->GetListeningPorts().front()));

  // Serve until SIGTERM or SIGINT; SIGHUP (and every --model_poll_seconds) reloads the repository.
  const double poll_seconds = repository.empty() ? 0 : absl::GetFlag(FLAGS_model_poll_seconds);
  int signal_number = 0;
  while (true) {
    signal_number = WaitForSignal(signals, poll_seconds);
    if (signal_number != 0 && signal_number != SIGHUP) break;
    if (repository.empty()) {
      spdlog::info("SIGHUP: serving the built-in demo models, nothing to reload");
      continue;
    }
    if (signal_number == SIGHUP) spdlog::info("SIGHUP: reloading {}", repository);
    // Errors are logged and counted there; the served models stay as they were.
    ReloadModels(repository, model_store, &metrics).IgnoreError();
  }
  spdlog::info("received signal {}; draining", signal_number);
  // Health turns NOT_SERVING and new requests are answered UNAVAILABLE while the running ones
  // finish (at most the grace period); then the port closes and anything left is cancelled.
  health->Shutdown();
  service.StartDraining();
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  const auto grace_end = std::chrono::system_clock::now() + grace;
  if (!service.WaitUntilIdle(grace_end)) {
    spdlog::warn("requests still running after {} s; cancelling them",
                 absl::GetFlag(FLAGS_shutdown_grace_seconds));
  }
  // Handlers have returned; their responses may still be on the wire. Give those up to 2 s (within
  // the grace period) — gRPC would otherwise also wait that long for idle client connections.
  server->Shutdown(std::min(grace_end, std::chrono::system_clock::now() + std::chrono::seconds(2)));
  server->Wait();
  spdlog::info("stopped");
  spdlog::shutdown();
  // Every RPC has finished. Destroying the metrics endpoint would only wait out its HTTP
  // server's 2-second poll (civetweb's fixed quantum), so the process ends here instead.
  std::quick_exit(0);
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  // Block the handled signals before any thread exists, so every thread inherits the mask and only
  // WaitForSignal() in Run() receives them: SIGTERM and SIGINT drain and stop, SIGHUP reloads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/app/main.cc");
  };
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "Transformer attention and positional encodings as a gRPC service.\n"
      "Serves the built-in demo models; see README.md. Every flag can also come from the\n"
      "environment variable FLAGS_<name> (e.g. FLAGS_max_batch=16); the command line wins.");
  const std::vector<char*> args = attnserve::WithFlagsFromEnvironment(argc, argv);
  absl::ParseCommandLine(static_cast<int>(args.size()) - 1, const_cast<char**>(args.data()));

  if (absl::GetFlag(FLAGS_health_probe)) {
    return attnserve::ProbeHealth(absl::GetFlag(FLAGS_grpc_address), "",
                                  absl::Seconds(absl::GetFlag(FLAGS_health_probe_timeout_seconds)));
  }

  const absl::StatusOr<attnserve::LogFormat> log_format =
      attnserve::ParseLogFormat(absl::GetFlag(FLAGS_log_format), "log_format");
  if (!log_format.ok()) {
    spdlog::error("{}", std::string(log_format.status().message()));
    return 2;
  }
  attnserve::SetLogFormat(*log_format);
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  spdlog::flush_on(spdlog::level::info);
  return attnserve::Run(signals);
}
