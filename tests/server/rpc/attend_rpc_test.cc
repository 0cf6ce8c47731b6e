// Attend through the in-process server on a repository model whose weights the test wrote,
// against the layer computed in double precision from the definitions (relative error < 1e-5).
#include "server/rpc/unary_rpcs.h"

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

}  // namespace
}  // namespace attnserve::testing
