// One access-log line per RPC (method, status code, latency, peer, request id), written by a
// server interceptor through spdlog. Never logs tensor data.
#ifndef ATTNSERVE_SERVER_ACCESS_LOG_H_
#define ATTNSERVE_SERVER_ACCESS_LOG_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace attnserve {

enum class AccessLogFormat { kText, kJson };

// Lines go to spdlog's default logger at info level. The request id is the client's
// `x-request-id` metadata if it sent one (at most 64 characters kept), else a sequence number.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateAccessLogFactory(
    AccessLogFormat format);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_ACCESS_LOG_H_
