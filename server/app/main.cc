// attnserve: the gRPC server binary. Flags live here and only here.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "server/app/flag_choice.h"
#include "core/base/status_macros.h"
#include "server/app/health_probe.h"
#include "server/app/server_runner.h"
#include "server/observability/logging.h"
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
          "file of bearer tokens, one per line (blank lines and # comments skipped): every call "
          "but the health service's must send 'authorization: Bearer <one of them>', checked "
          "before its message is read (UNAUTHENTICATED otherwise)");
ABSL_FLAG(double, secrets_poll_seconds, 10,
          "read the TLS files and the token file again every this many seconds (0: only on "
          "SIGHUP); changed ones that check out replace those in use, others are logged and "
          "counted (attnserve_secrets_reloads_total) and the previous stay");
ABSL_FLAG(std::string, model_repository, "",
          "folder with one sub-folder per model (config.pbtxt + weights.safetensors); empty = "
          "serve the built-in demo models");
ABSL_FLAG(double, model_poll_seconds, 0,
          "with --model_repository: reload it every this many seconds (0: only on SIGHUP); "
          "unchanged folders are not reloaded");
ABSL_FLAG(int32_t, compute_threads, 0,
          "OpenMP threads the computations share (0 = the cores, or OMP_NUM_THREADS): a lone "
          "computation uses them all, N running at once 1/N each");
ABSL_FLAG(int32_t, compute_workers, 2,
          "compute worker threads: computations (batches) running at once");
ABSL_FLAG(int32_t, compute_queue_depth, 64,
          "requests that may wait for a compute worker, and calls that may wait for room in the "
          "memory budget to read their message; more are RESOURCE_EXHAUSTED at once, and one "
          "whose deadline passes while waiting is DEADLINE_EXCEEDED without being computed");
ABSL_FLAG(int32_t, max_batch_requests, 32,
          "requests of one kind (RPC, model, compute dtype) waiting for a compute worker that it "
          "computes together as one batch, at most; 1 = no batching");
ABSL_FLAG(int64_t, max_batch_tokens, 8192,
          "query tokens a batch holds at most (a lone request may hold more); 0 = no bound");
ABSL_FLAG(int64_t, batch_timeout_micros, 0,
          "how long a worker may hold a batch open for more requests, from its first request's "
          "arrival; 0 = never wait (a batch is what waits when a worker becomes free)");
ABSL_FLAG(int64_t, decode_step_wait_micros, 2000,
          "how long a worker may hold a batch of Decode steps open, from its first step, while "
          "fewer steps wait than the model's last such batch held (plus those that waited "
          "through it: their streams come back together); a lone stream never waits; 0 = never");
ABSL_FLAG(int64_t, max_decode_streams, 1024,
          "Decode streams open at once; past it, RESOURCE_EXHAUSTED at once");
ABSL_FLAG(double, decode_idle_timeout_seconds, 300,
          "a Decode stream waiting this long for its client's next message is ended "
          "(DEADLINE_EXCEEDED) and its cache freed; 0 = never");
ABSL_FLAG(double, request_read_timeout_seconds, 30,
          "a unary call whose request message has not arrived this long after the server began "
          "reading it (holding twice --max_message_bytes of the memory budget meanwhile) is "
          "ended with DEADLINE_EXCEEDED; 0 = never");
ABSL_FLAG(int32_t, rpc_threads, 0,
          "most calls (or Decode steps) whose bodies run at once, each on a thread while it "
          "waits for its computation; past it, RESOURCE_EXHAUSTED; 0 = no cap");
ABSL_FLAG(int64_t, max_batch, 64, "largest batch dimension accepted in a request");
ABSL_FLAG(int64_t, max_sequence_length, 8192, "largest seq / q_len / kv_len accepted");
ABSL_FLAG(int64_t, max_attention_elements, int64_t{1} << 26,
          "largest batch·heads·q_len·kv_len (score matrix elements) of a request that holds its "
          "scores whole (return_attention, PositionBias); the tiled kernel holds a tile per "
          "thread, CoPE a block of rows");
ABSL_FLAG(double, max_request_flops, 17592186044416.0,
          "useful FLOPs one request may need (projections and attention, as "
          "attnserve_flops_total counts them, plus 2048 per CoPE score); default 2^44, about "
          "1.8e13");
ABSL_FLAG(int32_t, max_message_bytes, 64 << 20,
          "largest gRPC request or response, in bytes; a request whose response would be larger "
          "is refused before it is computed");
ABSL_FLAG(int64_t, max_request_memory_bytes, 0,
          "bytes the calls being served may hold together: twice --max_message_bytes for a "
          "message being read and parsed, then the request (counted twice: the message and its "
          "tensors), the computation and the answer, estimated from above. A call without room "
          "waits, unread, for its turn (at most --compute_queue_depth wait); past that, or when "
          "a read call's needs do not fit, RESOURCE_EXHAUSTED at once. gRPC's transport buffers "
          "get the same figure as their resource quota. 0 = half the container's memory limit "
          "(cgroup), or of the machine's memory without one");
ABSL_FLAG(int32_t, max_concurrent_streams, 100,
          "calls (and Decode streams) one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS); more wait in the client");
ABSL_FLAG(double, keepalive_time_seconds, 60,
          "ping a client connection idle this long, and close it when the ping is not answered "
          "within --keepalive_timeout_seconds (dead peers free their calls)");
ABSL_FLAG(double, keepalive_timeout_seconds, 20, "see --keepalive_time_seconds");
ABSL_FLAG(double, keepalive_min_client_interval_seconds, 10,
          "a client pinging more often than this (without data) is sent GOAWAY "
          "(ENHANCE_YOUR_CALM) after two such pings; clients' keepalive must be at least this");
ABSL_FLAG(int64_t, max_kv_cache_bytes, int64_t{1} << 30,
          "bytes all Decode streams' K/V caches may hold together (a step also counts the copy of "
          "its stream's cache it makes while growing it); a step past it is RESOURCE_EXHAUSTED");
ABSL_FLAG(double, shutdown_grace_seconds, 10.0,
          "on SIGTERM/SIGINT, how long in-flight RPCs may take to finish before being cancelled");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off (in any case)");
ABSL_FLAG(std::string, log_format, "text",
          "server log lines: text, or json (one object per line: time, level, msg); in any case");
ABSL_FLAG(double, max_connection_age_seconds, 0,
          "close client connections after about this long (0 = never; a client reconnects and "
          "is balanced anew, so new replicas get traffic; see docs/scaling.md)");
ABSL_FLAG(double, max_connection_age_grace_seconds, 30,
          "time an aged connection's calls get to finish before it is closed");
ABSL_FLAG(std::string, health_address, "",
          "host:port of a second, plaintext port that serves only grpc.health.v1 (no other "
          "service, no reflection), its statuses those of the main port: for probes that cannot "
          "speak the main port's TLS (Kubernetes' gRPC probes, mutual TLS); empty = none");
ABSL_FLAG(std::string, http_address, "0.0.0.0:8000",
          "host:port of the KServe v2 / Open Inference Protocol REST door (docs/kserve.md), with "
          "the gRPC port's TLS and bearer tokens; port 0 picks a free port; empty = none");
ABSL_FLAG(int32_t, http_threads, 2,
          "threads reading and writing HTTP connections (inference runs on the request threads)");
ABSL_FLAG(bool, console, true,
          "serve the web console (docs/console.md) at / on --http_address: models and their live "
          "traffic, encodings and attention maps; its data routes need the bearer token when one "
          "is set");
ABSL_FLAG(bool, health_probe, false,
          "instead of serving: ask the server at --health_address, or else at --grpc_address "
          "(with its TLS flags), for its grpc.health.v1 status (0.0.0.0 means this host) and "
          "exit 0 if SERVING, 1 otherwise (container HEALTHCHECK, exec probes)");
ABSL_FLAG(double, health_probe_timeout_seconds, 5.0, "deadline of the --health_probe call");
ABSL_FLAG(std::string, access_log, "text",
          "one line per RPC (request id, method, code, latency, peer): text, json or off (in any "
          "case)");

namespace attnserve {
namespace {

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

// A timeout flag's `seconds` (0 = never) as milliseconds; INVALID_ARGUMENT naming --`flag`
// outside [0, a week] (a week is far from overflowing the milliseconds).
absl::StatusOr<std::chrono::milliseconds> TimeoutFlag(absl::string_view flag, double seconds) {
  constexpr double kMaxSeconds = 7 * 24 * 3600;
  if (!(seconds >= 0 && seconds <= kMaxSeconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", seconds, " must be in [0, ", kMaxSeconds, "]"));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
}

// The flags as the server's options; INVALID_ARGUMENT for a flag no type check catches.
absl::StatusOr<ServerOptions> OptionsFromFlags() {
  ServerOptions options;
  options.grpc_address = absl::GetFlag(FLAGS_grpc_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.health_address = absl::GetFlag(FLAGS_health_address);
  options.http_address = absl::GetFlag(FLAGS_http_address);
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.console = absl::GetFlag(FLAGS_console);
  if (options.http_threads < 1 || options.http_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_threads=", options.http_threads, " must be in [1, 256]"));
  }
  options.secrets.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.secrets.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.secrets.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.secrets.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.secrets_poll_seconds = absl::GetFlag(FLAGS_secrets_poll_seconds);
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.model_poll_seconds = absl::GetFlag(FLAGS_model_poll_seconds);
  options.compute_threads = absl::GetFlag(FLAGS_compute_threads);
  ServiceLimits& limits = options.limits;
  limits.max_batch = absl::GetFlag(FLAGS_max_batch);
  limits.max_sequence_length = absl::GetFlag(FLAGS_max_sequence_length);
  limits.max_attention_elements = absl::GetFlag(FLAGS_max_attention_elements);
  limits.max_request_flops = absl::GetFlag(FLAGS_max_request_flops);
  limits.max_response_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  limits.max_kv_cache_bytes = absl::GetFlag(FLAGS_max_kv_cache_bytes);
  limits.max_request_memory_bytes = absl::GetFlag(FLAGS_max_request_memory_bytes);
  limits.compute_workers = absl::GetFlag(FLAGS_compute_workers);
  limits.compute_queue_depth = absl::GetFlag(FLAGS_compute_queue_depth);
  limits.rpc_threads = absl::GetFlag(FLAGS_rpc_threads);
  limits.max_decode_streams = absl::GetFlag(FLAGS_max_decode_streams);
  ASSIGN_OR_RETURN(limits.decode_idle_timeout,
                   TimeoutFlag("decode_idle_timeout_seconds",
                               absl::GetFlag(FLAGS_decode_idle_timeout_seconds)));
  ASSIGN_OR_RETURN(limits.request_read_timeout,
                   TimeoutFlag("request_read_timeout_seconds",
                               absl::GetFlag(FLAGS_request_read_timeout_seconds)));
  limits.batching.max_requests = absl::GetFlag(FLAGS_max_batch_requests);
  limits.batching.max_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  limits.batching.timeout = std::chrono::microseconds(absl::GetFlag(FLAGS_batch_timeout_micros));
  limits.batching.step_wait =
      std::chrono::microseconds(absl::GetFlag(FLAGS_decode_step_wait_micros));
  options.shutdown_grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  options.max_connection_age_seconds = absl::GetFlag(FLAGS_max_connection_age_seconds);
  options.max_connection_age_grace_seconds = absl::GetFlag(FLAGS_max_connection_age_grace_seconds);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.keepalive_time_seconds = absl::GetFlag(FLAGS_keepalive_time_seconds);
  options.keepalive_timeout_seconds = absl::GetFlag(FLAGS_keepalive_timeout_seconds);
  options.keepalive_min_client_interval_seconds =
      absl::GetFlag(FLAGS_keepalive_min_client_interval_seconds);
  absl::StatusOr<std::optional<AccessLogFormat>> access_log =
      ParseFlagChoice<std::optional<AccessLogFormat>>(
          "access_log", absl::GetFlag(FLAGS_access_log),
          {{"text", AccessLogFormat::kText}, {"json", AccessLogFormat::kJson}, {"off", std::nullopt}});
  if (!access_log.ok()) return access_log.status();
  options.access_log = *access_log;
  options.version = ATTNSERVE_VERSION;
  return options;
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  // Block the handled signals before any thread exists, so every thread inherits the mask and only
  // WaitForSignal() in RunServer() receives them: SIGTERM and SIGINT drain and stop, SIGHUP reloads.
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
    // The plaintext health port when there is one; else the main port, in its TLS.
    const std::string health_address = absl::GetFlag(FLAGS_health_address);
    const attnserve::ProbeTls tls =
        health_address.empty()
            ? attnserve::ProbeTls{absl::GetFlag(FLAGS_tls_cert_file),
                                  absl::GetFlag(FLAGS_tls_key_file),
                                  !absl::GetFlag(FLAGS_tls_client_ca_file).empty()}
            : attnserve::ProbeTls{};
    return attnserve::ProbeHealth(
        health_address.empty() ? absl::GetFlag(FLAGS_grpc_address) : health_address, "",
        absl::Seconds(absl::GetFlag(FLAGS_health_probe_timeout_seconds)), tls);
  }

  using Level = spdlog::level::level_enum;
  const absl::StatusOr<Level> log_level = attnserve::ParseFlagChoice<Level>(
      "log_level", absl::GetFlag(FLAGS_log_level),
      {{"trace", Level::trace}, {"debug", Level::debug}, {"info", Level::info},
       {"warn", Level::warn}, {"error", Level::err}, {"critical", Level::critical},
       {"off", Level::off}});
  const absl::StatusOr<attnserve::LogFormat> log_format =
      attnserve::ParseFlagChoice<attnserve::LogFormat>(
          "log_format", absl::GetFlag(FLAGS_log_format),
          {{"text", attnserve::LogFormat::kText}, {"json", attnserve::LogFormat::kJson}});
  for (const absl::Status& status : {log_level.status(), log_format.status()}) {
    if (!status.ok()) {
      spdlog::error("{}", std::string(status.message()));
      return 2;
    }
  }
  attnserve::SetLogFormat(*log_format);
  spdlog::set_level(*log_level);
  spdlog::flush_on(spdlog::level::info);
  const absl::StatusOr<attnserve::ServerOptions> options = attnserve::OptionsFromFlags();
  if (!options.ok()) {
    spdlog::error("{}", std::string(options.status().message()));
    return 1;
  }
  return attnserve::RunServer(*options, signals);
}
