// One access-log line per request (request id, method, model, status code, latency, peer), for
// both doors: gRPC calls through a server interceptor, HTTP requests through the door. Written
// through spdlog; never logs tensor data.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace spdlog {
class logger;
}

namespace attnserve {

enum class AccessLogFormat { kText, kJson };

// kText lines go to spdlog's default logger at info level (client-chosen values reduced to
// [A-Za-z0-9._:/-]); kJson lines are whole JSON objects on stdout with "time" and "level" like the
// JSON server log. Thread-safe.
class AccessLog {
 public:
  explicit AccessLog(AccessLogFormat format);
  ~AccessLog();

  // The id of a request that brought no x-request-id: the next sequence number.
  std::string NextRequestId() { return std::to_string(++sequence_); }
  // `method`: the gRPC path, or "POST /v2/models/m/infer"; `code`: the gRPC code's name or the
  // HTTP status.
  void Write(absl::string_view request_id, absl::string_view method, absl::string_view model,
             absl::string_view code, double latency_ms, absl::string_view peer) const;

 private:
  const AccessLogFormat format_;
  const std::shared_ptr<spdlog::logger> json_logger_;  // JSON lines, pattern "%v"
  std::atomic<uint64_t> sequence_{0};
};

// Echoes a gRPC call's x-request-id metadata in its response's initial metadata (or, for an answer
// sent without any, its trailing metadata), so a client can match the answer and the access line.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateRequestIdEchoFactory();

// The gRPC door's lines into `log` (which must outlive the server). The request id is the
// client's `x-request-id` metadata if it sent one, else a sequence number; the model is the one
// the first request message names (Encode, Attend, Decode, PositionBias, GetModel, ModelInfer),
// "" otherwise; both at most 64 characters.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateAccessLogFactory(
    AccessLog* log);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_
