// One access-log line per RPC (request id, method, model, status code, latency, peer), written by
// a server interceptor through spdlog. Never logs tensor data.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace attnserve {

enum class AccessLogFormat { kText, kJson };

// kText lines go to spdlog's default logger at info level (client-chosen values reduced to
// [A-Za-z0-9._:/-]); kJson lines are whole JSON objects on stdout with "time" and "level" like the
// JSON server log. The request id is the client's `x-request-id` metadata if it sent one, else a
// sequence number; the model is the one the first request message names (Encode, Attend, Decode,
// PositionBias, GetModel), "" otherwise; both at most 64 characters.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateAccessLogFactory(
    AccessLogFormat format);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_ACCESS_LOG_H_
