// attnserve_loadgen: a closed-loop load generator. `--concurrency` threads each send the next
// request as soon as the previous one answered, for `--duration_seconds` or `--requests` in all,
// then print a JSON summary as the last line:
//   {"rps":…, "p50_ms":…, "p90_ms":…, "p99_ms":…, "requests":…, "errors":{"CODE":count}}
// With --in_process the same Attend computation runs on the core directly (no gRPC, no
// serialisation), so the difference is the service's overhead (docs/performance.md).
//
//   attnserve_loadgen --target=127.0.0.1:50051 --rpc=attend --model=demo-sinusoidal
//                     --batch=1 --seq=128 --concurrency=16 --duration_seconds=10
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/status_macros.h"
#include "server/tensor_codec.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "host:port of the attnserve gRPC endpoint");
ABSL_FLAG(std::string, rpc, "attend", "attend or encode");
ABSL_FLAG(std::string, model, "demo-sinusoidal", "model for attend (built-in demo names for "
                                                 "--in_process)");
ABSL_FLAG(int64_t, batch, 1, "batch of each request");
ABSL_FLAG(int64_t, seq, 128, "tokens per sequence");
ABSL_FLAG(int64_t, d_model, 0, "embedding width for encode (attend uses the model's); 0 = 512");
ABSL_FLAG(bool, causal, false, "causal attention");
ABSL_FLAG(int32_t, concurrency, 1, "requests in flight (one per thread, closed loop)");
ABSL_FLAG(double, duration_seconds, 5.0, "how long to run, if --requests is 0");
ABSL_FLAG(int64_t, requests, 0, "total requests to send (0 = run for --duration_seconds)");
ABSL_FLAG(double, timeout_seconds, 30.0, "deadline of each request");
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

struct Outcome {
  std::vector<double> latencies_ms;  // of successful requests
  std::map<std::string, int64_t> errors;
};

double Percentile(std::vector<double>& sorted, double p) {
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

// One request of the chosen kind; returns its gRPC code.
using RequestFn = std::function<grpc::StatusCode()>;

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in || content.str().empty()) {
    return absl::InvalidArgumentError("--" + flag + "=" + path + " cannot be read or is empty");
  }
  return content.str();
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

absl::StatusOr<RequestFn> RemoteRequest(std::shared_ptr<grpc::Channel> channel) {
  auto stub = std::shared_ptr<v1::AttentionService::Stub>(v1::AttentionService::NewStub(channel));
  const std::string rpc = absl::GetFlag(FLAGS_rpc);
  const int64_t batch = absl::GetFlag(FLAGS_batch), seq = absl::GetFlag(FLAGS_seq);
  const double timeout = absl::GetFlag(FLAGS_timeout_seconds);
  std::string authorization;
  if (const std::string token_file = absl::GetFlag(FLAGS_token_file); !token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadFile(token_file, "token_file"));
    authorization = "Bearer " + std::string(absl::StripAsciiWhitespace(token));
  }
  // Every call: its deadline, and the token when there is one.
  auto prepare = [timeout, authorization](grpc::ClientContext& context) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  };
  if (rpc == "attend") {
    grpc::ClientContext context;
    prepare(context);
    v1::GetModelRequest get;
    get.set_name(absl::GetFlag(FLAGS_model));
    v1::GetModelResponse model;
    if (grpc::Status status = stub->GetModel(&context, get, &model); !status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          "GetModel: " + status.error_message());
    }
    auto request = std::make_shared<v1::AttendRequest>();
    request->set_model(get.name());
    request->set_causal(absl::GetFlag(FLAGS_causal));
    const int64_t d = model.config().d_model();
    const std::vector<float> x = RandomInput(batch * seq * d);
    EncodeFloatTensor({batch, seq, d}, x.data(), v1::FLOAT32, request->mutable_query());
    return RequestFn([stub, request, prepare] {
      grpc::ClientContext context;
      prepare(context);
      v1::AttendResponse response;
      return stub->Attend(&context, *request, &response).error_code();
    });
  }
  if (rpc == "encode") {
    auto request = std::make_shared<v1::EncodeRequest>();
    const int64_t d = absl::GetFlag(FLAGS_d_model) > 0 ? absl::GetFlag(FLAGS_d_model) : 512;
    request->mutable_encoding()->mutable_sinusoidal();
    const std::vector<float> x = RandomInput(batch * seq * d);
    EncodeFloatTensor({batch, seq, d}, x.data(), v1::FLOAT32, request->mutable_input());
    return RequestFn([stub, request, prepare] {
      grpc::ClientContext context;
      prepare(context);
      v1::EncodeResponse response;
      return stub->Encode(&context, *request, &response).error_code();
    });
  }
  return absl::InvalidArgumentError("--rpc=" + rpc + " must be attend or encode");
}

// The core computation behind Attend, called directly on a demo model.
absl::StatusOr<RequestFn> InProcessRequest(std::shared_ptr<ModelRegistry> registry) {
  if (absl::GetFlag(FLAGS_rpc) != "attend") {
    return absl::InvalidArgumentError("--in_process supports --rpc=attend");
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
  return RequestFn([registry, layer, x, positions, batch, seq, d, causal] {
    AttendInputs inputs;
    inputs.query = x->data();
    inputs.batch = batch;
    inputs.q_len = seq;
    inputs.positions = positions->data();
    inputs.causal = causal;
    std::vector<float> out(batch * seq * d);
    return static_cast<grpc::StatusCode>(layer->Forward(inputs, out.data(), nullptr).code());
  });
}

int Run() {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int64_t total_requests = absl::GetFlag(FLAGS_requests);
  if (concurrency < 1) {
    std::cerr << "--concurrency must be >= 1\n";
    return 2;
  }
  absl::StatusOr<RequestFn> request;
  if (absl::GetFlag(FLAGS_in_process)) {
    request = InProcessRequest(std::shared_ptr<ModelRegistry>(
        ModelRegistry::CreateWithDemoModels().value().release()));
  } else {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateTargetChannel();
    request = channel.ok() ? RemoteRequest(*channel) : channel.status();
  }
  if (!request.ok()) {
    std::cerr << "attnserve_loadgen: " << request.status() << "\n";
    return 1;
  }
  (*request)();  // warm-up: connection, primitive creation, table caches

  const auto start = Clock::now();
  const auto end = start + std::chrono::microseconds(
                               static_cast<int64_t>(absl::GetFlag(FLAGS_duration_seconds) * 1e6));
  std::atomic<int64_t> issued{0};
  std::vector<Outcome> outcomes(concurrency);
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      Outcome& outcome = outcomes[t];
      while (true) {
        if (total_requests > 0 ? issued.fetch_add(1) >= total_requests : Clock::now() >= end) {
          break;
        }
        const auto sent = Clock::now();
        const grpc::StatusCode code = (*request)();
        const std::chrono::duration<double, std::milli> latency = Clock::now() - sent;
        if (code == grpc::StatusCode::OK) {
          outcome.latencies_ms.push_back(latency.count());
        } else {
          ++outcome.errors[std::string(StatusCodeName(code))];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::chrono::duration<double> elapsed = Clock::now() - start;

  std::vector<double> latencies;
  nlohmann::json errors = nlohmann::json::object();
  for (const Outcome& outcome : outcomes) {
    latencies.insert(latencies.end(), outcome.latencies_ms.begin(), outcome.latencies_ms.end());
    for (const auto& [code, count] : outcome.errors) {
      errors[code] = errors.value(code, int64_t{0}) + count;
    }
  }
  std::sort(latencies.begin(), latencies.end());
  nlohmann::json summary = {
      {"rps", static_cast<double>(latencies.size()) / elapsed.count()},
      {"p50_ms", Percentile(latencies, 0.50)},
      {"p90_ms", Percentile(latencies, 0.90)},
      {"p99_ms", Percentile(latencies, 0.99)},
      {"requests", static_cast<int64_t>(latencies.size())},
      {"errors", errors},
  };
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace attnserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Closed-loop load generator for attnserve; prints a JSON summary.");
  absl::ParseCommandLine(argc, argv);
  return attnserve::Run();
}
