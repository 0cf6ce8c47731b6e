#include "server/kserve/http_door.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/base/status_macros.h"
#include "server/console/console_api.h"
#include "server/console/console_files.h"
#include "server/kserve/model_infer.h"
#include "server/kserve/rest_codec.h"
#include "server/rpc/status_util.h"

namespace attnserve {
namespace {

namespace http = boost::beast::http;

constexpr char kJson[] = "application/json";
constexpr char kInferenceHeaderLength[] = "Inference-Header-Content-Length";
constexpr size_t kMaxRequestIdLength = 64;  // and model names, in the access log
constexpr size_t kMaxLoggedTarget = 256;
constexpr absl::string_view kConsoleModels = "/console/api/models";
constexpr absl::string_view kConsoleMetrics = "/console/api/metrics";
// Under the console's shortest refresh (0.25 s), so every refresh sees a new collection.
constexpr std::chrono::milliseconds kMetricsRefreshInterval{200};
// The console's pages load their scripts, styles and data from this server only (images also
// from data: URLs, the page's empty icon), run no inline script or style, and cannot be framed.
constexpr char kConsoleSecurityPolicy[] =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'";

// A route's target: /v2/models/{model}[/versions/{version}][/{action}], action "" (metadata),
// "ready" or "infer".
struct ModelTarget {
  std::string model;
  std::string version;
  std::string action;
};

// A path segment with its %XX escapes decoded; nullopt for a malformed escape.
std::optional<std::string> Unescaped(absl::string_view segment) {
  std::string out;
  for (size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      out += segment[i];
      continue;
    }
    if (i + 2 >= segment.size() || !absl::ascii_isxdigit(segment[i + 1]) ||
        !absl::ascii_isxdigit(segment[i + 2])) {
      return std::nullopt;
    }
    int value = 0;
    absl::SimpleHexAtoi(segment.substr(i + 1, 2), &value);
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

std::optional<ModelTarget> ParseModelTarget(absl::string_view path) {
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  // "", "v2", "models", model, ...
  if (parts.size() < 4 || parts[1] != "v2" || parts[2] != "models" || parts[3].empty()) {
    return std::nullopt;
  }
  const std::optional<std::string> model = Unescaped(parts[3]);
  if (!model.has_value()) return std::nullopt;
  ModelTarget target{*model, "", ""};
  size_t next = 4;
  if (parts.size() >= 6 && parts[4] == "versions") {
    const std::optional<std::string> version = Unescaped(parts[5]);
    if (!version.has_value()) return std::nullopt;
    target.version = *version;
    next = 6;
  }
  if (parts.size() == next + 1 && (parts[next] == "ready" || parts[next] == "infer")) {
    target.action = std::string(parts[next]);
  } else if (parts.size() != next) {
    return std::nullopt;
  }
  return target;
}

// The route's template, for metrics: a bounded label set whatever the client asks for.
// `console`: whether the console's routes are served (else they are "other").
std::string RouteLabel(absl::string_view path, const std::optional<ModelTarget>& model,
                       bool console) {
  if (path == "/v2/health/live" || path == "/v2/health/ready" || path == "/v2") {
    return std::string(path);
  }
  if (console && (path == "/" || path == kConsoleModels || path == kConsoleMetrics)) {
    return std::string(path);
  }
  if (console && FindConsoleFile(path) != nullptr) return "/console/{file}";
  if (!model.has_value()) return "other";
  return model->action.empty() ? "/v2/models/{model}" : absl::StrCat("/v2/models/{model}/", model->action);
}

// The request's path: its target without the query.
absl::string_view PathOf(const HttpRequestHead& head) {
  const absl::string_view target(head.target().data(), head.target().size());
  return target.substr(0, target.find('?'));
}

// The client's x-request-id (at most kMaxRequestIdLength characters), echoed on the response.
std::string RequestId(const HttpRequestHead& head) {
  const auto it = head.find("x-request-id");
  if (it == head.end()) return "";
  const absl::string_view id(it->value().data(), it->value().size());
  return std::string(id.substr(0, kMaxRequestIdLength));
}

HttpResponse JsonResponse(unsigned status, std::string body) {
  HttpResponse response(static_cast<http::status>(status), 11);
  response.set(http::field::content_type, kJson);
  response.body() = std::move(body);
  return response;
}

// A console file, read again by the browser whenever the server was updated (no-cache revalidates;
// the files are small).
HttpResponse ConsoleFileResponse(const ConsoleFile& file) {
  HttpResponse response(http::status::ok, 11);
  response.set(http::field::content_type, std::string(ContentTypeOf(file.name)));
  response.set(http::field::cache_control, "no-cache");
  response.set("content-security-policy", kConsoleSecurityPolicy);
  response.set("x-content-type-options", "nosniff");
  response.body() = std::string(file.bytes);
  return response;
}

HttpResponse ErrorResponse(const absl::Status& status) {
  HttpResponse response = JsonResponse(HttpStatusOf(status.code()), ErrorJson(status.message()));
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    response.set(http::field::www_authenticate, "Bearer");
  }

  if (status.code() == absl::StatusCode::kResourceExhausted ||
      status.code() == absl::StatusCode::kUnavailable) {
    response.set(http::field::retry_after, "1");
  }
  return response;
}

// What reading and parsing a body holds, from above: the body itself; for its JSON part the
// numbers as doubles, then as floats (a number takes at least 2 characters: 8 + 4 bytes for 2);
// binary data is viewed in the body and widened to float32 (twice a 16-bit tensor's bytes).
int64_t BodyHoldBytes(int64_t length, std::optional<int64_t> json_length) {
  const int64_t json = std::clamp<int64_t>(json_length.value_or(length), 0, length);
  return length + 6 * json + 2 * (length - json);
}

}  // namespace

unsigned HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;  // the client closed the request (nginx's code; it is not there to read it)
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

// One inference request: admitted and its body's memory reserved before the body is read, then
// parsed, computed and answered on a request thread. Holds its admission and memory until the
// response is handed to the transport.
class HttpDoor::InferCall final : public std::enable_shared_from_this<InferCall> {
 public:
  InferCall(HttpDoor* door, std::shared_ptr<HttpExchange> exchange, ModelTarget target,
            Answering answering)
      : door_(door),
        exchange_(std::move(exchange)),
        target_(std::move(target)),
        answering_(std::move(answering)),
        memory_(door->service_->memory_budget()),
        started_(std::chrono::system_clock::now()) {}
  ~InferCall() {
    if (admitted_) door_->service_->EndCall();
  }

  void Start() {
    AttentionServiceImpl& service = *door_->service_;
    if (absl::Status admitted = service.AdmitCall(); !admitted.ok()) return Fail(admitted);
    admitted_ = true;
    if (absl::Status length = ReadJsonLength(); !length.ok()) return Fail(length);
    const int64_t hold = BodyHoldBytes(exchange_->content_length(), json_length_);
    if (hold > service.memory_budget()->max_bytes()) {
      // It could never fit: no use retrying.
      HttpResponse response = ErrorResponse(absl::InvalidArgumentError(absl::StrCat(
          "parsing this body would hold ", hold, " bytes, past the whole memory budget "
          "(--max_request_memory_bytes=", service.memory_budget()->max_bytes(),
          "); send the tensors as binary data (docs/kserve.md)")));
      response.result(http::status::payload_too_large);
      return door_->Answer(*exchange_, answering_, std::move(response));
    }
    if (absl::Status reserved = service.ReserveMemory(memory_, hold); !reserved.ok()) {
      return Fail(reserved);
    }
    exchange_->ReadBody([self = shared_from_this()](absl::StatusOr<std::string> body) {
      if (!body.ok()) {
        // The connection is closed: nobody to answer, but the request is counted and logged
        // (408 when the body was too slow, 499 when the client went away).
        const unsigned code = body.status().code() == absl::StatusCode::kDeadlineExceeded ? 408 : 499;
        return self->door_->Record(*self->exchange_, self->answering_, code);
      }
      self->body_ = *std::move(body);
      if (absl::Status scheduled = self->door_->service_->ScheduleBody([self] { self->Run(); });
          !scheduled.ok()) {
        self->Fail(scheduled);
      }
    });
  }

 private:
  absl::Status ReadJsonLength() {
    const auto it = exchange_->head().find(kInferenceHeaderLength);
    if (it == exchange_->head().end()) return absl::OkStatus();
    int64_t length = 0;
    const absl::string_view value(it->value().data(), it->value().size());
    if (!absl::SimpleAtoi(value, &length) || length < 0 || length > exchange_->content_length()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kInferenceHeaderLength, "=", value.substr(0, 32),
                       " must be a byte count in [0, ", exchange_->content_length(), "]"));
    }
    json_length_ = length;
    return absl::OkStatus();
  }

  void Run() {
    HttpResponse response;
    const grpc::Status status = ServeRpc("ModelInfer", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(RestInferRequest parsed, ParseInferRequest(body_, json_length_,
                                                                  target_.model, target_.version));
      AttentionServiceImpl::CallControl control;
      if (parsed.options.timeout_micros.has_value()) {
        control.deadline = started_ + std::chrono::microseconds(*parsed.options.timeout_micros);
      }
      control.is_cancelled = [exchange = exchange_.get()] { return exchange->client_gone(); };
      InferResponse result;
      RETURN_IF_ERROR(door_->service_->ServeUnary(
          control, "ModelInfer", /*batched=*/true, memory_, target_.model,
          [&](const RequestContext& context, const ModelRegistry& models) {
            return RunModelInfer(context, models, parsed.request, &result);
          }));
      std::string().swap(body_);
      const int64_t hold = ResponseHoldBytes(result, parsed.request, parsed.options);
      if (hold > door_->service_->limits().max_response_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the response would take up to ", hold, " bytes as JSON, past --max_message_bytes=",
            door_->service_->limits().max_response_bytes,
            "; ask for the outputs as binary data (parameters.binary_data_output)"));
      }
      RETURN_IF_ERROR(door_->service_->ReserveMemory(memory_, hold));
      RestBody out = WriteInferResponse(result, parsed.request, parsed.options);
      response = JsonResponse(200, std::move(out.bytes));
      if (out.json_length.has_value()) {
        response.set(http::field::content_type, "application/octet-stream");
        response.set(kInferenceHeaderLength, std::to_string(*out.json_length));
      }
      return absl::OkStatus();
    });
    if (!status.ok()) {
      return Fail(absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                               status.error_message()));
    }
    door_->Answer(*exchange_, answering_, std::move(response));
  }

  void Fail(const absl::Status& status) {
    door_->Answer(*exchange_, answering_, ErrorResponse(status));
  }

  HttpDoor* const door_;
  const std::shared_ptr<HttpExchange> exchange_;
  const ModelTarget target_;
  const Answering answering_;
  MemoryHold memory_;
  const std::chrono::system_clock::time_point started_;
  bool admitted_ = false;
  std::optional<int64_t> json_length_;
  std::string body_;
};

HttpDoor::HttpDoor(AttentionServiceImpl* service, const ModelStore* models,
                   const Secrets* secrets, Options options)
    : service_(service), models_(models), secrets_(secrets), options_(std::move(options)) {}

void HttpDoor::Answer(HttpExchange& exchange, const Answering& answering,
                      HttpResponse response) const {
  if (!answering.request_id.empty()) response.set("x-request-id", answering.request_id);
  Record(exchange, answering, response.result_int());
  exchange.Respond(std::move(response));
}

void HttpDoor::Refused(const HttpExchange& exchange, unsigned code) const {
  Record(exchange, StartAnswering(exchange.head()), code);
}

HttpDoor::Answering HttpDoor::StartAnswering(const HttpRequestHead& head) const {
  const absl::string_view path = PathOf(head);
  const std::optional<ModelTarget> model = ParseModelTarget(path);
  return Answering{RouteLabel(path, model, options_.console_metrics != nullptr), RequestId(head),
                   model.has_value() ? model->model.substr(0, kMaxRequestIdLength) : "",
                   std::chrono::steady_clock::now()};
}

void HttpDoor::Record(const HttpExchange& exchange, const Answering& answering,
                      unsigned code) const {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - answering.start).count();
  const HttpRequestHead& head = exchange.head();
  const http::verb verb = head.method();
  if (options_.metrics != nullptr) {
    options_.metrics->RecordHttp(answering.route,
                                 verb == http::verb::get    ? "GET"
                                 : verb == http::verb::post ? "POST"
                                                            : "other",
                                 code, seconds);
  }
  if (options_.access_log != nullptr) {
    const absl::string_view target(head.target().data(),
                                   std::min<size_t>(head.target().size(), kMaxLoggedTarget));
    options_.access_log->Write(
        answering.request_id.empty() ? options_.access_log->NextRequestId()
                                     : answering.request_id,
        absl::StrCat(std::string(head.method_string()), " ", target), answering.model,
        std::to_string(code), seconds * 1000, exchange.peer());
  }
}

absl::StatusOr<std::string> HttpDoor::ConsoleApi(absl::string_view path) const {
  if (path == kConsoleModels) {
    return ConsoleModelsJson(*models_->Current(), options_.server_version,
                             service_->draining());
  }
  if (path == kConsoleMetrics) return MetricsJsonAtMostEvery();
  return absl::NotFoundError(absl::StrCat("no route ", path.substr(0, kMaxLoggedTarget)));
}

std::string HttpDoor::MetricsJsonAtMostEvery() const {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(metrics_mutex_);
  if (metrics_json_.empty() || now - metrics_collected_ >= kMetricsRefreshInterval) {
    const std::chrono::duration<double> unix_time =
        std::chrono::system_clock::now().time_since_epoch();
    const std::chrono::duration<double> monotonic = now.time_since_epoch();
    metrics_json_ =
        MetricsJson(options_.console_metrics->Collect(), unix_time.count(), monotonic.count());
    metrics_collected_ = now;
  }
  return metrics_json_;
}

void HttpDoor::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequestHead& head = exchange->head();
  const absl::string_view path = PathOf(head);
  const std::optional<ModelTarget> model = ParseModelTarget(path);
  Answering answering = StartAnswering(head);
  const bool get = head.method() == http::verb::get;
  const auto respond = [&](HttpResponse response) {
    Answer(*exchange, answering, std::move(response));
  };
  const auto fail = [&](const absl::Status& status) { respond(ErrorResponse(status)); };
  const auto wrong_method = [&](absl::string_view allowed) {
    HttpResponse response = JsonResponse(
        405, ErrorJson(absl::StrCat(std::string(head.method_string()), " ", path,
                                    " is not served; use ", allowed)));
    response.set(http::field::allow, std::string(allowed));
    respond(std::move(response));
  };

  // Health stays open to probes, as on the gRPC port.
  if (path == "/v2/health/live") {
    if (!get) return wrong_method("GET");
    return respond(JsonResponse(200, R"({"live":true})"));
  }
  if (path == "/v2/health/ready") {
    if (!get) return wrong_method("GET");
    return respond(service_->draining() ? JsonResponse(503, R"({"ready":false})")
                                        : JsonResponse(200, R"({"ready":true})"));
  }
  // The console's files hold no data: a browser loads them before it is asked for a token.
  if (const ConsoleFile* file = FindConsoleFile(path);
      file != nullptr && options_.console_metrics != nullptr) {
    if (!get) return wrong_method("GET");
    return respond(ConsoleFileResponse(*file));
  }
  if (secrets_->tokens_required()) {
    const auto it = head.find(http::field::authorization);
    if (it == head.end()) {
      return fail(absl::UnauthenticatedError(
          "this server needs an Authorization: Bearer <token> header"));
    }
    const absl::Status token =
        secrets_->CheckToken(absl::string_view(it->value().data(), it->value().size()));
    if (!token.ok()) {
      // Not one of the server's tokens: 401 too, as RFC 6750 has it, saying why.
      HttpResponse response = ErrorResponse(token);
      response.set(http::field::www_authenticate, "Bearer error=\"invalid_token\"");
      return respond(std::move(response));
    }
  }
  if (path == "/v2") {
    if (!get) return wrong_method("GET");
    return respond(JsonResponse(200, ServerMetadataJson(options_.server_version)));
  }
  if (options_.console_metrics != nullptr && absl::StartsWith(path, "/console/api/")) {
    if (!get) return wrong_method("GET");
    absl::StatusOr<std::string> json = ConsoleApi(path);
    if (!json.ok()) return fail(json.status());
    HttpResponse response = JsonResponse(200, *std::move(json));
    response.set(http::field::cache_control, "no-store");
    return respond(std::move(response));
  }
  if (!model.has_value()) {
    return fail(absl::NotFoundError(absl::StrCat("no route ", path.substr(0, kMaxLoggedTarget))));
  }
  if (model->action == "infer") {
    if (head.method() != http::verb::post) return wrong_method("POST");
    std::make_shared<InferCall>(this, std::move(exchange), *model, std::move(answering))->Start();
    return;
  }
  if (!get) return wrong_method("GET");
  const std::shared_ptr<const ModelRegistry> models = models_->Current();
  if (model->action == "ready") {
    const absl::StatusOr<const LoadedModel*> found =
        FindVersion(*models, model->model, model->version);
    if (!found.ok()) return fail(found.status());
    if (service_->draining()) {
      return fail(absl::UnavailableError("the server is draining (shutting down)"));
    }
    return respond(JsonResponse(200, ModelReadyJson(model->model)));
  }
  const absl::StatusOr<ModelMetadata> metadata =
      FindModelMetadata(*models, model->model, model->version);
  if (!metadata.ok()) return fail(metadata.status());
  respond(JsonResponse(200, ModelMetadataJson(*metadata)));
}

}  // namespace attnserve
