// MultiHeadAttention::ForwardBatch and DecodeBatch (packed projections, attention per member)
// against Forward and Decode on each member alone, for every kind of encoding, f32 and bf16:
// members of different lengths, batch sizes, cache lengths, causal or not, key lengths,
// cross-attention, position offsets, probabilities; and members that fail (invalid, cancelled,
// another compute type) fail alone.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/attention/multi_head_attention.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"
#include "tests/core/test_encodings.h"

namespace attnserve {
namespace {

using ::attnserve::testing::MaxRelativeDifference;
using ::attnserve::testing::RandomVector;

constexpr int64_t kD = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 16;

// A member's inputs and the buffers they point to.
struct MemberData {
  int64_t batch, q_len, kv_len;
  bool cross, causal, probs;
  int64_t position_offset;
  std::vector<int64_t> key_lengths;
  std::vector<float> query, context;
  std::vector<int64_t> positions;
  AttendInputs inputs;

  MemberData(int64_t batch, int64_t q_len, int64_t kv_len, bool cross, bool causal, bool probs,
             int64_t position_offset, std::vector<int64_t> key_lengths, uint32_t seed)
      : batch(batch), q_len(q_len), kv_len(cross ? kv_len : q_len), cross(cross), causal(causal),
        probs(probs), position_offset(position_offset), key_lengths(std::move(key_lengths)),
        query(RandomVector(batch * q_len * kD, seed)),
        context(RandomVector(batch * this->kv_len * kD, seed + 1)) {
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < q_len; ++t) positions.push_back(position_offset + 2 * b + t);
    }
    inputs.query = query.data();
    inputs.batch = batch;
    inputs.q_len = q_len;
    inputs.context = cross ? context.data() : nullptr;
    inputs.kv_len = this->kv_len;
    inputs.positions = positions.data();
    inputs.causal = causal;
    inputs.key_lengths = this->key_lengths;
  }
  int64_t OutSize() const { return batch * q_len * kD; }
  int64_t ProbsSize() const { return batch * kHeads * q_len * kv_len; }
};

std::vector<std::unique_ptr<MemberData>> MixedMembers(ComputeType compute) {
  std::vector<std::unique_ptr<MemberData>> members;
  // batch, q_len, kv_len, cross, causal, probs, position offset, key lengths
  members.push_back(std::make_unique<MemberData>(1, 1, 0, false, false, false, 0,
                                                 std::vector<int64_t>{}, 100));
  members.push_back(std::make_unique<MemberData>(1, 7, 0, false, true, false, 5,
                                                 std::vector<int64_t>{}, 200));
  members.push_back(std::make_unique<MemberData>(2, 5, 0, false, false, true, 0,
                                                 std::vector<int64_t>{3, 5}, 300));
  members.push_back(std::make_unique<MemberData>(1, 12, 9, true, false, false, 3,
                                                 std::vector<int64_t>{}, 400));
  members.push_back(std::make_unique<MemberData>(1, 33, 0, false, true, true, 31,
                                                 std::vector<int64_t>{}, 500));
  members.push_back(std::make_unique<MemberData>(3, 2, 0, false, true, false, 7,
                                                 std::vector<int64_t>{}, 600));
  for (auto& member : members) member->inputs.compute = compute;
  return members;
}

std::unique_ptr<MultiHeadAttention> MakeLayer(const std::string& encoding) {
  AttentionConfig config;
  config.d_model = kD;
  config.num_heads = kHeads;
  config.num_kv_heads = kKvHeads;
  config.encoding = ::attnserve::testing::TestEncoding(encoding, kHeads, kHeadDim, kD);
  AttentionWeights w;
  w.q_proj_weight = RandomVector(kHeads * kHeadDim * kD, 61, 0.125f);
  w.k_proj_weight = RandomVector(kKvHeads * kHeadDim * kD, 62, 0.125f);
  w.v_proj_weight = RandomVector(kKvHeads * kHeadDim * kD, 63, 0.125f);
  w.o_proj_weight = RandomVector(kD * kHeads * kHeadDim, 64, 0.125f);
  w.q_proj_bias = RandomVector(kHeads * kHeadDim, 65, 0.1f);
  w.o_proj_bias = RandomVector(kD, 66, 0.1f);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(config, std::move(w));
  EXPECT_TRUE(layer.ok()) << layer.status();
  return layer.ok() ? *std::move(layer) : nullptr;
}

// MaxRelativeDifference against the member alone: the packed projections may sum in another
// order than the member's own (oneDNN picks its blocking by the number of rows; with AVX-512 here
// they agree bit for bit, held to AVX2 they differ by up to 2.3e-7). f32: 1e-6 of the output's
// scale (a few ulps; the bound). bf16: the operands are the same bf16 values either way,
// so the same bound holds.
constexpr double kTolerance = 1e-6;

// Every encoding kind, f32 and bf16 compute; test names such as "rope_bf16".
using EncodingAndCompute = std::tuple<const char*, ComputeType>;

auto EncodingsAndComputeTypes() {
  return ::testing::Combine(::testing::Values("none", "sinusoidal", "learned", "rope",
                                              "rope_dynamic_ntk", "alibi", "t5", "cope"),
                            ::testing::Values(ComputeType::kFloat32, ComputeType::kBfloat16));
}

std::string EncodingAndComputeName(const ::testing::TestParamInfo<EncodingAndCompute>& info) {
  return std::string(std::get<0>(info.param)) +
         (std::get<1>(info.param) == ComputeType::kBfloat16 ? "_bf16" : "_f32");
}

class ForwardBatchTest : public ::testing::TestWithParam<EncodingAndCompute> {};

TEST_P(ForwardBatchTest, EachMemberEqualsForwardAlone) {
  const auto [encoding, compute] = GetParam();
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer(encoding);
  ASSERT_NE(layer, nullptr);
  std::vector<std::unique_ptr<MemberData>> members = MixedMembers(compute);

  std::vector<std::vector<float>> alone_out, alone_probs, batch_out, batch_probs;
  std::vector<LayerBatchMember> batch;
  for (const auto& member : members) {
    alone_out.emplace_back(member->OutSize());
    alone_probs.emplace_back(member->probs ? member->ProbsSize() : 0);
    const absl::Status status = layer->Forward(
        member->inputs, alone_out.back().data(), member->probs ? alone_probs.back().data() : nullptr);
    ASSERT_TRUE(status.ok()) << status;
    batch_out.emplace_back(member->OutSize(), std::numeric_limits<float>::quiet_NaN());
    batch_probs.emplace_back(member->probs ? member->ProbsSize() : 0);
  }
  for (size_t i = 0; i < members.size(); ++i) {
    batch.push_back({&members[i]->inputs, batch_out[i].data(),
                     members[i]->probs ? batch_probs[i].data() : nullptr});
  }
  const std::vector<absl::Status> statuses = layer->ForwardBatch(batch);
  ASSERT_EQ(statuses.size(), members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "member " << i);
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    EXPECT_LE(MaxRelativeDifference(batch_out[i], alone_out[i]), kTolerance);
    EXPECT_LE(MaxRelativeDifference(batch_probs[i], alone_probs[i]), kTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Encodings, ForwardBatchTest, EncodingsAndComputeTypes(),
                         EncodingAndComputeName);

// Members differing only in their position offsets get different outputs (an absolute encoding),
// each its own: a batch that gave one member another's positions (or none) would fail here.
TEST(ForwardBatchTest, PositionOffsetsStayWithTheirMembers) {
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer("sinusoidal");
  ASSERT_NE(layer, nullptr);
  MemberData first(1, 6, 0, false, true, false, 0, {}, 700);
  MemberData second(1, 6, 0, false, true, false, 40, {}, 700);  // same tokens, later positions
  std::vector<float> first_alone(first.OutSize()), second_alone(second.OutSize());
  ASSERT_TRUE(layer->Forward(first.inputs, first_alone.data(), nullptr).ok());
  ASSERT_TRUE(layer->Forward(second.inputs, second_alone.data(), nullptr).ok());
  ASSERT_GT(MaxRelativeDifference(first_alone, second_alone), 1e-3);
  std::vector<float> first_out(first.OutSize()), second_out(second.OutSize());
  const std::vector<absl::Status> statuses =
      layer->ForwardBatch({{&first.inputs, first_out.data(), nullptr},
                           {&second.inputs, second_out.data(), nullptr}});
  ASSERT_TRUE(statuses[0].ok() && statuses[1].ok());
  EXPECT_LE(MaxRelativeDifference(first_out, first_alone), kTolerance);
  EXPECT_LE(MaxRelativeDifference(second_out, second_alone), kTolerance);
}

TEST(ForwardBatchTest, FailingMembersFailAloneAndTheOthersRun) {
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer("alibi");
  ASSERT_NE(layer, nullptr);
  std::vector<std::unique_ptr<MemberData>> members = MixedMembers(ComputeType::kFloat32);
  members[1]->inputs.key_lengths = {1, 2, 3};  // three lengths for one batch element
  members[2]->inputs.is_cancelled = [] { return true; };
  members[4]->inputs.compute = ComputeType::kBfloat16;  // not the batch's (the first's) type
  std::vector<std::vector<float>> alone(members.size()), out(members.size());
  std::vector<LayerBatchMember> batch;
  for (size_t i = 0; i < members.size(); ++i) {
    alone[i].resize(members[i]->OutSize());
    out[i].assign(members[i]->OutSize(), std::numeric_limits<float>::quiet_NaN());
    batch.push_back({&members[i]->inputs, out[i].data(), nullptr});
  }
  const std::vector<absl::Status> statuses = layer->ForwardBatch(batch);
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kInvalidArgument) << statuses[1];
  EXPECT_EQ(statuses[1], layer->Forward(members[1]->inputs, alone[1].data(), nullptr));
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kCancelled) << statuses[2];
  EXPECT_EQ(statuses[4].code(), absl::StatusCode::kInvalidArgument) << statuses[4];
  for (size_t i : {0, 3, 5}) {
    SCOPED_TRACE(::testing::Message() << "member " << i);
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    ASSERT_TRUE(layer->Forward(members[i]->inputs, alone[i].data(), nullptr).ok());
    EXPECT_LE(MaxRelativeDifference(out[i], alone[i]), kTolerance);
  }
}

// A member whose positions pass its learned table (64 rows) fails as it would alone, and only it:
// the embedding of packed rows is checked per member.
TEST(ForwardBatchTest, PositionsPastALearnedTableFailOnlyTheirMember) {
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer("learned");
  ASSERT_NE(layer, nullptr);
  MemberData inside(1, 5, 0, false, true, false, 10, {}, 720);
  MemberData past(1, 5, 0, false, true, false, 62, {}, 730);  // positions 62…66
  std::vector<float> inside_alone(inside.OutSize()), past_alone(past.OutSize());
  ASSERT_TRUE(layer->Forward(inside.inputs, inside_alone.data(), nullptr).ok());
  const absl::Status past_status = layer->Forward(past.inputs, past_alone.data(), nullptr);
  ASSERT_FALSE(past_status.ok());
  std::vector<float> inside_out(inside.OutSize()), past_out(past.OutSize());
  const std::vector<absl::Status> statuses =
      layer->ForwardBatch({{&past.inputs, past_out.data(), nullptr},
                           {&inside.inputs, inside_out.data(), nullptr}});
  EXPECT_EQ(statuses[0], past_status);
  ASSERT_TRUE(statuses[1].ok()) << statuses[1];
  EXPECT_LE(MaxRelativeDifference(inside_out, inside_alone), kTolerance);
}

// Streams with caches of different lengths, stepped together with DecodeBatch and each alone
// with Decode (from copies of the same caches): the outputs, probabilities and grown caches agree.
class DecodeBatchTest : public ::testing::TestWithParam<EncodingAndCompute> {};

TEST_P(DecodeBatchTest, EachStreamEqualsDecodeAlone) {
  const auto [encoding, compute] = GetParam();
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer(encoding);
  ASSERT_NE(layer, nullptr);
  // (tokens already cached, new tokens) per stream; the first has no cache yet.
  const std::vector<std::pair<int64_t, int64_t>> streams = {{0, 3}, {5, 1}, {9, 1}, {2, 4}, {20, 2}};
  std::vector<KvCache> caches(streams.size());
  for (size_t s = 0; s < streams.size(); ++s) {
    if (streams[s].first == 0) continue;
    const std::vector<float> prefix = RandomVector(streams[s].first * kD, 800 + s);
    DecodeInputs inputs;
    inputs.query = prefix.data();
    inputs.new_tokens = streams[s].first;
    inputs.compute = compute;
    std::vector<float> out(streams[s].first * kD);
    ASSERT_TRUE(layer->Decode(inputs, &caches[s], out.data(), nullptr).ok());
  }
  std::vector<KvCache> alone_caches = caches;
  std::vector<std::vector<float>> queries, alone_out, batch_out, alone_probs, batch_probs;
  std::vector<DecodeInputs> inputs(streams.size());
  std::vector<DecodeBatchMember> batch;
  for (size_t s = 0; s < streams.size(); ++s) {
    const auto [cached, n] = streams[s];
    queries.push_back(RandomVector(n * kD, 900 + s));
    inputs[s].query = queries.back().data();
    inputs[s].new_tokens = n;
    inputs[s].compute = compute;
    alone_out.emplace_back(n * kD);
    batch_out.emplace_back(n * kD, std::numeric_limits<float>::quiet_NaN());
    alone_probs.emplace_back(s == 1 ? kHeads * n * (cached + n) : 0);
    batch_probs.emplace_back(alone_probs.back().size());
  }
  for (size_t s = 0; s < streams.size(); ++s) {
    float* probs = s == 1 ? alone_probs[s].data() : nullptr;
    ASSERT_TRUE(layer->Decode(inputs[s], &alone_caches[s], alone_out[s].data(), probs).ok());
    batch.push_back({&inputs[s], &caches[s], batch_out[s].data(),
                     s == 1 ? batch_probs[s].data() : nullptr});
  }
  const std::vector<absl::Status> statuses = layer->DecodeBatch(batch);
  for (size_t s = 0; s < streams.size(); ++s) {
    SCOPED_TRACE(::testing::Message() << "stream " << s);
    ASSERT_TRUE(statuses[s].ok()) << statuses[s];
    EXPECT_LE(MaxRelativeDifference(batch_out[s], alone_out[s]), kTolerance);
    EXPECT_LE(MaxRelativeDifference(batch_probs[s], alone_probs[s]), kTolerance);
    EXPECT_EQ(caches[s].length, alone_caches[s].length);
    EXPECT_LE(MaxRelativeDifference(caches[s].k, alone_caches[s].k), kTolerance);
    EXPECT_LE(MaxRelativeDifference(caches[s].v, alone_caches[s].v), kTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Encodings, DecodeBatchTest, EncodingsAndComputeTypes(),
                         EncodingAndComputeName);

TEST(DecodeBatchTest, AFailingStreamKeepsItsCacheAndTheOthersStep) {
  const std::unique_ptr<MultiHeadAttention> layer = MakeLayer("rope");
  ASSERT_NE(layer, nullptr);
  std::vector<KvCache> caches(3);
  std::vector<std::vector<float>> queries, out;
  std::vector<DecodeInputs> inputs(3);
  std::vector<DecodeBatchMember> batch;
  for (int s = 0; s < 3; ++s) {
    queries.push_back(RandomVector(2 * kD, 950 + s));
    out.emplace_back(2 * kD);
    inputs[s].query = queries.back().data();
    inputs[s].new_tokens = 2;
  }
  inputs[1].is_cancelled = [] { return true; };
  for (int s = 0; s < 3; ++s) batch.push_back({&inputs[s], &caches[s], out[s].data(), nullptr});
  const std::vector<absl::Status> statuses = layer->DecodeBatch(batch);
  EXPECT_TRUE(statuses[0].ok()) << statuses[0];
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kCancelled) << statuses[1];
  EXPECT_TRUE(statuses[2].ok()) << statuses[2];
  EXPECT_EQ(caches[0].length, 2);
  EXPECT_EQ(caches[1].length, 0);
  EXPECT_EQ(caches[2].length, 2);
  // The failed step left no trace: the stream's next step is what a fresh stream's first is.
  inputs[1].is_cancelled = nullptr;
  KvCache fresh;
  std::vector<float> expected(2 * kD), retried(2 * kD);
  ASSERT_TRUE(layer->Decode(inputs[1], &fresh, expected.data(), nullptr).ok());
  ASSERT_TRUE(layer->Decode(inputs[1], &caches[1], retried.data(), nullptr).ok());
  EXPECT_EQ(retried, expected);
  EXPECT_EQ(caches[1].length, 2);
}

}  // namespace
}  // namespace attnserve
