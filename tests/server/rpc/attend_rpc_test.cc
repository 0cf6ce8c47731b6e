// Attend through the in-process server on a repository model whose weights the test wrote,
// against the layer computed in double precision from the definitions (relative error < 1e-5).
#include "server/rpc/unary_rpcs.h"

#include <chrono>
#include <cmath>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/rpc/test_server.h"

namespace attnserve::testing {
namespace {

using ::testing::HasSubstr;

TEST(AttendRpcTest, SelfAttentionMatchesTheDoubleLayer) {
  const TinyModel tiny;
  TestServer server(tiny.Repository());
  const int64_t B = 2, S = 5, d = TinyModel::kDModel;
  const std::vector<float> x = RandomVector(B * S * d, 11);
  for (bool causal : {false, true}) {
    v1::AttendRequest request;
    request.set_model("tiny");
    *request.mutable_query() = F32({B, S, d}, x);
    request.set_causal(causal);
    request.set_return_attention(true);
    v1::AttendResponse response;
    const grpc::Status status = server.Call(&Stub::Attend, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LT(RelativeError(Values(response.output()), tiny.Reference(x, B, S, causal)), 1e-5)
        << "causal=" << causal;
    EXPECT_EQ(server.Sample("attnserve_tokens_total", {{"rpc", "Attend"}, {"model", "tiny"}}),
              B * S * (causal ? 2 : 1));
    ASSERT_THAT(response.attention().shape(), ::testing::ElementsAre(B, 2, S, S));
    const std::vector<float> probs = Values(response.attention());
    for (int64_t row = 0; row < B * 2 * S; ++row) {  // each row a distribution; causal: no future
      const int64_t i = row % S;
      double total = 0;
      for (int64_t j = 0; j < S; ++j) {
        total += probs[row * S + j];
        if (causal && j > i) {
          EXPECT_EQ(probs[row * S + j], 0.0f);
        }
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
    }
  }
}

TEST(AttendRpcTest, RejectsWhatDoesNotFitTheModelNamingTheField) {
  const TinyModel tiny;
  ServiceLimits limits;
  limits.max_response_bytes = 2048;
  TestServer server(tiny.Repository(), limits);
  struct Case {
    std::function<void(v1::AttendRequest&)> change;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {[](v1::AttendRequest& r) { r.set_model("nope"); }, grpc::NOT_FOUND,
       "model=\"nope\" is not loaded; loaded models: tiny"},
      {[](v1::AttendRequest& r) { *r.mutable_query() = F32({1, 2, 4}, std::vector<float>(8)); },
       grpc::INVALID_ARGUMENT, "query.shape[2]=4 must equal d_model=8"},
      {[](v1::AttendRequest& r) {
         *r.mutable_context() = F32({2, 3, 8}, std::vector<float>(48));
       },
       grpc::INVALID_ARGUMENT, "context.shape[0]=2 must equal query.shape[0]=1"},
      {[](v1::AttendRequest& r) { r.set_compute_dtype(v1::INT32); }, grpc::INVALID_ARGUMENT,
       "compute_dtype=INT32 must be FLOAT32 or BFLOAT16"},
      {[](v1::AttendRequest& r) {
         *r.mutable_query() = F32({1, 20, 8}, std::vector<float>(160));
         r.set_return_attention(true);
       },
       grpc::INVALID_ARGUMENT, "return_attention: attention [1,2,20,20] FLOAT32 is 3200 bytes"},
  };
  for (const Case& c : cases) {
    v1::AttendRequest request;
    request.set_model("tiny");
    *request.mutable_query() = F32({1, 2, 8}, std::vector<float>(16));
    c.change(request);
    v1::AttendResponse response;
    const grpc::Status status = server.Call(&Stub::Attend, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  // Refused requests are checked before they queue: they computed nothing and took no compute
  // worker's turn; the unknown model's name is not a label.
  EXPECT_EQ(server.Sample("attnserve_tokens_total", {{"rpc", "Attend"}}), -1);
  EXPECT_EQ(server.Sample("attnserve_compute_seconds", {{"rpc", "Attend"}}), -1);
  EXPECT_EQ(server.Sample("attnserve_batch_requests", {{"rpc", "Attend"}}), -1);
  EXPECT_EQ(server.Sample("attnserve_compute_seconds", {{"model", "nope"}}), -1);
}

// Four requests of different shapes and options on `model` (width d): causal, positions offset,
// probabilities, cross-attention, and one in bf16 (another batch key).
std::vector<v1::AttendRequest> MixedRequests(const std::string& model, int64_t d, uint32_t seed) {
  std::vector<v1::AttendRequest> requests(4);
  for (v1::AttendRequest& request : requests) request.set_model(model);
  *requests[0].mutable_query() = F32({1, 3, d}, RandomVector(3 * d, seed));
  requests[0].set_causal(true);
  *requests[1].mutable_query() = F32({2, 9, d}, RandomVector(18 * d, seed + 1));
  requests[1].set_position_offset(5);
  requests[1].set_return_attention(true);
  *requests[2].mutable_query() = F32({1, 4, d}, RandomVector(4 * d, seed + 2));
  *requests[2].mutable_context() = F32({1, 7, d}, RandomVector(7 * d, seed + 3));
  *requests[3].mutable_query() = F32({1, 6, d}, RandomVector(6 * d, seed + 4));
  requests[3].set_causal(true);
  requests[3].set_compute_dtype(v1::BFLOAT16);
  return requests;
}

// Requests on all seven demo models sent at once, held together by a batch timeout so that they
// batch: each answer equals the one the request got alone (up to the order of the projections'
// sums: 1e-6 of the output's scale); an invalid request gets its own error; one whose deadline
// passes while its batch is held open is DEADLINE_EXCEEDED; the others are unaffected.
TEST(AttendRpcTest, ConcurrentRequestsBatchAndEachGetsItsOwnAnswer) {
  TestServer alone_server;  // sequential calls: every request computed alone
  ServiceLimits limits;
  limits.batching.timeout = std::chrono::milliseconds(300);
  TestServer server(nullptr, limits);
  v1::ListModelsResponse models;
  ASSERT_TRUE(server.Call(&Stub::ListModels, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 7);
  std::vector<v1::AttendRequest> requests;
  uint32_t seed = 40;
  for (const v1::ModelConfig& model : models.models()) {
    for (v1::AttendRequest& request : MixedRequests(model.name(), model.d_model(), seed += 10)) {
      requests.push_back(std::move(request));
    }
  }
  v1::AttendRequest expiring = requests[0];
  // The last request is invalid: the wrong width.
  requests.push_back(requests[0]);
  *requests.back().mutable_query() = F32({1, 2, 5}, std::vector<float>(10));
  const size_t valid = requests.size() - 1;
  std::vector<v1::AttendResponse> alone, batched;
  const std::vector<grpc::Status> alone_statuses =
      alone_server.CallEach(&Stub::Attend, requests, &alone);
  for (size_t i = 0; i < valid; ++i) {
    ASSERT_TRUE(alone_statuses[i].ok()) << i << ": " << alone_statuses[i].error_message();
  }

  auto expiring_call = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(50));
    v1::AttendResponse response;
    return server.stub().Attend(&context, expiring, &response);
  });
  const std::vector<grpc::Status> statuses = server.CallAtOnce(&Stub::Attend, requests, &batched);
  for (size_t i = 0; i < valid; ++i) {
    SCOPED_TRACE(::testing::Message() << requests[i].model() << " request " << i % 4);
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_LE(MaxRelativeDifference(Values(batched[i].output()), Values(alone[i].output())), 1e-6);
    EXPECT_LE(MaxRelativeDifference(Values(batched[i].attention()), Values(alone[i].attention())),
              1e-6);
  }
  EXPECT_EQ(statuses[valid].error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(statuses[valid].error_message(), HasSubstr("query.shape[2]=5 must equal d_model="));
  EXPECT_EQ(expiring_call.get().error_code(), grpc::DEADLINE_EXCEEDED);
  // Batches formed: per model at most one f32 batch and one bf16 batch for its four requests
  // (all arrive within the first batch's 300 ms), and each request was counted in one.
  for (const v1::ModelConfig& model : models.models()) {
    SCOPED_TRACE(model.name());
    const double batches =
        server.Sample("attnserve_batch_requests", {{"rpc", "Attend"}, {"model", model.name()}});
    EXPECT_GE(batches, 2);
    EXPECT_LE(batches, 3);
  }
}

}  // namespace
}  // namespace attnserve::testing
