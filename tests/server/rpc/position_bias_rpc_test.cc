// PositionBias through the in-process server: ALiBi's and T5's maps against their closed forms
// (exact up to float rounding: 1e-6), bottom-right aligned, with the causal mask.
#include "server/rpc/unary_rpcs.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/rpc/test_server.h"

namespace attnserve::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// q_len 2, kv_len 4: queries at positions 2, 3 and keys at 0…3 (the last of each together).
TEST(PositionBiasRpcTest, AlibiMapIsBottomRightAlignedAndMasked) {
  TestServer server;
  for (bool causal : {false, true}) {
    v1::PositionBiasRequest request;
    request.mutable_encoding()->mutable_alibi();
    request.set_num_heads(2);
    request.set_q_len(2);
    request.set_kv_len(4);
    request.set_causal(causal);
    v1::PositionBiasResponse response;
    ASSERT_TRUE(server.Call(&Stub::PositionBias, request, &response).ok());
    ASSERT_THAT(response.bias().shape(), ElementsAre(2, 2, 4));
    const std::vector<float> bias = Values(response.bias());
    for (int64_t h = 0; h < 2; ++h) {
      const double slope = std::pow(2.0, -8.0 * (h + 1) / 2);
      for (int64_t i = 0; i < 2; ++i) {
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t query = 2 + i;
          const float got = bias[(h * 2 + i) * 4 + j];
          if (causal && j > query) {
            EXPECT_EQ(got, -std::numeric_limits<float>::infinity());
          } else {
            EXPECT_NEAR(got, -slope * std::abs(query - j), 1e-6);
          }
        }
      }
    }
  }
}

TEST(PositionBiasRpcTest, AMapIsNotTokenWork) {
  TestServer server;
  v1::PositionBiasRequest request;
  request.mutable_encoding()->mutable_alibi();
  request.set_num_heads(2);
  request.set_q_len(3);
  v1::PositionBiasResponse response;
  ASSERT_TRUE(server.Call(&Stub::PositionBias, request, &response).ok());
  EXPECT_EQ(server.Sample("attnserve_compute_seconds", {{"rpc", "PositionBias"}}), 1);
  EXPECT_EQ(server.Sample("attnserve_tokens_total", {{"rpc", "PositionBias"}}), -1);
}

TEST(PositionBiasRpcTest, T5TableFromTheRequestIsIndexedByBucket) {
  TestServer server;
  // 8 causal buckets (max_exact 4), max distance 16, 1 head: bucket b holds the value b.
  v1::PositionBiasRequest request;
  v1::T5RelativeBias* t5 = request.mutable_encoding()->mutable_t5();
  t5->set_num_buckets(8);
  t5->set_max_distance(16);
  t5->set_bidirectional(false);
  *request.mutable_t5_table() = F32({8, 1}, {0, 1, 2, 3, 4, 5, 6, 7});
  request.set_num_heads(1);
  request.set_q_len(3);
  v1::PositionBiasResponse response;
  const grpc::Status status = server.Call(&Stub::PositionBias, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::vector<float> bias = Values(response.bias());
  // Causal buckets of j − i ≤ 0: the distance i − j itself below max_exact (HF's rule).
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j <= i; ++j) EXPECT_EQ(bias[i * 3 + j], float(i - j)) << i << "," << j;
  }
}

TEST(PositionBiasRpcTest, RefusesKindsWithoutAFixedMap) {
  TestServer server;
  struct Case {
    std::function<void(v1::PositionBiasRequest&)> change;
    const char* message;
  };
  const std::vector<Case> cases = {
      {[](v1::PositionBiasRequest& r) { r.mutable_encoding()->mutable_rope(); },
       "encoding.rope has no fixed score bias; PositionBias serves alibi and t5"},
      {[](v1::PositionBiasRequest& r) { r.clear_encoding(); },
       "encoding or model must be set: the bias of which encoding?"},
      {[](v1::PositionBiasRequest& r) { r.set_num_heads(0); },
       "num_heads=0 must be in [1, 65536]"},
      {[](v1::PositionBiasRequest& r) { r.set_q_len(0); },
       "q_len=0 and kv_len=0 must be >= 1"},
      {[](v1::PositionBiasRequest& r) {
         r.clear_encoding();
         r.set_model("demo-alibi");
       },
       "num_heads=2 differs from num_heads=12 of model=\"demo-alibi\""},
  };
  for (const Case& c : cases) {
    v1::PositionBiasRequest request;
    request.mutable_encoding()->mutable_alibi();
    request.set_num_heads(2);
    request.set_q_len(3);
    c.change(request);
    v1::PositionBiasResponse response;
    const grpc::Status status = server.Call(&Stub::PositionBias, request, &response);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace attnserve::testing
