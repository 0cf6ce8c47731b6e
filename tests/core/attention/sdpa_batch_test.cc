// ScaledDotProductAttentionBatch against ScaledDotProductAttention on each member alone: bit for
// bit, for members of every encoding the kernel applies, f32 and bf16 tensors, big and small
// members (the two schedules), and members that fail alone.
#include "core/attention/sdpa_batch.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/attention/scaled_dot_product_attention.h"
#include "core/kernels/bfloat16.h"
#include "gtest/gtest.h"
#include "tests/core/reference_attention.h"
#include "tests/core/test_encodings.h"

namespace attnserve {
namespace {

using ::attnserve::testing::RandomVector;

template <typename T>
struct Member {
  SdpaShape shape;
  SdpaOptions options;
  std::vector<T> q, k, v;
  bool probs = false;

  int64_t OutSize() const { return shape.batch * shape.num_heads * shape.q_len * shape.head_dim; }
  int64_t ProbsSize() const { return shape.batch * shape.num_heads * shape.q_len * shape.kv_len; }
};

std::vector<float> Values(int64_t count, uint32_t seed, float) {
  return RandomVector(count, seed);
}
std::vector<uint16_t> Values(int64_t count, uint32_t seed, uint16_t) {
  const std::vector<float> values = RandomVector(count, seed);
  std::vector<uint16_t> bits(count);
  for (int64_t i = 0; i < count; ++i) bits[i] = FloatToBfloat16(values[i]);
  return bits;
}

// A member of shape [B, 4, Sq, 16] × [B, 2, Sk, 16] with `encoding` at positions offset + …
template <typename T>
std::unique_ptr<Member<T>> MakeMember(const std::string& encoding, int64_t batch, int64_t q_len,
                                      int64_t kv_len, bool causal, int64_t offset, uint32_t seed) {
  auto member = std::make_unique<Member<T>>();
  member->shape = SdpaShape{batch, 4, 2, q_len, kv_len, 16};
  member->options.causal = causal;
  member->options.encoding = ::attnserve::testing::TestEncoding(encoding, 4, 16, 64);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < q_len; ++i) member->options.q_positions.push_back(offset + kv_len - q_len + i + b);
    for (int64_t j = 0; j < kv_len; ++j) member->options.k_positions.push_back(offset + j + b);
  }
  if constexpr (sizeof(T) == 2) member->options.compute = ComputeType::kBfloat16;
  member->q = Values(member->OutSize(), seed, T{});
  member->k = Values(batch * 2 * kv_len * 16, seed + 1, T{});
  member->v = Values(batch * 2 * kv_len * 16, seed + 2, T{});
  return member;
}

absl::Status Alone(const Member<float>& m, float* out, float* probs) {
  return ScaledDotProductAttention(m.shape, m.options, m.q.data(), m.k.data(), m.v.data(), out,
                                   probs);
}
absl::Status Alone(const Member<uint16_t>& m, uint16_t* out, float*) {
  return ScaledDotProductAttention(m.shape, m.options, m.q.data(), m.k.data(), m.v.data(), out);
}

// Runs the members as a batch and alone, and compares each member's results bit for bit.
template <typename T>
void ExpectBatchEqualsAlone(const std::vector<std::unique_ptr<Member<T>>>& members) {
  std::vector<std::vector<T>> out(members.size()), alone(members.size());
  std::vector<std::vector<float>> probs(members.size()), alone_probs(members.size());
  std::vector<SdpaBatchMember<T>> batch;
  for (size_t i = 0; i < members.size(); ++i) {
    const Member<T>& m = *members[i];
    out[i].assign(m.OutSize(), T{1});
    alone[i].assign(m.OutSize(), T{2});
    probs[i].assign(m.probs ? m.ProbsSize() : 0, 3.0f);
    alone_probs[i].assign(m.probs ? m.ProbsSize() : 0, 4.0f);
    batch.push_back({m.shape, &m.options, m.q.data(), m.k.data(), m.v.data(), out[i].data(),
                     m.probs ? probs[i].data() : nullptr});
  }
  const std::vector<absl::Status> statuses = ScaledDotProductAttentionBatch(batch);
  ASSERT_EQ(statuses.size(), members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "member " << i);
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    ASSERT_TRUE(Alone(*members[i], alone[i].data(),
                      members[i]->probs ? alone_probs[i].data() : nullptr)
                    .ok());
    EXPECT_EQ(std::memcmp(out[i].data(), alone[i].data(), out[i].size() * sizeof(T)), 0);
    EXPECT_EQ(probs[i], alone_probs[i]);
  }
}

TEST(SdpaBatchTest, MixedF32MembersEqualTheirCallsAlone) {
  std::vector<std::unique_ptr<Member<float>>> members;
  uint32_t seed = 10;
  for (const char* encoding : {"none", "rope", "rope_dynamic_ntk", "alibi", "t5", "cope"}) {
    members.push_back(MakeMember<float>(encoding, 1, 1, 1, false, 0, seed += 10));
    members.push_back(MakeMember<float>(encoding, 2, 9, 9, true, 3, seed += 10));
    members.push_back(MakeMember<float>(encoding, 1, 5, 17, false, 70, seed += 10));
  }
  members[4]->probs = true;
  members[8]->options.key_lengths = {11};
  // Long enough to exceed an even share of the batch: runs first, on every thread.
  members.push_back(MakeMember<float>("alibi", 1, 300, 300, true, 0, 999));
  ExpectBatchEqualsAlone(members);
}

TEST(SdpaBatchTest, Bfloat16MembersEqualTheirCallsAlone) {
  std::vector<std::unique_ptr<Member<uint16_t>>> members;
  uint32_t seed = 20;
  for (const char* encoding : {"none", "rope", "alibi", "t5", "cope"}) {
    members.push_back(MakeMember<uint16_t>(encoding, 1, 3, 3, true, 0, seed += 10));
    members.push_back(MakeMember<uint16_t>(encoding, 2, 8, 40, false, 5, seed += 10));
  }
  ExpectBatchEqualsAlone(members);
}

TEST(SdpaBatchTest, FailingMembersFailAlone) {
  std::vector<std::unique_ptr<Member<float>>> members;
  for (uint32_t seed : {1, 2, 3, 4}) {
    members.push_back(MakeMember<float>("alibi", 1, 6, 6, true, 0, seed * 10));
  }
  members[1]->options.key_lengths = {7};  // more than Sk
  members[2]->options.is_cancelled = [] { return true; };
  std::vector<std::vector<float>> out(members.size());
  std::vector<SdpaBatchMember<float>> batch;
  for (const auto& m : members) {
    out[batch.size()].resize(m->OutSize());
    batch.push_back({m->shape, &m->options, m->q.data(), m->k.data(), m->v.data(),
                     out[batch.size()].data(), nullptr});
  }
  const std::vector<absl::Status> statuses = ScaledDotProductAttentionBatch(batch);
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kInvalidArgument) << statuses[1];
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kCancelled) << statuses[2];
  for (int i : {0, 3}) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    std::vector<float> alone(members[i]->OutSize());
    ASSERT_TRUE(Alone(*members[i], alone.data(), nullptr).ok());
    EXPECT_EQ(out[i], alone) << "member " << i;
  }
}

}  // namespace
}  // namespace attnserve
