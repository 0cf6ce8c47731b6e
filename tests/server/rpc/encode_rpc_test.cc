// Encode through the in-process server: the adapter's conversions, the handler's rules, the core
// result against closed forms (double precision; tolerance 1e-5 absolute on values of order 1).
#include "server/rpc/unary_rpcs.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/rpc/test_server.h"

namespace attnserve::testing {
namespace {

using ::testing::HasSubstr;

TEST(EncodeRpcTest, InlineSinusoidalAddsTheClosedForm) {
  TestServer server;
  const int64_t seq = 5, d = 6;
  const std::vector<float> x = RandomVector(seq * d, 7);
  v1::EncodeRequest request;
  *request.mutable_input() = F32({1, seq, d}, x);
  request.mutable_encoding()->mutable_sinusoidal();
  request.set_position_offset(3);
  request.set_input_scale(2.0f);
  v1::EncodeResponse response;
  ASSERT_TRUE(server.Call(&Stub::Encode, request, &response).ok());
  const std::vector<float> out = Values(response.output());
  ASSERT_EQ(out.size(), x.size());
  for (int64_t t = 0; t < seq; ++t) {
    for (int64_t k = 0; k < d / 2; ++k) {
      const double angle = (3 + t) * std::pow(10000.0, -2.0 * k / d);
      EXPECT_NEAR(out[t * d + 2 * k], 2.0 * x[t * d + 2 * k] + std::sin(angle), 1e-5);
      EXPECT_NEAR(out[t * d + 2 * k + 1], 2.0 * x[t * d + 2 * k + 1] + std::cos(angle), 1e-5);
    }
  }
}

TEST(EncodeRpcTest, InlineRopeRotatesEachHeadsHalves) {
  TestServer server;
  const int64_t seq = 3, heads = 2, hd = 4, d = heads * hd;
  const std::vector<float> x = RandomVector(seq * d, 8);
  v1::EncodeRequest request;
  *request.mutable_input() = F32({1, seq, d}, x);
  request.mutable_encoding()->mutable_rope()->set_theta(100);
  request.set_num_heads(heads);
  v1::EncodeResponse response;
  ASSERT_TRUE(server.Call(&Stub::Encode, request, &response).ok());
  const std::vector<float> out = Values(response.output());
  for (int64_t t = 0; t < seq; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* in = x.data() + t * d + h * hd;
      for (int64_t k = 0; k < hd / 2; ++k) {  // half-split: dim k pairs with k + hd/2
        const double angle = t * std::pow(100.0, -2.0 * k / hd);
        const double a = in[k], b = in[k + hd / 2];
        EXPECT_NEAR(out[t * d + h * hd + k], a * std::cos(angle) - b * std::sin(angle), 1e-5);
        EXPECT_NEAR(out[t * d + h * hd + k + hd / 2], b * std::cos(angle) + a * std::sin(angle),
                    1e-5);
      }
    }
  }
}

// Each rule the handler enforces, with the message a client reads.
TEST(EncodeRpcTest, RejectsWhatHasNoEmbeddingFormNamingTheField) {
  TestServer server;
  struct Case {
    const char* description;
    std::function<void(v1::EncodeRequest&)> change;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"score encoding", [](v1::EncodeRequest& r) { r.mutable_encoding()->mutable_alibi(); },
       grpc::INVALID_ARGUMENT,
       "encoding.alibi is a score bias, not an embedding encoding; use PositionBias to see it"},
      {"learned inline", [](v1::EncodeRequest& r) { r.mutable_encoding()->mutable_learned(); },
       grpc::INVALID_ARGUMENT, "encoding.learned needs a model's table"},
      {"rope without heads", [](v1::EncodeRequest& r) { r.mutable_encoding()->mutable_rope(); },
       grpc::INVALID_ARGUMENT, "encoding.rope needs num_heads or head_dim"},
      {"heads that do not split",
       [](v1::EncodeRequest& r) {
         r.mutable_encoding()->mutable_rope();
         r.set_num_heads(3);
       },
       grpc::INVALID_ARGUMENT, "num_heads=3 and head_dim=0 must split d_model=8"},
      {"negative head_dim", [](v1::EncodeRequest& r) { r.set_head_dim(-1); },
       grpc::INVALID_ARGUMENT, "head_dim=-1 must be >= 0 (0: unset)"},
      {"model of another width", [](v1::EncodeRequest& r) { r.set_model("demo-sinusoidal"); },
       grpc::INVALID_ARGUMENT,
       "input.shape[2]=8 must equal d_model=512 of model=\"demo-sinusoidal\""},
      {"unknown model", [](v1::EncodeRequest& r) { r.set_model("nope"); }, grpc::NOT_FOUND,
       "model=\"nope\" is not loaded"},
      {"learned position past the table",
       [](v1::EncodeRequest& r) {
         *r.mutable_input() = F32({1, 2, 256}, std::vector<float>(512));
         r.set_model("demo-learned");
         r.set_position_offset(8191);
       },
       grpc::OUT_OF_RANGE, "position 8192 of token 1 is outside the learned table"},
  };
  for (const Case& c : cases) {
    v1::EncodeRequest request;
    *request.mutable_input() = F32({1, 2, 8}, std::vector<float>(16));
    c.change(request);
    v1::EncodeResponse response;
    const grpc::Status status = server.Call(&Stub::Encode, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.description;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.description;
  }
}

TEST(EncodeRpcTest, TooLongInputIsRefusedBeforeAnyWork) {
  ServiceLimits limits;
  limits.max_sequence_length = 4;
  TestServer server(nullptr, limits);
  v1::EncodeRequest request;
  *request.mutable_input() = F32({1, 5, 2}, std::vector<float>(10));
  v1::EncodeResponse response;
  const grpc::Status status = server.Call(&Stub::Encode, request, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "input.shape[1]=5 exceeds --max_sequence_length=4");
}

// Inline requests (sinusoidal and RoPE, different offsets and scales) sent at once and held
// together by a batch timeout share a worker's turn, and each answer equals its answer alone, bit
// for bit (each is computed as alone, one after another).
TEST(EncodeRpcTest, ConcurrentRequestsShareATurnAndEachGetsItsOwnAnswer) {
  TestServer alone_server;
  ServiceLimits limits;
  limits.batching.timeout = std::chrono::milliseconds(300);
  TestServer server(nullptr, limits);
  std::vector<v1::EncodeRequest> requests(6);
  for (int r = 0; r < 6; ++r) {
    *requests[r].mutable_input() = F32({1, 3 + r, 8}, RandomVector((3 + r) * 8, 90 + r));
    requests[r].set_position_offset(4 * r);
    if (r % 2 == 0) {
      requests[r].mutable_encoding()->mutable_sinusoidal();
      requests[r].set_input_scale(1.0f + r);
    } else {
      requests[r].mutable_encoding()->mutable_rope();
      requests[r].set_num_heads(2);
    }
  }
  std::vector<v1::EncodeResponse> alone, batched;
  for (const grpc::Status& status : alone_server.CallEach(&Stub::Encode, requests, &alone)) {
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const std::vector<grpc::Status> statuses = server.CallAtOnce(&Stub::Encode, requests, &batched);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i;
    EXPECT_EQ(batched[i].output().data(), alone[i].output().data()) << i;
  }
  const double batches = server.Sample("attnserve_batch_requests", {{"rpc", "Encode"}});
  EXPECT_GE(batches, 1);
  EXPECT_LT(batches, static_cast<double>(requests.size()));
}

}  // namespace
}  // namespace attnserve::testing
