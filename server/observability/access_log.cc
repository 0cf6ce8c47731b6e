#include "server/observability/access_log.h"

#include <algorithm>
#include <cctype>
#include <atomic>
#include <chrono>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention_service.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_buffer_reader.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "nlohmann/json.hpp"
#include "server/observability/logging.h"
#include "server/observability/metrics.h"
#include "server/rpc/tsan_hand_off.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace attnserve {
namespace {

constexpr size_t kMaxFieldLength = 64;  // of the client-chosen request id and model name
constexpr absl::string_view kServicePrefix = "/attnserve.v1.AttentionService/";

// The model a request names, for the RPCs that name one; "" otherwise. `message` is the first
// message received on `method`, of that method's request type.
std::string ModelOfRequest(absl::string_view method, const void* message) {
  if (message == nullptr || !absl::StartsWith(method, kServicePrefix)) return "";
  method.remove_prefix(kServicePrefix.size());
  std::string model;
  if (method == "Decode") model = static_cast<const v1::DecodeRequest*>(message)->model();
  if (method == "GetModel") model = static_cast<const v1::GetModelRequest*>(message)->name();
  model.resize(std::min(model.size(), kMaxFieldLength));
  return model;
}

// The same for a unary method served through gRPC's generic API (attnserve.v1's computing RPCs,
// the KServe v2 ModelInfer), whose interceptors see the request's bytes: its top-level `model`
// (v1) or `model_name` (v2) field, read by scanning the fields (the others skipped, nothing
// parsed or copied but at most kMaxFieldLength bytes of the name).
std::string ModelOfRawRequest(absl::string_view method, grpc::ByteBuffer* bytes) {
  const size_t slash = method.rfind('/');
  if (method.size() < 2 || slash == 0 || slash == absl::string_view::npos) return "";
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(method.substr(1, slash - 1)));
  const google::protobuf::MethodDescriptor* rpc =
      service == nullptr ? nullptr
                         : service->FindMethodByName(std::string(method.substr(slash + 1)));
  const google::protobuf::FieldDescriptor* field = nullptr;
  for (const char* name : {"model", "model_name"}) {
    if (rpc != nullptr && field == nullptr) field = rpc->input_type()->FindFieldByName(name);
  }
  if (bytes == nullptr || field == nullptr) return "";
  using google::protobuf::internal::WireFormatLite;
  grpc::ProtoBufferReader reader(bytes);
  google::protobuf::io::CodedInputStream input(&reader);
  std::string model;
  while (const uint32_t tag = input.ReadTag()) {
    if (WireFormatLite::GetTagFieldNumber(tag) != field->number() ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&input, tag)) break;
      continue;
    }
    uint32_t length = 0;
    const auto kept = static_cast<uint32_t>(kMaxFieldLength);
    if (!input.ReadVarint32(&length) || !input.ReadString(&model, std::min(length, kept)) ||
        (length > kept && !input.Skip(static_cast<int>(length - kept)))) {
      break;
    }
  }
  return model;
}

// A client-chosen value made safe for a text line: characters other than letters, digits and
// ._:/- become '_', so a value can neither break the line nor forge key=value pairs.
std::string TextField(const std::string& value) {
  std::string safe = value.empty() ? "-" : value;
  for (char& c : safe) {
    const bool allowed = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                         c == ':' || c == '/' || c == '-';
    if (!allowed) c = '_';
  }
  return safe;
}

// The client's x-request-id metadata (at most kMaxFieldLength characters) into `id`, when sent.
void ClientRequestId(const std::multimap<grpc::string_ref, grpc::string_ref>* metadata,
                     std::string& id) {
  if (metadata == nullptr) return;
  const auto it = metadata->find("x-request-id");
  if (it != metadata->end()) {
    id = std::string(it->second.data(), std::min(it->second.size(), kMaxFieldLength));
  }
}

class AccessLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  AccessLogInterceptor(AccessLog* log, grpc::experimental::ServerRpcInfo* info)
      : log_(log),
        info_(info),
        request_id_(log->NextRequestId()),
        start_(std::chrono::steady_clock::now()) {
    tsan_hand_off::Release(this);
  }
  ~AccessLogInterceptor() override { tsan_hand_off::Acquire(this); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    // gRPC runs one call's hooks one after another, on whichever thread moves the call on.
    tsan_hand_off::Acquire(this);
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      ClientRequestId(methods->GetRecvInitialMetadata(), request_id_);
    }
    if (!seen_message_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      seen_message_ = true;
      const absl::string_view method = info_->method() != nullptr ? info_->method() : "";
      // A unary method that gRPC sees as a stream is served through the generic API.
      const bool raw = info_->type() == grpc::experimental::ServerRpcInfo::Type::BIDI_STREAMING &&
                       method != "/attnserve.v1.AttentionService/Decode";
      model_ = raw ? ModelOfRawRequest(
                         method, static_cast<grpc::ByteBuffer*>(methods->GetRecvMessage()))
                   : ModelOfRequest(method, methods->GetRecvMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const double latency_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
              .count();
      log_->Write(request_id_, info_->method() != nullptr ? info_->method() : "", model_,
                  StatusCodeName(methods->GetSendStatus().error_code()), latency_ms,
                  info_->server_context()->peer());
    }
    tsan_hand_off::Release(this);
    methods->Proceed();
  }

 private:
  AccessLog* const log_;
  grpc::experimental::ServerRpcInfo* info_;
  std::string request_id_;
  std::string model_;
  bool seen_message_ = false;
  const std::chrono::steady_clock::time_point start_;
};

class RequestIdEcho final : public grpc::experimental::Interceptor {
 public:
  RequestIdEcho() { tsan_hand_off::Release(this); }
  ~RequestIdEcho() override { tsan_hand_off::Acquire(this); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    tsan_hand_off::Acquire(this);
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      ClientRequestId(methods->GetRecvInitialMetadata(), request_id_);
    }
    if (!request_id_.empty() && !echoed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("x-request-id", request_id_);
      echoed_ = true;
    }
    if (!request_id_.empty() && !echoed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      methods->GetSendTrailingMetadata()->emplace("x-request-id", request_id_);
      echoed_ = true;
    }
    tsan_hand_off::Release(this);
    methods->Proceed();
  }

 private:
  std::string request_id_;
  bool echoed_ = false;
};

class RequestIdEchoFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new RequestIdEcho();
  }
};

class AccessLogFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AccessLogFactory(AccessLog* log) : log_(log) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new AccessLogInterceptor(log_, info);
  }

 private:
  AccessLog* const log_;
};

}  // namespace

AccessLog::AccessLog(AccessLogFormat format)
    : format_(format),
      json_logger_(std::make_shared<spdlog::logger>(
          "access", std::make_shared<spdlog::sinks::stdout_sink_mt>())) {
  json_logger_->set_pattern("%v");
  json_logger_->flush_on(spdlog::level::info);
}

AccessLog::~AccessLog() = default;

void AccessLog::Write(absl::string_view request_id, absl::string_view method,
                      absl::string_view model, absl::string_view code, double latency_ms,
                      absl::string_view peer) const {
  if (format_ == AccessLogFormat::kJson) {
    // A whole JSON line of its own (not inside the server log's format).
    const nlohmann::json line = {{"time", LogTimestamp()},
                                 {"level", "info"},
                                 {"access", true},
                                 {"request_id", std::string(request_id)},
                                 {"method", std::string(method)},
                                 {"model", std::string(model)},
                                 {"code", std::string(code)},
                                 {"latency_ms", latency_ms},
                                 {"peer", std::string(peer)}};
    json_logger_->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    // The method is the client's :path (or HTTP target) too: any string for one not served.
    spdlog::info("access request_id={} method={} model={} code={} latency_ms={:.3f} peer={}",
                 TextField(std::string(request_id)), TextField(std::string(method)),
                 TextField(std::string(model)), std::string(code), latency_ms,
                 std::string(peer));
  }
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
CreateRequestIdEchoFactory() {
  return std::make_unique<RequestIdEchoFactory>();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateAccessLogFactory(
    AccessLog* log) {
  return std::make_unique<AccessLogFactory>(log);
}

}  // namespace attnserve
