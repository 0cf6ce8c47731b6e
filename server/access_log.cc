#include "server/access_log.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>

#include "grpcpp/server_context.h"
#include "nlohmann/json.hpp"
#include "server/metrics.h"
#include "spdlog/spdlog.h"

namespace attnserve {
namespace {

constexpr size_t kMaxRequestIdLength = 64;

class AccessLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  AccessLogInterceptor(AccessLogFormat format, grpc::experimental::ServerRpcInfo* info,
                       std::string fallback_id)
      : format_(format),
        info_(info),
        request_id_(std::move(fallback_id)),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      const auto* metadata = methods->GetRecvInitialMetadata();
      if (metadata != nullptr) {
        auto it = metadata->find("x-request-id");
        if (it != metadata->end()) {
          request_id_ = std::string(it->second.data(),
                                    std::min(it->second.size(), kMaxRequestIdLength));
        }
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Log(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Log(grpc::StatusCode code) const {
    const double latency_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
            .count();
    const std::string method = info_->method() != nullptr ? info_->method() : "";
    const std::string peer = info_->server_context()->peer();
    const std::string code_name(StatusCodeName(code));
    if (format_ == AccessLogFormat::kJson) {
      nlohmann::json line = {{"access", true},        {"request_id", request_id_},
                             {"method", method},      {"code", code_name},
                             {"latency_ms", latency_ms}, {"peer", peer}};
      spdlog::info("{}", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      spdlog::info("access request_id={} method={} code={} latency_ms={:.3f} peer={}",
                   request_id_, method, code_name, latency_ms, peer);
    }
  }

  const AccessLogFormat format_;
  grpc::experimental::ServerRpcInfo* info_;
  std::string request_id_;
  const std::chrono::steady_clock::time_point start_;
};

class AccessLogFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AccessLogFactory(AccessLogFormat format) : format_(format) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new AccessLogInterceptor(format_, info, std::to_string(++sequence_));
  }

 private:
  const AccessLogFormat format_;
  std::atomic<uint64_t> sequence_{0};
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateAccessLogFactory(
    AccessLogFormat format) {
  return std::make_unique<AccessLogFactory>(format);
}

}  // namespace attnserve
