// ScaledDotProductAttention through the in-process server: inline ALiBi with bottom-right
// positions against the double reference (relative error < 1e-5; bf16 tensors < 1e-2), and the
// request rules with their messages.
#include "server/rpc/unary_rpcs.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "core/kernels/bfloat16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/rpc/test_server.h"

namespace attnserve::testing {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kB = 1, kH = 4, kHkv = 2, kSq = 3, kSk = 5, kHd = 8;

// q [1, 4, 3, 8], k and v [1, 2, 5, 8] with ALiBi; keys at offset + j, queries at offset + 2 + i.
v1::SdpaRequest AlibiRequest(const std::vector<float>& q, const std::vector<float>& k,
                             const std::vector<float>& v, int64_t offset, bool causal) {
  v1::SdpaRequest request;
  *request.mutable_q() = F32({kB, kH, kSq, kHd}, q);
  *request.mutable_k() = F32({kB, kHkv, kSk, kHd}, k);
  *request.mutable_v() = F32({kB, kHkv, kSk, kHd}, v);
  request.mutable_encoding()->mutable_alibi();
  request.set_position_offset(offset);
  request.set_causal(causal);
  return request;
}

// −m_h·|p_i − p_j| with the slopes 2^(−8h/4) of Press et al. for 4 heads (h = 1…4) and the
// DESIGN's bottom-right positions.
double AlibiBias(int64_t h, int64_t i, int64_t j, int64_t offset) {
  const double slope = std::pow(2.0, -8.0 * (h + 1) / kH);
  return -slope * std::fabs(double(offset + kSk - kSq + i) - double(offset + j));
}

TEST(SdpaRpcTest, InlineAlibiWithBottomRightPositionsMatchesTheReference) {
  TestServer server;
  const std::vector<float> q = RandomVector(kB * kH * kSq * kHd, 21);
  const std::vector<float> k = RandomVector(kB * kHkv * kSk * kHd, 22);
  const std::vector<float> v = RandomVector(kB * kHkv * kSk * kHd, 23);
  for (bool causal : {false, true}) {
    const int64_t offset = 7;
    v1::SdpaResponse response;
    const grpc::Status status = server.Call(
        &Stub::ScaledDotProductAttention, AlibiRequest(q, k, v, offset, causal), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const ReferenceResult expected = ReferenceSdpa(
        q, k, v, kB, kH, kHkv, kSq, kSk, kHd, 1 / std::sqrt(double{kHd}), causal, {},
        [offset](int64_t, int64_t h, int64_t i, int64_t j) { return AlibiBias(h, i, j, offset); });
    EXPECT_LT(RelativeError(Values(response.output()), expected.out), 1e-5) << causal;
  }
}

TEST(SdpaRpcTest, Bfloat16TensorsComeBackBfloat16) {
  TestServer server;
  const std::vector<float> q = RandomVector(kB * kH * kSq * kHd, 31);
  const std::vector<float> k = RandomVector(kB * kHkv * kSk * kHd, 32);
  const std::vector<float> v = RandomVector(kB * kHkv * kSk * kHd, 33);
  v1::SdpaRequest request = AlibiRequest(q, k, v, 0, true);
  std::vector<float> widened[3];
  v1::Tensor* tensors[3] = {request.mutable_q(), request.mutable_k(), request.mutable_v()};
  const std::vector<float>* sources[3] = {&q, &k, &v};
  for (int t = 0; t < 3; ++t) {  // the same values as BFLOAT16 (rounded), kept for the reference
    std::string bits;
    for (float value : *sources[t]) {
      const uint16_t bf16 = FloatToBfloat16(value);
      bits.append(reinterpret_cast<const char*>(&bf16), 2);
      widened[t].push_back(Bfloat16ToFloat(bf16));
    }
    tensors[t]->set_dtype(v1::BFLOAT16);
    tensors[t]->set_data(bits);
  }
  v1::SdpaResponse response;
  ASSERT_TRUE(server.Call(&Stub::ScaledDotProductAttention, request, &response).ok());
  ASSERT_EQ(response.output().dtype(), v1::BFLOAT16);
  std::vector<float> out;
  for (size_t i = 0; i < response.output().data().size() / 2; ++i) {
    uint16_t bf16;
    std::memcpy(&bf16, response.output().data().data() + 2 * i, 2);
    out.push_back(Bfloat16ToFloat(bf16));
  }
  const ReferenceResult expected = ReferenceSdpa(
      widened[0], widened[1], widened[2], kB, kH, kHkv, kSq, kSk, kHd,
      1 / std::sqrt(double{kHd}), true, {},
      [](int64_t, int64_t h, int64_t i, int64_t j) { return AlibiBias(h, i, j, 0); });
  EXPECT_LT(RelativeError(out, expected.out), 1e-2);
}

TEST(SdpaRpcTest, RejectsInconsistentRequestsNamingTheField) {
  TestServer server;
  struct Case {
    std::function<void(v1::SdpaRequest&)> change;
    const char* message;
  };
  const std::vector<Case> cases = {
      {[](v1::SdpaRequest& r) { *r.mutable_k() = F32({1, 2, 5, 4}, std::vector<float>(40)); },
       "k.shape=[1,2,5,4] must match q.shape=[1,4,3,8] in B and hd"},
      {[](v1::SdpaRequest& r) { *r.mutable_v() = F32({1, 2, 4, 8}, std::vector<float>(64)); },
       "v.shape=[1,2,4,8] must equal k.shape=[1,2,5,8]"},
      {[](v1::SdpaRequest& r) { r.mutable_encoding()->mutable_sinusoidal(); },
       "encoding.sinusoidal is added to embeddings, not applied inside attention"},
      {[](v1::SdpaRequest& r) { r.mutable_encoding()->mutable_t5(); },
       "t5_table is required with encoding.t5: FLOAT32 [num_buckets, num_heads]"},
      {[](v1::SdpaRequest& r) {
         r.mutable_encoding()->mutable_t5();
         *r.mutable_t5_table() = F32({2, 2}, std::vector<float>(4));
       },
       "t5_table.shape=[2,2] must be [32,4] [num_buckets, num_heads]"},
      {[](v1::SdpaRequest& r) {  // the parameters first: they shape the table
         r.mutable_encoding()->mutable_t5()->set_num_buckets(1);
         *r.mutable_t5_table() = F32({2, 2}, std::vector<float>(4));
       },
       "encoding.t5.num_buckets=1 must be >= 2"},
      {[](v1::SdpaRequest& r) { r.mutable_encoding()->mutable_cope(); },
       "encoding.cope.npos_max=0 must be >= 1"},
      {[](v1::SdpaRequest& r) { r.set_scale(INFINITY); },
       "scale=inf must be finite and fit in float32"},
      {[](v1::SdpaRequest& r) { r.set_position_offset(-1); },
       "position_offset=-1 must be in [0, 2147483643]"},
  };
  for (const Case& c : cases) {
    v1::SdpaRequest request;
    *request.mutable_q() = F32({1, 4, 3, 8}, std::vector<float>(96));
    *request.mutable_k() = F32({1, 2, 5, 8}, std::vector<float>(80));
    *request.mutable_v() = F32({1, 2, 5, 8}, std::vector<float>(80));
    c.change(request);
    v1::SdpaResponse response;
    const grpc::Status status =
        server.Call(&Stub::ScaledDotProductAttention, request, &response);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
}

TEST(SdpaRpcTest, QueriesBeforePositionZeroAreRefused) {
  TestServer server;
  v1::SdpaRequest request;
  *request.mutable_q() = F32({1, 1, 5, 2}, std::vector<float>(10));
  *request.mutable_k() = F32({1, 1, 3, 2}, std::vector<float>(6));
  *request.mutable_v() = F32({1, 1, 3, 2}, std::vector<float>(6));
  request.mutable_encoding()->mutable_alibi();
  v1::SdpaResponse response;
  const grpc::Status status = server.Call(&Stub::ScaledDotProductAttention, request, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("position_offset=0 must be >= Sq − Sk=2"));
}

// Requests with different shapes, offsets, masks and encodings (ALiBi, RoPE, none; one with
// probabilities; one in bf16 tensors, another batch key), sent at once and held together by a
// batch timeout: each answer equals its answer alone, bit for bit (the kernel computes each
// member as it would alone), and they shared batches.
TEST(SdpaRpcTest, ConcurrentRequestsBatchAndEachGetsItsOwnAnswer) {
  TestServer alone_server;  // sequential calls: every request computed alone
  ServiceLimits limits;
  limits.batching.timeout = std::chrono::milliseconds(300);
  TestServer server(nullptr, limits);
  std::vector<v1::SdpaRequest> requests;
  for (int r = 0; r < 6; ++r) {
    const std::vector<float> q = RandomVector(kB * kH * kSq * kHd, 60 + 3 * r);
    const std::vector<float> k = RandomVector(kB * kHkv * kSk * kHd, 61 + 3 * r);
    const std::vector<float> v = RandomVector(kB * kHkv * kSk * kHd, 62 + 3 * r);
    requests.push_back(AlibiRequest(q, k, v, 3 * r, r % 2 == 0));
  }
  requests[1].mutable_encoding()->mutable_rope();
  requests[2].clear_encoding();
  requests[3].set_return_attention(true);
  for (v1::Tensor* tensor : {requests[4].mutable_q(), requests[4].mutable_k(),
                             requests[4].mutable_v()}) {
    std::string bits;
    for (float value : Values(*tensor)) {
      const uint16_t bf16 = FloatToBfloat16(value);
      bits.append(reinterpret_cast<const char*>(&bf16), 2);
    }
    tensor->set_dtype(v1::BFLOAT16);
    tensor->set_data(bits);
  }
  requests[4].set_compute_dtype(v1::BFLOAT16);
  std::vector<v1::SdpaResponse> alone, batched;
  for (const grpc::Status& status :
       alone_server.CallEach(&Stub::ScaledDotProductAttention, requests, &alone)) {
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const std::vector<grpc::Status> statuses =
      server.CallAtOnce(&Stub::ScaledDotProductAttention, requests, &batched);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i;
    EXPECT_EQ(batched[i].output().data(), alone[i].output().data()) << i;
    EXPECT_EQ(batched[i].attention().data(), alone[i].attention().data()) << i;
  }
  const double batches =
      server.Sample("attnserve_batch_requests", {{"rpc", "ScaledDotProductAttention"}});
  EXPECT_GE(batches, 2);  // the f32 and the bf16 keys
  EXPECT_LT(batches, static_cast<double>(requests.size()));
}

}  // namespace
}  // namespace attnserve::testing
