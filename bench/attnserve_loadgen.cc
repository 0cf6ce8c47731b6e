// attnserve_loadgen: a load generator. `--concurrency` threads each send the next request as
// soon as the previous one answered (or, with --rate, when it is due), for `--duration_seconds`
// or `--requests` in all, then print a JSON summary as the last line:
//   {"rps":…, "tokens_per_s":…, "rate":…, "p50_ms":…, "p90_ms":…, "p99_ms":…, "requests":…,
//    "seconds":…, "client_cpu_seconds":…, "errors":{"CODE":count},
//    "sent":…, "codes":{"CODE":count}, "invalid_codes":{"CODE":count},
//    "rejected":…, "rejected_p50_ms":…, "rejected_p99_ms":…,
//    "messages":{"CODE: message":count}, "unexpected":…, "request_ids":{"CODE":[…]}}
// "client_cpu_seconds" is the CPU time this tool used during the run (all threads): on a machine
// it shares with the server, the server had that much less.
// rps, requests and the p*_ms latencies count requests that ended OK; "errors" counts every other
// outcome by code. "codes" are the outcomes of valid requests (OK included) and "invalid_codes"
// those of the deliberately malformed ones (--invalid_fraction). "rejected*" are the valid
// requests that did not end OK (under overload: RESOURCE_EXHAUSTED) and their latency;
// "messages" the status messages of everything that did not end OK (the first 32 distinct ones).
// With --request_id_prefix every request carries an x-request-id, and "request_ids" lists those
// that did not end OK, so they can be looked up in the server's access log (did the server ever
// begin this call?).
//
// --rpc takes a comma-separated mix (attend, encode, sdpa, decode); each thread cycles through it.
// decode: each thread keeps a Decode stream open and a request is one step of --tokens_per_step
// tokens on it (its latency: the step's answer); after --steps_per_stream steps the stream ends
// and the thread's next step opens a new one (on --model; the first step of each stream names
// it). "tokens_per_s" counts the query tokens of the requests that ended OK, every RPC alike.
//
// With --rate the load is open-loop: requests are due at a fixed rate (evenly spaced) whatever
// the answers, each sent by the first of the --concurrency threads free at its time, and its
// latency counts from when it was due (so a server falling behind shows as latency, not as a
// slower client); --concurrency bounds the requests in flight, so make it large enough. Without
// --rate each thread sends its next request as soon as the previous one answered.
//
// With
// --invalid_fraction, that share of the requests is malformed on purpose — an unknown model
// (NOT_FOUND) or a tensor of the wrong shape (INVALID_ARGUMENT) — and must end with that code.
// With --expect_codes=OK,RESOURCE_EXHAUSTED (for example), every valid request must end with one
// of those codes and every malformed one with its own code or one of those other than OK;
// otherwise "unexpected" counts it and the tool exits with status 3 after the summary.
//
// --protocol picks the door for --rpc=attend: attnserve (attnserve.v1 Attend, the default),
// kserve-grpc (inference.GRPCInferenceService/ModelInfer on the model, raw contents) or
// kserve-http (POST /v2/models/<model>/infer on --http_target, plaintext, one keep-alive
// connection per thread; the tensors as binary data, or as JSON numbers with --http_body=json).
// HTTP statuses are counted under the gRPC code of the same meaning (200 OK, 400
// INVALID_ARGUMENT, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504
// DEADLINE_EXCEEDED, 401 UNAUTHENTICATED, others UNKNOWN), and an answer is read whole but not
// parsed.
//
// With --in_process the same Attend computation runs on the core directly (no gRPC, no
// serialisation), so the difference is the service's overhead (docs/performance.md).
//
// A unary request is serialised once, before the run, and sent as those bytes every time; its
// answer's bytes are received and not parsed: only its status counts, so an answer that would
// not parse is not noticed. On a machine the tool shares with the server, the CPU it does not
// spend on copies is the server's.
//
//   attnserve_loadgen --target=127.0.0.1:50051 --rpc=attend --model=demo-sinusoidal
//                     --batch=1 --seq=128 --concurrency=16 --duration_seconds=10
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <limits>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http.hpp"
#include "inference/grpc_predict_v2.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "nlohmann/json.hpp"
#include "server/observability/metrics.h"
#include "server/models/model_registry.h"
#include "core/base/status_macros.h"
#include "server/rpc/tensor_codec.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "host:port of the attnserve gRPC endpoint");
ABSL_FLAG(std::string, rpc, "attend",
          "attend, encode, sdpa or decode, or a comma-separated mix of them (each thread cycles "
          "through the mix)");
ABSL_FLAG(std::string, model, "demo-sinusoidal", "model for attend and decode (built-in demo "
                                                 "names for --in_process)");
ABSL_FLAG(int64_t, batch, 1, "batch of each request");
ABSL_FLAG(int64_t, seq, 128, "tokens per sequence");
ABSL_FLAG(int64_t, d_model, 0, "embedding width for encode (attend uses the model's); 0 = 512");
ABSL_FLAG(int64_t, heads, 8, "heads of sdpa's q, k and v [batch, heads, seq, head_dim]");
ABSL_FLAG(int64_t, head_dim, 64, "head_dim of sdpa's q, k and v");
ABSL_FLAG(bool, causal, false, "causal attention");
ABSL_FLAG(std::string, protocol, "attnserve",
          "door for --rpc=attend: attnserve (attnserve.v1 Attend), kserve-grpc (KServe v2 "
          "ModelInfer over gRPC) or kserve-http (KServe v2 over HTTP/REST on --http_target)");
ABSL_FLAG(std::string, http_target, "127.0.0.1:8000",
          "host:port of the KServe v2 REST door, for --protocol=kserve-http");
ABSL_FLAG(std::string, http_body, "binary",
          "--protocol=kserve-http: the tensors as binary data (binary) or JSON numbers (json)");
ABSL_FLAG(int32_t, concurrency, 1,
          "threads, each with one request in flight (closed loop; with --rate, the most requests "
          "in flight)");
ABSL_FLAG(double, rate, 0,
          "open loop: requests per second, due evenly spaced whatever the answers; latency counts "
          "from when a request was due. 0 = closed loop");
ABSL_FLAG(int64_t, tokens_per_step, 1, "decode: new tokens per step");
ABSL_FLAG(int64_t, steps_per_stream, 32,
          "decode: steps per stream; then the stream ends and the next step opens a new one");
ABSL_FLAG(double, duration_seconds, 5.0, "how long to run, if --requests is 0");
ABSL_FLAG(int64_t, requests, 0, "total requests to send (0 = run for --duration_seconds)");
ABSL_FLAG(double, timeout_seconds, 30.0, "deadline of each request");
ABSL_FLAG(double, invalid_fraction, 0.0,
          "share of requests (0..1, drawn at random) that are malformed on purpose: an unknown "
          "model (NOT_FOUND) or a tensor of the wrong shape (INVALID_ARGUMENT)");
ABSL_FLAG(std::string, expect_codes, "",
          "comma-separated gRPC codes (e.g. OK,RESOURCE_EXHAUSTED) that valid requests may end "
          "with; malformed ones may end with their own code or one of these other than OK. Any "
          "other outcome is counted as \"unexpected\" and the exit status is 3. Empty = no check");
ABSL_FLAG(std::string, request_id_prefix, "",
          "send each request with x-request-id PREFIX-THREAD-N (the server's access log shows "
          "it) and list the ids of requests that did not end OK in the summary's request_ids "
          "(the first 256 per code and thread)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM file of the CA of the server's certificate: connect with TLS");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate for mutual TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM key of --tls_cert_file");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token the server requires (sent as authorization metadata)");
ABSL_FLAG(bool, in_process, false,
          "run attend on the core in this process instead of calling the server");

namespace attnserve {
namespace {

using Clock = std::chrono::steady_clock;

// Distinct "CODE: message" keys kept per thread and in the summary; later ones are counted under
// "CODE: (other messages)".
constexpr size_t kMaxMessages = 32;
constexpr size_t kMaxMessageLength = 160;
// Request ids kept per code and thread (--request_id_prefix).
constexpr size_t kMaxRequestIds = 256;
constexpr char kUnknownModel[] = "no-such-model";

// One request of the chosen kind, sent with this x-request-id (none if empty); returns its gRPC
// status.
using RequestFn = std::function<grpc::Status(const std::string& request_id)>;

// A request, the code it must end with (OK for a valid one) and its query tokens.
struct Call {
  RequestFn send;
  grpc::StatusCode expected = grpc::StatusCode::OK;
  int64_t tokens = 0;
};

struct Calls {
  std::vector<Call> valid;
  std::vector<Call> invalid;
};

// What one thread saw.
struct Outcome {
  std::vector<double> ok_ms;        // latencies of requests that ended OK
  int64_t ok_tokens = 0;            // their query tokens
  std::vector<double> rejected_ms;  // of valid requests that did not
  std::map<std::string, int64_t> codes;          // of valid requests
  std::map<std::string, int64_t> invalid_codes;  // of malformed requests
  std::map<std::string, int64_t> messages;       // "CODE: message" of requests not OK
  std::map<std::string, std::vector<std::string>> request_ids;  // of requests not OK, by code
  int64_t unexpected = 0;
};

void CountMessage(const std::string& code, const std::string& message,
                  std::map<std::string, int64_t>& messages, int64_t count = 1) {
  std::string key = absl::StrCat(code, ": ", message.substr(0, kMaxMessageLength));
  if (messages.size() >= kMaxMessages && messages.count(key) == 0) {
    key = absl::StrCat(code, ": (other messages)");
  }
  messages[key] += count;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[index];
}

std::vector<float> RandomInput(int64_t count) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in || content.str().empty()) {
    return absl::InvalidArgumentError("--" + flag + "=" + path + " cannot be read or is empty");
  }
  return content.str();
}

// "OK,RESOURCE_EXHAUSTED" → those codes.
absl::StatusOr<std::vector<grpc::StatusCode>> ParseCodes(const std::string& list) {
  std::vector<grpc::StatusCode> codes;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    name = absl::StripAsciiWhitespace(name);
    bool found = false;
    for (int code = grpc::StatusCode::OK; code <= grpc::StatusCode::UNAUTHENTICATED; ++code) {
      if (StatusCodeName(static_cast<grpc::StatusCode>(code)) == name) {
        codes.push_back(static_cast<grpc::StatusCode>(code));
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("--expect_codes: \"", name, "\" is not a gRPC code name"));
    }
  }
  if (codes.empty() && !absl::StripAsciiWhitespace(list).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--expect_codes=\"", list, "\" names no code"));
  }
  return codes;
}

// The channel to --target: TLS when --tls_ca_file is given (mutual with --tls_cert_file), and no
// client-side cap on response sizes (the server has its own).
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateTargetChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (absl::GetFlag(FLAGS_tls_ca_file).empty() && !absl::GetFlag(FLAGS_tls_cert_file).empty()) {
    return absl::InvalidArgumentError("--tls_cert_file needs --tls_ca_file (mutual TLS is TLS)");
  }
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca_file); !ca.empty()) {
    grpc::SslCredentialsOptions options;
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadFile(ca, "tls_ca_file"));
    if (const std::string cert = absl::GetFlag(FLAGS_tls_cert_file); !cert.empty()) {
      ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFile(cert, "tls_cert_file"));
      ASSIGN_OR_RETURN(options.pem_private_key,
                       ReadFile(absl::GetFlag(FLAGS_tls_key_file), "tls_key_file"));
    }
    credentials = grpc::SslCredentials(options);
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials, args);
}

using Stub = v1::AttentionService::Stub;
// Sets a call's deadline, its x-request-id (unless empty) and, when there is one, its token.
using Prepare = std::function<void(grpc::ClientContext&, const std::string& request_id)>;

// A unary call of AttentionService's `method` (e.g. "Attend") with `request`, which must end with
// `expected`. The request is serialised here, once; each call sends those bytes (a ByteBuffer
// shares its slices when copied) and drops the answer's bytes unparsed. gRPC's blocking unary
// call on ByteBuffers is what the generated stubs call with their messages: no thread hand-off,
// unlike the generic stub's callback.
struct RawUnaryMethod {
  RawUnaryMethod(std::string method_name, std::shared_ptr<grpc::Channel> channel)
      : name(std::move(method_name)),
        method(name.c_str(), grpc::internal::RpcMethod::NORMAL_RPC, channel),
        channel(std::move(channel)) {}
  RawUnaryMethod(const RawUnaryMethod&) = delete;  // `method` points into this object's `name`
  RawUnaryMethod& operator=(const RawUnaryMethod&) = delete;
  const std::string name;  // "/package.Service/Method"; `method` points into it
  const grpc::internal::RpcMethod method;
  const std::shared_ptr<grpc::Channel> channel;
};

// "/attnserve.v1.AttentionService/<method>".
std::string V1Method(absl::string_view method) {
  return absl::StrCat("/", v1::AttentionService::service_full_name(), "/", method);
}
constexpr char kModelInfer[] = "/inference.GRPCInferenceService/ModelInfer";

// `method`: the full path, e.g. V1Method("Attend") or kModelInfer.
Call UnaryCall(std::shared_ptr<grpc::Channel> channel, Prepare prepare,
               const google::protobuf::Message& request, absl::string_view method,
               grpc::StatusCode expected = grpc::StatusCode::OK) {
  auto raw = std::make_shared<const RawUnaryMethod>(std::string(method), channel);
  auto bytes = std::make_shared<grpc::ByteBuffer>();
  bool own_buffer = false;
  if (!grpc::SerializationTraits<google::protobuf::Message>::Serialize(request, bytes.get(),
                                                                      &own_buffer)
           .ok()) {
    std::cerr << "serialising the " << method << " request failed\n";
    std::exit(2);
  }
  return Call{[raw, prepare, bytes](const std::string& request_id) {
                grpc::ClientContext context;
                prepare(context, request_id);
                grpc::ByteBuffer answer;
                return grpc::internal::BlockingUnaryCall(raw->channel.get(), raw->method,
                                                         &context, *bytes, &answer);
              },
              expected, absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_seq)};
}

// The calling thread's Decode stream: opened by the first step, ended after
// --steps_per_stream steps, when a step fails, or when the thread ends.
class ThreadDecodeStream {
 public:
  ~ThreadDecodeStream() { End(); }

  // One step: `step` (its model named only when the stream is new) sent on the thread's stream,
  // and its answer read.
  grpc::Status Step(Stub& stub, const Prepare& prepare, const std::string& request_id,
                    v1::DecodeRequest step, const std::string& model) {
    if (stream_ == nullptr) {
      context_ = std::make_unique<grpc::ClientContext>();
      prepare(*context_, request_id);
      // The stream's deadline covers all of its steps.
      context_->set_deadline(std::chrono::system_clock::now() +
                             std::chrono::microseconds(static_cast<int64_t>(
                                 absl::GetFlag(FLAGS_timeout_seconds) * 1e6 *
                                 absl::GetFlag(FLAGS_steps_per_stream))));
      stream_ = stub.Decode(context_.get());
      step.set_model(model);
    }
    v1::DecodeResponse response;
    if (!stream_->Write(step) || !stream_->Read(&response)) {
      grpc::Status status = End();
      return status.ok() ? grpc::Status(grpc::StatusCode::UNKNOWN, "the stream ended early")
                         : status;
    }
    if (++steps_ >= absl::GetFlag(FLAGS_steps_per_stream)) End();
    return grpc::Status::OK;
  }

 private:
  grpc::Status End() {
    if (stream_ == nullptr) return grpc::Status::OK;
    stream_->WritesDone();
    grpc::Status status = stream_->Finish();
    stream_.reset();
    context_.reset();
    steps_ = 0;
    return status;
  }

  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::DecodeRequest, v1::DecodeResponse>> stream_;
  int64_t steps_ = 0;
};

// A Decode step of --tokens_per_step tokens on the calling thread's stream.
Call DecodeCall(std::shared_ptr<Stub> stub, Prepare prepare, const std::string& model,
                int64_t d_model) {
  const int64_t tokens = absl::GetFlag(FLAGS_tokens_per_step);
  auto step = std::make_shared<v1::DecodeRequest>();
  EncodeFloatTensor({1, tokens, d_model}, RandomInput(tokens * d_model).data(), v1::FLOAT32,
                    step->mutable_query());
  return Call{[stub, prepare, step, model](const std::string& request_id) {
                thread_local ThreadDecodeStream stream;
                return stream.Step(*stub, prepare, request_id, *step, model);
              },
              grpc::StatusCode::OK, tokens};
}

// The config of --model, from the server.
absl::StatusOr<v1::ModelConfig> GetModelConfig(Stub& stub, const Prepare& prepare) {
  grpc::ClientContext context;
  prepare(context, "");
  v1::GetModelRequest get;
  get.set_name(absl::GetFlag(FLAGS_model));
  v1::GetModelResponse model;
  if (grpc::Status status = stub.GetModel(&context, get, &model); !status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        "GetModel: " + status.error_message());
  }
  return model.config();
}

// A KServe v2 ModelInfer request of `x` [batch, seq, d] on `model`, raw contents.
inference::ModelInferRequest KserveRequest(const std::string& model, int64_t batch, int64_t seq,
                                           int64_t d, const std::vector<float>& x) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t dim : {batch, seq, d}) input->add_shape(dim);
  request.add_raw_input_contents(reinterpret_cast<const char*>(x.data()),
                                 batch * seq * d * sizeof(float));
  (*request.mutable_parameters())["causal"].set_bool_param(absl::GetFlag(FLAGS_causal));
  return request;
}

// One REST inference request as bytes: its target, the header lines after the request line
// (without x-request-id) and its body.
struct HttpRequestBytes {
  std::string target;
  std::string headers;
  std::string body;
};

// POST /v2/models/<model>/infer of `x` [batch, seq, d]: binary tensor data both ways, or JSON.
HttpRequestBytes RestRequest(const std::string& model, int64_t batch, int64_t seq, int64_t d,
                             const std::vector<float>& x, const std::string& authorization) {
  const bool json = absl::GetFlag(FLAGS_http_body) == "json";
  const int64_t timeout_micros =
      static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_seconds) * 1e6);
  nlohmann::json input = {{"name", "input"}, {"datatype", "FP32"}, {"shape", {batch, seq, d}}};
  if (json) {
    input["data"] = x;
  } else {
    input["parameters"] = {{"binary_data_size", x.size() * sizeof(float)}};
  }
  const std::string header =
      nlohmann::json{{"inputs", {input}},
                     {"parameters",
                      {{"causal", absl::GetFlag(FLAGS_causal)},
                       {"binary_data_output", !json},
                       {"timeout", timeout_micros}}}}
          .dump();
  HttpRequestBytes request;
  request.target = absl::StrCat("/v2/models/", model, "/infer");
  request.body = header;
  if (!json) request.body.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
  request.headers = absl::StrCat("Host: ", absl::GetFlag(FLAGS_http_target), "\r\n",
                                 "Content-Type: ", json ? "application/json" : "application/octet-stream",
                                 "\r\nContent-Length: ", request.body.size(), "\r\n");
  if (!json) absl::StrAppend(&request.headers, "Inference-Header-Content-Length: ", header.size(), "\r\n");
  if (!authorization.empty()) absl::StrAppend(&request.headers, "Authorization: ", authorization, "\r\n");
  return request;
}

// The gRPC code an HTTP status stands for in the summary.
grpc::StatusCode CodeOfHttp(unsigned status) {
  switch (status) {
    case 200: return grpc::StatusCode::OK;
    case 400: return grpc::StatusCode::INVALID_ARGUMENT;
    case 401: return grpc::StatusCode::UNAUTHENTICATED;
    case 404: return grpc::StatusCode::NOT_FOUND;
    case 429: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 503: return grpc::StatusCode::UNAVAILABLE;
    case 504: return grpc::StatusCode::DEADLINE_EXCEEDED;
    default: return grpc::StatusCode::UNKNOWN;
  }
}

// The calling thread's keep-alive connection to --http_target, opened on first use and again
// after the server closes it.
// No client-side deadline: the request's `timeout` parameter bounds it at the server.
class ThreadHttpConnection {
 public:
  grpc::Status Post(const HttpRequestBytes& request, const std::string& request_id) {
    // A kept connection the server has closed meanwhile (idle past its read timeout) fails
    // before any answer: once more on a new one.
    const bool reused = socket_.is_open();
    grpc::Status status = PostOnce(request, request_id);
    if (reused && status.error_code() == grpc::StatusCode::UNAVAILABLE && !answered_) {
      status = PostOnce(request, request_id);
    }
    return status;
  }

 private:
  grpc::Status PostOnce(const HttpRequestBytes& request, const std::string& request_id) {
    namespace http = boost::beast::http;
    boost::beast::error_code error;
    answered_ = false;
    if (!socket_.is_open()) {
      const std::string target = absl::GetFlag(FLAGS_http_target);
      const size_t colon = target.rfind(':');
      std::string host = target.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      }
      boost::asio::ip::tcp::resolver resolver(io_);
      const auto endpoints = resolver.resolve(host, target.substr(colon + 1), error);
      if (!error) boost::asio::connect(socket_, endpoints, error);
      if (!error) socket_.set_option(boost::asio::ip::tcp::no_delay(true), error);
      if (error) return Failed("connecting to " + target, error);
    }
    std::string head = absl::StrCat("POST ", request.target, " HTTP/1.1\r\n", request.headers);
    if (!request_id.empty()) absl::StrAppend(&head, "x-request-id: ", request_id, "\r\n");
    head += "\r\n";
    const std::array<boost::asio::const_buffer, 2> message = {boost::asio::buffer(head),
                                                              boost::asio::buffer(request.body)};
    boost::asio::write(socket_, message, error);
    http::response_parser<http::string_body> parser;
    parser.body_limit(std::numeric_limits<uint64_t>::max());
    buffer_.reserve(1 << 20);  // Beast reads as much as there is room for, else 512 bytes a time
    if (!error) http::read(socket_, buffer_, parser, error);
    answered_ = parser.got_some();
    if (error) return Failed("the HTTP exchange", error);
    const http::response<http::string_body>& response = parser.get();
    if (!response.keep_alive()) socket_.close(error);
    const grpc::StatusCode code = CodeOfHttp(response.result_int());
    if (code == grpc::StatusCode::OK) return grpc::Status::OK;
    return grpc::Status(code, absl::StrCat("HTTP ", response.result_int(), ": ",
                                           response.body().substr(0, kMaxMessageLength)));
  }

  grpc::Status Failed(const std::string& what, const boost::beast::error_code& error) {
    boost::beast::error_code ignored;
    socket_.close(ignored);
    buffer_.clear();
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, what + ": " + error.message());
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_{io_};
  boost::beast::flat_buffer buffer_;
  bool answered_ = false;  // the last exchange received part of an answer
};

Call HttpCall(std::shared_ptr<const HttpRequestBytes> request,
              grpc::StatusCode expected = grpc::StatusCode::OK) {
  return Call{[request](const std::string& request_id) {
                thread_local ThreadHttpConnection connection;
                return connection.Post(*request, request_id);
              },
              expected, absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_seq)};
}

// Attend's valid request and its malformed variants through --protocol's door.
absl::Status AddAttendCalls(const v1::ModelConfig& model, std::shared_ptr<grpc::Channel> channel,
                            const Prepare& prepare, const std::string& authorization,
                            Calls& calls) {
  const int64_t batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  const int64_t d = model.d_model();
  const std::vector<float> x = RandomInput(batch * seq * d);
  const std::vector<float> wider = RandomInput(batch * seq * (d + 1));
  const std::string protocol = absl::GetFlag(FLAGS_protocol);
  if (protocol == "attnserve") {
    v1::AttendRequest request;
    request.set_model(model.name());
    request.set_causal(absl::GetFlag(FLAGS_causal));
    EncodeFloatTensor({batch, seq, d}, x.data(), v1::FLOAT32, request.mutable_query());
    v1::AttendRequest unknown_model = request;
    unknown_model.set_model(kUnknownModel);
    v1::AttendRequest wrong_width = request;
    EncodeFloatTensor({batch, seq, d + 1}, wider.data(), v1::FLOAT32,
                      wrong_width.mutable_query());
    calls.valid.push_back(UnaryCall(channel, prepare, request, V1Method("Attend")));
    calls.invalid.push_back(UnaryCall(channel, prepare, unknown_model, V1Method("Attend"),
                                      grpc::StatusCode::NOT_FOUND));
    calls.invalid.push_back(UnaryCall(channel, prepare, wrong_width, V1Method("Attend"),
                                      grpc::StatusCode::INVALID_ARGUMENT));
    return absl::OkStatus();
  }
  if (protocol == "kserve-grpc") {
    calls.valid.push_back(UnaryCall(channel, prepare,
                                    KserveRequest(model.name(), batch, seq, d, x), kModelInfer));
    calls.invalid.push_back(UnaryCall(channel, prepare,
                                      KserveRequest(kUnknownModel, batch, seq, d, x), kModelInfer,
                                      grpc::StatusCode::NOT_FOUND));
    calls.invalid.push_back(UnaryCall(channel, prepare,
                                      KserveRequest(model.name(), batch, seq, d + 1, wider),
                                      kModelInfer, grpc::StatusCode::INVALID_ARGUMENT));
    return absl::OkStatus();
  }
  if (protocol == "kserve-http") {
    const std::string body = absl::GetFlag(FLAGS_http_body);
    if (body != "binary" && body != "json") {
      return absl::InvalidArgumentError("--http_body=\"" + body + "\" must be binary or json");
    }
    const auto rest = [&](const std::string& name, int64_t width, const std::vector<float>& values) {
      return std::make_shared<const HttpRequestBytes>(
          RestRequest(name, batch, seq, width, values, authorization));
    };
    calls.valid.push_back(HttpCall(rest(model.name(), d, x)));
    calls.invalid.push_back(HttpCall(rest(kUnknownModel, d, x), grpc::StatusCode::NOT_FOUND));
    calls.invalid.push_back(
        HttpCall(rest(model.name(), d + 1, wider), grpc::StatusCode::INVALID_ARGUMENT));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("--protocol=\"" + protocol +
                                    "\" must be attnserve, kserve-grpc or kserve-http");
}

// The valid request of `rpc` and its malformed variants, appended to `calls`.
absl::Status AddRemoteCalls(const std::string& rpc, std::shared_ptr<grpc::Channel> channel,
                            std::shared_ptr<Stub> stub, const Prepare& prepare,
                            const std::string& authorization, Calls& calls) {
  const int64_t batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  if (rpc == "decode") {
    ASSIGN_OR_RETURN(const v1::ModelConfig model, GetModelConfig(*stub, prepare));
    calls.valid.push_back(DecodeCall(stub, prepare, model.name(), model.d_model()));
    return absl::OkStatus();
  }
  if (absl::GetFlag(FLAGS_protocol) != "attnserve" && rpc != "attend") {
    return absl::InvalidArgumentError("--protocol=" + absl::GetFlag(FLAGS_protocol) +
                                      " drives --rpc=attend only");
  }
  if (rpc == "attend") {
    ASSIGN_OR_RETURN(const v1::ModelConfig model, GetModelConfig(*stub, prepare));
    return AddAttendCalls(model, channel, prepare, authorization, calls);
  }
  if (rpc == "encode") {
    v1::EncodeRequest request;
    const int64_t d = absl::GetFlag(FLAGS_d_model) > 0 ? absl::GetFlag(FLAGS_d_model) : 512;
    request.mutable_encoding()->mutable_sinusoidal();
    const std::vector<float> x = RandomInput(batch * seq * d);
    EncodeFloatTensor({batch, seq, d}, x.data(), v1::FLOAT32, request.mutable_input());
    v1::EncodeRequest unknown_model = request;
    unknown_model.set_model(kUnknownModel);
    v1::EncodeRequest wrong_rank = request;
    EncodeFloatTensor({batch * seq, d}, x.data(), v1::FLOAT32, wrong_rank.mutable_input());
    calls.valid.push_back(UnaryCall(channel, prepare, request, V1Method("Encode")));
    calls.invalid.push_back(UnaryCall(channel, prepare, unknown_model, V1Method("Encode"),
                                      grpc::StatusCode::NOT_FOUND));
    calls.invalid.push_back(UnaryCall(channel, prepare, wrong_rank, V1Method("Encode"),
                                      grpc::StatusCode::INVALID_ARGUMENT));
    return absl::OkStatus();
  }
  if (rpc == "sdpa") {
    const int64_t heads = absl::GetFlag(FLAGS_heads), head_dim = absl::GetFlag(FLAGS_head_dim);
    v1::SdpaRequest request;
    request.set_causal(absl::GetFlag(FLAGS_causal));
    const std::vector<float> x = RandomInput(batch * heads * seq * head_dim);
    EncodeFloatTensor({batch, heads, seq, head_dim}, x.data(), v1::FLOAT32, request.mutable_q());
    *request.mutable_k() = request.q();
    *request.mutable_v() = request.q();
    // k's head_dim is one less than q's (its leading elements of x; k [.., seq, head_dim − 1]).
    v1::SdpaRequest mismatched = request;
    EncodeFloatTensor({batch, heads, seq, head_dim - 1}, x.data(), v1::FLOAT32,
                      mismatched.mutable_k());
    calls.valid.push_back(
        UnaryCall(channel, prepare, request, V1Method("ScaledDotProductAttention")));
    calls.invalid.push_back(UnaryCall(channel, prepare, mismatched,
                                      V1Method("ScaledDotProductAttention"),
                                      grpc::StatusCode::INVALID_ARGUMENT));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("--rpc: \"" + rpc +
                                    "\" must be attend, encode, sdpa or decode");
}

absl::StatusOr<Calls> RemoteCalls(std::shared_ptr<grpc::Channel> channel) {
  auto stub = std::shared_ptr<Stub>(v1::AttentionService::NewStub(channel));
  const double timeout = absl::GetFlag(FLAGS_timeout_seconds);
  std::string authorization;
  if (const std::string token_file = absl::GetFlag(FLAGS_token_file); !token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadFile(token_file, "token_file"));
    authorization = "Bearer " + std::string(absl::StripAsciiWhitespace(token));
  }
  const Prepare prepare = [timeout, authorization](grpc::ClientContext& context,
                                                    const std::string& request_id) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
    if (!request_id.empty()) context.AddMetadata("x-request-id", request_id);
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  };
  Calls calls;
  for (absl::string_view rpc : absl::StrSplit(absl::GetFlag(FLAGS_rpc), ',')) {
    RETURN_IF_ERROR(AddRemoteCalls(std::string(absl::StripAsciiWhitespace(rpc)), channel, stub,
                                   prepare, authorization, calls));
  }
  return calls;
}

// The core computation behind Attend, called directly on a demo model.
absl::StatusOr<Calls> InProcessCalls(std::shared_ptr<ModelRegistry> registry) {
  if (absl::GetFlag(FLAGS_rpc) != "attend" || absl::GetFlag(FLAGS_invalid_fraction) > 0) {
    return absl::InvalidArgumentError(
        "--in_process supports --rpc=attend without --invalid_fraction");
  }
  absl::StatusOr<const LoadedModel*> model = registry->Find(absl::GetFlag(FLAGS_model));
  if (!model.ok()) return model.status();
  const int64_t batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  const int64_t d = (*model)->layer->config().d_model;
  auto x = std::make_shared<std::vector<float>>(RandomInput(batch * seq * d));
  auto positions = std::make_shared<std::vector<int64_t>>(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i) (*positions)[i] = i % seq;
  const MultiHeadAttention* layer = (*model)->layer.get();
  const bool causal = absl::GetFlag(FLAGS_causal);
  Calls calls;
  calls.valid.push_back(Call{[registry, layer, x, positions, batch, seq, d, causal](
                                 const std::string&) {
    AttendInputs inputs;
    inputs.query = x->data();
    inputs.batch = batch;
    inputs.q_len = seq;
    inputs.positions = positions->data();
    inputs.causal = causal;
    std::vector<float> out(batch * seq * d);
    const absl::Status status = layer->Forward(inputs, out.data(), nullptr);
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                        std::string(status.message()));
  }, grpc::StatusCode::OK, batch * seq});
  return calls;
}

// CPU seconds this process has used so far (user + system, all threads).
double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

template <typename Map>
void MergeCounts(const Map& from, Map& into) {
  for (const auto& [key, count] : from) into[key] += count;
}

int Run() {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int64_t total_requests = absl::GetFlag(FLAGS_requests);
  const double invalid_fraction = absl::GetFlag(FLAGS_invalid_fraction);
  if (concurrency < 1) {
    std::cerr << "--concurrency must be >= 1\n";
    return 2;
  }
  if (!(absl::GetFlag(FLAGS_rate) >= 0) || absl::GetFlag(FLAGS_tokens_per_step) < 1 ||
      absl::GetFlag(FLAGS_steps_per_stream) < 1) {
    std::cerr << "--rate must be >= 0, --tokens_per_step and --steps_per_stream >= 1\n";
    return 2;
  }
  if (!(invalid_fraction >= 0 && invalid_fraction <= 1)) {
    std::cerr << "--invalid_fraction must be in [0, 1]\n";
    return 2;
  }
  const std::string id_prefix = absl::GetFlag(FLAGS_request_id_prefix);
  const std::string expect_flag = absl::GetFlag(FLAGS_expect_codes);
  const absl::StatusOr<std::vector<grpc::StatusCode>> expected_codes = ParseCodes(expect_flag);
  if (!expected_codes.ok()) {
    std::cerr << "attnserve_loadgen: " << expected_codes.status().message() << "\n";
    return 2;
  }
  // Whether a request that should end with `expected` (OK: a valid one) may end with `code`: a
  // valid one with any of --expect_codes, a malformed one with its own code or any of those but
  // OK.
  auto allowed = [&](grpc::StatusCode expected, grpc::StatusCode code) {
    if (expect_flag.empty()) return true;
    const bool listed = std::find(expected_codes->begin(), expected_codes->end(), code) !=
                        expected_codes->end();
    if (expected == grpc::StatusCode::OK) return listed;
    return code == expected || (listed && code != grpc::StatusCode::OK);
  };

  absl::StatusOr<Calls> calls;
  if (absl::GetFlag(FLAGS_in_process)) {
    calls = InProcessCalls(std::shared_ptr<ModelRegistry>(
        ModelRegistry::CreateWithDemoModels().value().release()));
  } else {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateTargetChannel();
    calls = channel.ok() ? RemoteCalls(*channel) : channel.status();
  }
  if (!calls.ok()) {
    std::cerr << "attnserve_loadgen: " << calls.status() << "\n";
    return 1;
  }
  // Warm-up: connection, primitive creation, table caches. On its own thread, so a Decode
  // stream it opens ends with it.
  std::thread([&] {
    for (const Call& call : calls->valid) call.send("");
  }).join();

  const double cpu_at_start = ProcessCpuSeconds();
  const auto start = Clock::now();
  const auto end = start + std::chrono::microseconds(
                               static_cast<int64_t>(absl::GetFlag(FLAGS_duration_seconds) * 1e6));
  std::atomic<int64_t> issued{0};
  const double rate = absl::GetFlag(FLAGS_rate);
  // When the next request is due: open loop, slot n at start + n / rate; closed loop, now. Null
  // when the run is over.
  auto next_due = [&]() -> std::optional<Clock::time_point> {
    const int64_t slot = issued.fetch_add(1);
    if (total_requests > 0 && slot >= total_requests) return std::nullopt;
    if (rate <= 0) {
      if (total_requests == 0 && Clock::now() >= end) return std::nullopt;
      return Clock::now();
    }
    const auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(slot * 1e9 / rate));
    if (total_requests == 0 && due >= end) return std::nullopt;
    std::this_thread::sleep_until(due);
    return due;
  };
  std::vector<Outcome> outcomes(concurrency);
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      Outcome& outcome = outcomes[t];
      std::mt19937 rng(t);
      std::bernoulli_distribution malformed(calls->invalid.empty() ? 0.0 : invalid_fraction);
      size_t next_valid = t, next_invalid = t;
      for (int64_t sequence = 0;; ++sequence) {
        const std::optional<Clock::time_point> due = next_due();
        if (!due.has_value()) break;
        const bool invalid = malformed(rng);
        const Call& call = invalid ? calls->invalid[next_invalid++ % calls->invalid.size()]
                                   : calls->valid[next_valid++ % calls->valid.size()];
        const std::string request_id =
            id_prefix.empty() ? "" : absl::StrCat(id_prefix, "-", t, "-", sequence);
        const grpc::Status status = call.send(request_id);
        const std::chrono::duration<double, std::milli> latency = Clock::now() - *due;
        const std::string code(StatusCodeName(status.error_code()));
        ++(invalid ? outcome.invalid_codes : outcome.codes)[code];
        if (!allowed(call.expected, status.error_code())) ++outcome.unexpected;
        if (status.ok()) {
          outcome.ok_ms.push_back(latency.count());
          outcome.ok_tokens += call.tokens;
          continue;
        }
        if (!invalid) outcome.rejected_ms.push_back(latency.count());
        CountMessage(code, status.error_message(), outcome.messages);
        if (!request_id.empty() && outcome.request_ids[code].size() < kMaxRequestIds) {
          outcome.request_ids[code].push_back(request_id);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::chrono::duration<double> elapsed = Clock::now() - start;
  const double cpu_seconds = ProcessCpuSeconds() - cpu_at_start;

  Outcome all;
  for (const Outcome& outcome : outcomes) {
    all.ok_ms.insert(all.ok_ms.end(), outcome.ok_ms.begin(), outcome.ok_ms.end());
    all.ok_tokens += outcome.ok_tokens;
    all.rejected_ms.insert(all.rejected_ms.end(), outcome.rejected_ms.begin(),
                           outcome.rejected_ms.end());
    MergeCounts(outcome.codes, all.codes);
    MergeCounts(outcome.invalid_codes, all.invalid_codes);
    for (const auto& [key, count] : outcome.messages) {
      const size_t colon = key.find(": ");
      CountMessage(key.substr(0, colon), key.substr(colon + 2), all.messages, count);
    }
    all.unexpected += outcome.unexpected;
    for (const auto& [code, ids] : outcome.request_ids) {
      std::vector<std::string>& kept = all.request_ids[code];
      kept.insert(kept.end(), ids.begin(), ids.end());
    }
  }
  std::sort(all.ok_ms.begin(), all.ok_ms.end());
  std::sort(all.rejected_ms.begin(), all.rejected_ms.end());
  std::map<std::string, int64_t> errors;
  int64_t sent = 0;
  for (const auto* counts : {&all.codes, &all.invalid_codes}) {
    for (const auto& [code, count] : *counts) {
      sent += count;
      if (code != "OK") errors[code] += count;
    }
  }
  nlohmann::json summary = {
      {"rps", static_cast<double>(all.ok_ms.size()) / elapsed.count()},
      {"tokens_per_s", static_cast<double>(all.ok_tokens) / elapsed.count()},
      {"rate", rate},
      {"p50_ms", Percentile(all.ok_ms, 0.50)},
      {"p90_ms", Percentile(all.ok_ms, 0.90)},
      {"p99_ms", Percentile(all.ok_ms, 0.99)},
      {"requests", static_cast<int64_t>(all.ok_ms.size())},
      {"errors", errors},
      {"sent", sent},
      {"seconds", elapsed.count()},
      {"client_cpu_seconds", cpu_seconds},
      {"codes", all.codes},
      {"invalid_codes", all.invalid_codes},
      {"rejected", static_cast<int64_t>(all.rejected_ms.size())},
      {"rejected_p50_ms", Percentile(all.rejected_ms, 0.50)},
      {"rejected_p99_ms", Percentile(all.rejected_ms, 0.99)},
      {"messages", all.messages},
      {"unexpected", all.unexpected},
  };
  if (!id_prefix.empty()) summary["request_ids"] = all.request_ids;
  std::cout << summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  if (all.unexpected > 0) {
    std::cerr << "attnserve_loadgen: " << all.unexpected
              << " requests ended with a code outside --expect_codes=" << expect_flag << "\n";
    return 3;
  }
  return 0;
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Closed-loop load generator for attnserve; prints a JSON summary.");
  absl::ParseCommandLine(argc, argv);
  return attnserve::Run();
}
