// The attnserve process as named steps: options checked → models loaded → callers' credentials →
// metrics endpoint → gRPC server → signal loop (reloads) → drain. main.cc turns flags into
// ServerOptions; nothing here reads a flag.
#ifndef ATTNSERVE_SERVER_APP_SERVER_RUNNER_H_
#define ATTNSERVE_SERVER_APP_SERVER_RUNNER_H_

#include <signal.h>

#include <cstdint>
#include <optional>
#include <string>

#include "server/observability/access_log.h"
#include "server/requests/service_limits.h"
#include "server/rpc/secrets.h"

namespace attnserve {

struct ServerOptions {
  std::string grpc_address = "0.0.0.0:50051";  // port 0 picks a free port
  // Empty: 0.0.0.0:9464, or 127.0.0.1:9464 when a token or client CA restricts the gRPC port.
  std::string metrics_address;
  // A plaintext port serving only grpc.health.v1, with the main port's statuses; empty: none.
  std::string health_address;
  // The KServe v2 REST door (with the gRPC port's TLS and tokens); empty: none.
  std::string http_address = "0.0.0.0:8000";
  int http_threads = 2;  // its I/O threads (computations run on the request threads)
  bool console = true;   // the web console at / on the HTTP door
  SecretFiles secrets;             // TLS identity and bearer tokens; none: plaintext, open
  double secrets_poll_seconds = 10;  // how often they are read again; 0: on SIGHUP only
  std::string model_repository;    // empty: the built-in demo models
  double model_poll_seconds = 0;   // 0: reload on SIGHUP only; else in [0.1, 1e9]
  int compute_threads = 0;         // OpenMP threads the computations share; 0: the cores
  // Per-request bounds, compute workers and queue; limits.max_request_memory_bytes 0: half
  // of the container's (or machine's) memory (DetectMemoryLimit).
  ServiceLimits limits;
  double shutdown_grace_seconds = 10;
  double max_connection_age_seconds = 0;  // 0: never
  double max_connection_age_grace_seconds = 30;
  int max_concurrent_streams = 100;  // per client connection
  // Idle connections are pinged after keepalive_time and closed when the ping goes unanswered
  // for keepalive_timeout; clients pinging more often than keepalive_min_client_interval are
  // sent GOAWAY.
  double keepalive_time_seconds = 60;
  double keepalive_timeout_seconds = 20;
  double keepalive_min_client_interval_seconds = 10;
  // One line per RPC; nullopt: off.
  std::optional<AccessLogFormat> access_log = AccessLogFormat::kText;
  std::string version;  // reported by attnserve_build_info
};

// Serves until one of `signals` other than SIGHUP (blocked in every thread) arrives, then drains
// and ends the process (std::quick_exit(0)). Returns 1, having logged why, when a step fails.
int RunServer(const ServerOptions& options, const sigset_t& signals);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_APP_SERVER_RUNNER_H_
