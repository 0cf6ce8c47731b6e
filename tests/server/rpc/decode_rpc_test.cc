// Decode streams through the in-process server: steps continue the sequence exactly as the
// causal layer over all tokens does (the double reference, relative error < 1e-5), and each
// stream's K/V cache is held against the shared budget and given back when the stream ends.
#include "server/rpc/decode_rpc.h"

#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/rpc/test_server.h"

namespace attnserve::testing {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kD = TinyModel::kDModel;

v1::DecodeRequest Step(const std::vector<float>& x, int64_t first, int64_t tokens) {
  v1::DecodeRequest request;
  request.set_model("tiny");
  *request.mutable_query() =
      F32({1, tokens, kD}, std::vector<float>(x.begin() + first * kD,
                                              x.begin() + (first + tokens) * kD));
  return request;
}

TEST(DecodeRpcTest, StepsEqualTheCausalLayerOverTheWholeSequence) {
  const TinyModel tiny;
  TestServer server(tiny.Repository());
  const int64_t total = 6;
  const std::vector<float> x = RandomVector(total * kD, 41);
  grpc::ClientContext context;
  auto stream = server.stub().Decode(&context);
  std::vector<float> decoded;
  const int64_t steps[][2] = {{0, 3}, {3, 1}, {4, 2}};  // (first token, tokens)
  for (const auto& [first, tokens] : steps) {
    ASSERT_TRUE(stream->Write(Step(x, first, tokens)));
    v1::DecodeResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.position(), first);
    const std::vector<float> out = Values(response.output());
    decoded.insert(decoded.end(), out.begin(), out.end());
  }
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_LT(RelativeError(decoded, tiny.Reference(x, 1, total, /*causal=*/true)), 1e-5);
}

// The steps of `x`'s stream, (0, 3), (3, 1), (4, 2), as a client sends them; the outputs in order.
std::vector<float> DecodeSixTokens(TestServer& server, const std::vector<float>& x) {
  grpc::ClientContext context;
  auto stream = server.stub().Decode(&context);
  std::vector<float> decoded;
  for (const auto& [first, tokens] : {std::pair{0, 3}, {3, 1}, {4, 2}}) {
    EXPECT_TRUE(stream->Write(Step(x, first, tokens)));
    v1::DecodeResponse response;
    EXPECT_TRUE(stream->Read(&response));
    const std::vector<float> out = Values(response.output());
    decoded.insert(decoded.end(), out.begin(), out.end());
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  return decoded;
}

// Continuous batching: four streams stepping at once, their steps held together by a batch
// timeout, each still equal to the causal layer over its own sequence; their steps shared
// batches (fewer batches than steps).
TEST(DecodeRpcTest, ConcurrentStreamsStepTogetherEachOverItsOwnSequence) {
  const TinyModel tiny;
  ServiceLimits limits;
  limits.batching.timeout = std::chrono::milliseconds(100);
  TestServer server(tiny.Repository(), limits);
  constexpr int kStreams = 4;
  std::vector<std::vector<float>> xs;
  for (int s = 0; s < kStreams; ++s) xs.push_back(RandomVector(6 * kD, 50 + s));
  std::vector<std::future<std::vector<float>>> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.push_back(std::async(std::launch::async, [&, s] { return DecodeSixTokens(server, xs[s]); }));
  }
  for (int s = 0; s < kStreams; ++s) {
    EXPECT_LT(RelativeError(streams[s].get(), tiny.Reference(xs[s], 1, 6, /*causal=*/true)), 1e-5)
        << "stream " << s;
  }
  const double batches = server.Sample("attnserve_batch_requests", {{"rpc", "Decode"}});
  EXPECT_GE(batches, 3);                // at least one per round of steps
  EXPECT_LT(batches, 3 * kStreams);     // and some shared
  EXPECT_EQ(server.Sample("attnserve_tokens_total", {{"rpc", "Decode"}}), 6 * kStreams);
}

TEST(DecodeRpcTest, TheBudgetRefusesGrowthAndIsGivenBackWhenAStreamEnds) {
  const TinyModel tiny;
  ServiceLimits limits;
  // One stream of 4 tokens in one step: K and V of 4 tokens × 1 K/V head × 4 dims, float32.
  limits.max_kv_cache_bytes = 2 * 4 * 1 * 4 * 4;
  TestServer server(tiny.Repository(), limits);
  const std::vector<float> x = RandomVector(8 * kD, 42);

  grpc::ClientContext first_context;
  auto first = server.stub().Decode(&first_context);
  v1::DecodeResponse response;
  ASSERT_TRUE(first->Write(Step(x, 0, 4)));
  ASSERT_TRUE(first->Read(&response));

  {  // while the first stream holds its cache, a second one does not fit
    grpc::ClientContext context;
    auto second = server.stub().Decode(&context);
    ASSERT_TRUE(second->Write(Step(x, 0, 1)));
    EXPECT_FALSE(second->Read(&response));
    const grpc::Status status = second->Finish();
    EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(status.error_message(),
                HasSubstr("does not fit --max_kv_cache_bytes=" +
                          std::to_string(limits.max_kv_cache_bytes)));
  }
  EXPECT_EQ(server.Sample("attnserve_rejected_requests_total", {{"reason", "kv_cache_budget"}}),
            1);
  EXPECT_EQ(server.Sample("attnserve_kv_cache_bytes", {}), limits.max_kv_cache_bytes);
  first->WritesDone();
  ASSERT_TRUE(first->Finish().ok());
  EXPECT_EQ(server.Sample("attnserve_kv_cache_bytes", {}), 0);
  EXPECT_EQ(server.Sample("attnserve_decode_streams", {}), 0);

  grpc::ClientContext context;  // the first stream's share came back: 4 tokens fit again
  auto third = server.stub().Decode(&context);
  ASSERT_TRUE(third->Write(Step(x, 4, 4)));
  EXPECT_TRUE(third->Read(&response));
  third->WritesDone();
  EXPECT_TRUE(third->Finish().ok());
  // Each computed step's tokens, under the stream's model.
  EXPECT_EQ(server.Sample("attnserve_tokens_total", {{"rpc", "Decode"}, {"model", "tiny"}}), 8);
}

TEST(DecodeRpcTest, AStepMayNotSwitchModelsOrPassMaxPositions) {
  const TinyModel tiny;
  TestServer server(tiny.Repository());
  const std::vector<float> x = RandomVector(65 * kD, 43);
  for (const auto& [request, message] :
       {std::pair<v1::DecodeRequest, std::string>{Step(x, 0, 65),
                                                  "query.shape[1]=65 new tokens after 0 would "
                                                  "pass the stream's 64 positions"},
        {[&] {
           v1::DecodeRequest r = Step(x, 0, 1);
           *r.mutable_query() = F32({2, 1, kD}, std::vector<float>(2 * kD));
           return r;
         }(),
         "query.shape[0]=2 must be 1 (one sequence per stream)"}}) {
    grpc::ClientContext context;
    auto stream = server.stub().Decode(&context);
    ASSERT_TRUE(stream->Write(request));
    v1::DecodeResponse response;
    EXPECT_FALSE(stream->Read(&response));
    const grpc::Status status = stream->Finish();
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  }
  grpc::ClientContext context;
  auto stream = server.stub().Decode(&context);
  ASSERT_TRUE(stream->Write(Step(x, 0, 1)));
  v1::DecodeResponse response;
  ASSERT_TRUE(stream->Read(&response));
  v1::DecodeRequest other = Step(x, 1, 1);
  other.set_model("demo-rope");
  ASSERT_TRUE(stream->Write(other));
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_THAT(stream->Finish().error_message(),
              HasSubstr("model=\"demo-rope\" differs from the stream's model=\"tiny\""));
}

// A thousand idle streams: the one past --max_decode_streams is refused at once, and every idle
// one is ended by the idle timeout (not before it, and within a second after), its cache freed.
TEST(DecodeRpcTest, StreamsPastTheCapAreRefusedAndIdleOnesEnded) {
  constexpr int kStreams = 1000;
  // Longer than opening the 1,000 streams takes (0.5 s on a quiet 2-core machine, 3.3 s beside
  // another test suite; far longer under the sanitizers).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr auto kIdleTimeout = std::chrono::seconds(30);
#else
  constexpr auto kIdleTimeout = std::chrono::seconds(10);
#endif
  const auto start = std::chrono::steady_clock::now();
  const TinyModel tiny;
  ServiceLimits limits;
  limits.max_decode_streams = kStreams;
  limits.decode_idle_timeout = kIdleTimeout;
  TestServer server(tiny.Repository(), limits);
  const std::vector<float> x = RandomVector(kD, 44);
  struct OpenStream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::DecodeRequest, v1::DecodeResponse>> stream;
  };
  std::vector<std::unique_ptr<OpenStream>> streams;
  v1::DecodeResponse response;
  for (int i = 0; i < kStreams; ++i) {
    auto open = std::make_unique<OpenStream>();
    // Were the server never to end them, the client's own deadline would, with another message.
    open->context.set_deadline(std::chrono::system_clock::now() + 3 * kIdleTimeout);
    open->stream = server.stub().Decode(&open->context);
    ASSERT_TRUE(open->stream->Write(Step(x, 0, 1)));
    ASSERT_TRUE(open->stream->Read(&response)) << "stream " << i;
    streams.push_back(std::move(open));
  }
  const auto all_idle = std::chrono::steady_clock::now();
  ASSERT_LT(all_idle - start, kIdleTimeout) << "opening the streams took longer than the timeout";
  {
    grpc::ClientContext context;
    auto refused = server.stub().Decode(&context);
    refused->Write(Step(x, 0, 1));
    EXPECT_FALSE(refused->Read(&response));
    const grpc::Status status = refused->Finish();
    EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(status.error_message(), HasSubstr("1000 Decode streams are open "
                                                  "(--max_decode_streams=1000)"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - all_idle, kIdleTimeout);  // refused at once
  EXPECT_EQ(server.Sample("attnserve_decode_streams", {}), kStreams);

  // The server ends each idle stream: the client's next read fails, with the reason.
  for (auto& open : streams) {
    EXPECT_FALSE(open->stream->Read(&response));
    const grpc::Status status = open->stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED);
    EXPECT_THAT(status.error_message(),
                HasSubstr(absl::StrCat("no message for ", kIdleTimeout.count(),
                                       " s (--decode_idle_timeout_seconds)")));
  }
  const auto reaped = std::chrono::steady_clock::now() - all_idle;
  EXPECT_GE(reaped, kIdleTimeout);
  EXPECT_LT(reaped, kIdleTimeout + std::chrono::seconds(1));
  EXPECT_EQ(server.Sample("attnserve_rejected_requests_total", {{"reason", "decode_streams"}}),
            1);
  EXPECT_EQ(server.Sample("attnserve_rejected_requests_total",
                          {{"reason", "decode_idle_timeout"}}),
            kStreams);
  EXPECT_EQ(server.Sample("attnserve_decode_streams", {}), 0);
  EXPECT_EQ(server.Sample("attnserve_kv_cache_bytes", {}), 0);

  grpc::ClientContext context;  // room again
  auto stream = server.stub().Decode(&context);
  ASSERT_TRUE(stream->Write(Step(x, 0, 1)));
  EXPECT_TRUE(stream->Read(&response));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// A stream that keeps stepping, each step within the idle timeout, lives past it.
TEST(DecodeRpcTest, AStreamThatKeepsSteppingIsNotEnded) {
  // A step's round trip must fit in the rest of the timeout, also on a loaded machine and under
  // the sanitizers.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr auto kIdleTimeout = std::chrono::milliseconds(3000);
#else
  constexpr auto kIdleTimeout = std::chrono::milliseconds(1000);
#endif
  constexpr int kSteps = 8;  // kSteps pauses of a third of the timeout: well past it in all
  const TinyModel tiny;
  ServiceLimits limits;
  limits.decode_idle_timeout = kIdleTimeout;
  TestServer server(tiny.Repository(), limits);
  const std::vector<float> x = RandomVector(kSteps * kD, 45);
  grpc::ClientContext context;
  auto stream = server.stub().Decode(&context);
  v1::DecodeResponse response;
  for (int64_t token = 0; token < kSteps; ++token) {
    ASSERT_TRUE(stream->Write(Step(x, token, 1)));
    ASSERT_TRUE(stream->Read(&response)) << "step " << token;
    std::this_thread::sleep_for(kIdleTimeout / 3);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace attnserve::testing
