// The adapter tests' server: an AttentionService on a gRPC server in the test's own process,
// listening on a free loopback port and called through the generated stub as a client would;
// and helpers for wire tensors. (Over TCP rather than gRPC's in-process channel: with that one
// client and server share message buffers and hand them over inside gRPC, where ThreadSanitizer
// cannot see the synchronisation.)
#ifndef ATTNSERVE_TESTS_SERVER_RPC_TEST_SERVER_H_
#define ATTNSERVE_TESTS_SERVER_RPC_TEST_SERVER_H_

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnserve/v1/attention_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/models/model_registry.h"
#include "server/models/model_store.h"
#include "server/observability/metrics.h"
#include "server/rpc/attention_service.h"
#include "tests/core/reference_attention.h"
#include "tests/server/observability/metric_sample.h"
#include "tests/server/test_safetensors.h"

namespace attnserve::testing {

using Stub = v1::AttentionService::Stub;

// A unary method of the stub, e.g. &Stub::Encode.
template <class Request, class Response>
using UnaryMethod = grpc::Status (Stub::*)(grpc::ClientContext*, const Request&, Response*);

class TestServer {
 public:
  // Serves `models` (the built-in demo models when null) within `limits`.
  explicit TestServer(std::shared_ptr<const ModelRegistry> models = nullptr,
                      ServiceLimits limits = ServiceLimits())
      : store_(models != nullptr ? std::move(models) : DemoModels()),
        service_(&store_, limits, &metrics_) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    builder.RegisterCallbackGenericService(service_.unary_calls());
    server_ = builder.BuildAndStart();
    EXPECT_NE(port, 0) << "no free loopback port";
    stub_ = v1::AttentionService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  ~TestServer() { server_->Shutdown(); }

  v1::AttentionService::Stub& stub() { return *stub_; }

  // Calls a unary RPC as a client would, e.g. Call(&Stub::Encode, request, &response).
  template <class Request, class Response>
  grpc::Status Call(UnaryMethod<Request, Response> method, const Request& request,
                    Response* response) {
    grpc::ClientContext context;
    return (stub_.get()->*method)(&context, request, response);
  }
  // Calls `method` with each of `requests` one after another; their statuses, their responses in
  // *responses.
  template <class Request, class Response>
  std::vector<grpc::Status> CallEach(UnaryMethod<Request, Response> method,
                                      const std::vector<Request>& requests,
                                      std::vector<Response>* responses) {
    responses->assign(requests.size(), Response());
    std::vector<grpc::Status> statuses;
    for (size_t i = 0; i < requests.size(); ++i) {
      statuses.push_back(Call(method, requests[i], &(*responses)[i]));
    }
    return statuses;
  }
  // The same with all of `requests` sent at once, each from its own thread (so the server may
  // batch them).
  template <class Request, class Response>
  std::vector<grpc::Status> CallAtOnce(UnaryMethod<Request, Response> method,
                                      const std::vector<Request>& requests,
                                      std::vector<Response>* responses) {
    responses->assign(requests.size(), Response());
    std::vector<std::future<grpc::Status>> calls;
    for (size_t i = 0; i < requests.size(); ++i) {
      calls.push_back(std::async(std::launch::async, [this, method, &requests, responses, i] {
        return Call(method, requests[i], &(*responses)[i]);
      }));
    }
    std::vector<grpc::Status> statuses;
    for (std::future<grpc::Status>& call : calls) statuses.push_back(call.get());
    return statuses;
  }
  // The value of a metric sample the service recorded (-1: none), e.g.
  // Sample("attnserve_tokens_total", {{"rpc", "Attend"}, {"model", "tiny"}}).
  double Sample(const std::string& family, const std::map<std::string, std::string>& labels) {
    return testing::Sample(registry_, family, labels);
  }

 private:
  static std::shared_ptr<const ModelRegistry> DemoModels() {
    absl::StatusOr<std::unique_ptr<ModelRegistry>> demo = ModelRegistry::CreateWithDemoModels();
    EXPECT_TRUE(demo.ok()) << demo.status();
    return *std::move(demo);
  }

  prometheus::Registry registry_;
  ServerMetrics metrics_{registry_, {}};
  ModelStore store_;
  AttentionServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

// A FLOAT32 wire tensor.
inline v1::Tensor F32(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::FLOAT32);
  tensor.mutable_shape()->Assign(shape.begin(), shape.end());
  tensor.set_data(values.data(), 4 * values.size());
  return tensor;
}

// A FLOAT32 wire tensor's values.
inline std::vector<float> Values(const v1::Tensor& tensor) {
  std::vector<float> values(tensor.data().size() / 4);
  // (memcpy from an empty tensor's null data would be undefined even for 0 bytes.)
  if (!values.empty()) std::memcpy(values.data(), tensor.data().data(), tensor.data().size());
  return values;
}

// "tiny": d_model 8, 2 query heads sharing 1 K/V head of 4 dims, no biases, no encoding; its
// seeded weights are kept for the reference.
struct TinyModel {
  static constexpr int64_t kDModel = 8, kHeads = 2, kKvHeads = 1, kHeadDim = 4;
  std::vector<float> wq = RandomVector(kHeads * kHeadDim * kDModel, 1, 0.3f);
  std::vector<float> wk = RandomVector(kKvHeads * kHeadDim * kDModel, 2, 0.3f);
  std::vector<float> wv = RandomVector(kKvHeads * kHeadDim * kDModel, 3, 0.3f);
  std::vector<float> wo = RandomVector(kDModel * kHeads * kHeadDim, 4, 0.3f);

  const std::filesystem::path repository =
      std::filesystem::temp_directory_path() /
      ("attnserve_tiny_" + std::to_string(::getpid()) + "_" +
       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  ~TinyModel() { std::filesystem::remove_all(repository); }

  // A repository holding only "tiny", written under `repository`, loaded.
  std::shared_ptr<const ModelRegistry> Repository() const {
    const std::filesystem::path folder = repository / "tiny";
    std::filesystem::create_directories(folder);
    std::ofstream(folder / "config.pbtxt")
        << "d_model: 8 num_heads: 2 num_kv_heads: 1 max_positions: 64 encoding { none {} }\n";
    std::ofstream(folder / "weights.safetensors", std::ios::binary)
        << SafetensorsBytes({{"q_proj.weight", {kHeads * kHeadDim, kDModel}, wq},
                             {"k_proj.weight", {kKvHeads * kHeadDim, kDModel}, wk},
                             {"v_proj.weight", {kKvHeads * kHeadDim, kDModel}, wv},
                             {"o_proj.weight", {kDModel, kHeads * kHeadDim}, wo}});
    absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
        ModelRegistry::CreateFromRepository(folder.parent_path().string());
    EXPECT_TRUE(registry.ok()) << registry.status();
    return *std::move(registry);
  }

  // The layer in double precision: queries x [B, Sq, d], keys and values from the same x, as
  // the definitions say (projections, per-head softmax attention, merge, output projection).
  std::vector<double> Reference(const std::vector<float>& x, int64_t B, int64_t S,
                                bool causal) const {
    const std::vector<double> q = SplitHeads(ReferenceLinear(x, B * S, kDModel, wq, {},
                                                             kHeads * kHeadDim),
                                             B, S, kHeads, kHeadDim);
    const std::vector<double> k = SplitHeads(ReferenceLinear(x, B * S, kDModel, wk, {},
                                                             kKvHeads * kHeadDim),
                                             B, S, kKvHeads, kHeadDim);
    const std::vector<double> v = SplitHeads(ReferenceLinear(x, B * S, kDModel, wv, {},
                                                             kKvHeads * kHeadDim),
                                             B, S, kKvHeads, kHeadDim);
    const ReferenceResult attended = ReferenceSdpa(q, k, v, B, kHeads, kKvHeads, S, S, kHeadDim,
                                                   1 / std::sqrt(double{kHeadDim}), causal, {});
    std::vector<double> merged(B * S * kHeads * kHeadDim);  // [B, H, S, hd] → [B, S, H·hd]
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t c = 0; c < kHeadDim; ++c)
            merged[((b * S + s) * kHeads + h) * kHeadDim + c] =
                attended.out[((b * kHeads + h) * S + s) * kHeadDim + c];
    return ReferenceLinear(merged, B * S, kHeads * kHeadDim, wo, {}, kDModel);
  }
};

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_SERVER_RPC_TEST_SERVER_H_
