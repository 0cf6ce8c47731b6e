#include "core/attention/multi_head_attention.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/kernels/onednn_ops.h"
#include "core/attention/sdpa_batch.h"
#include "core/base/status_macros.h"
#include "core/encodings/positions.h"
#include "core/kernels/bfloat16_rows.h"

namespace attnserve {
namespace {

absl::Status CheckSize(const char* name, const std::vector<float>& tensor, int64_t expected,
                       bool optional) {
  if (optional && tensor.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(tensor.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", tensor.size(), " elements; expected ", expected));
  }
  return absl::OkStatus();
}

// The cache with room for `capacity` tokens per head: its `length` tokens copied into new
// arrays. Throws std::bad_alloc when they cannot be had (the cache is then unchanged).
void Regrow(KvCache& cache, int64_t capacity, int64_t heads, int64_t hd) {
  std::vector<float> k(heads * capacity * hd), v(heads * capacity * hd);
  for (int64_t head = 0; head < heads; ++head) {
    const int64_t from = head * cache.capacity * hd, to = head * capacity * hd;
    std::copy_n(cache.k.begin() + from, cache.length * hd, k.begin() + to);
    std::copy_n(cache.v.begin() + from, cache.length * hd, v.begin() + to);
  }
  cache.k = std::move(k);
  cache.v = std::move(v);
  cache.capacity = capacity;
}

// The cache's rows length…length + n of every head ← rows [heads, n, hd].
void WriteNewRows(const std::vector<float>& rows, int64_t heads, int64_t n, int64_t hd,
                  std::vector<float>& cache_rows, const KvCache& cache) {
  for (int64_t head = 0; head < heads; ++head) {
    std::copy_n(rows.begin() + head * n * hd, n * hd,
                cache_rows.begin() + (head * cache.capacity + cache.length) * hd);
  }
}

// dst [batch, heads, seq, hd] ← one member's rows of the packed projection src [heads, T, hd]:
// tokens offset…offset + batch·seq of every head.
void GatherMemberHeads(const float* src, int64_t total_tokens, int64_t heads, int64_t hd,
                       int64_t offset, int64_t batch, int64_t seq, float* dst) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(dst + (b * heads + h) * seq * hd, src + (h * total_tokens + offset + b * seq) * hd,
                  seq * hd * sizeof(float));
    }
  }
}

const float* DataOrNull(const std::vector<float>& tensor) {
  return tensor.empty() ? nullptr : tensor.data();
}

// The buffers of Forward, kept by each calling thread for its next call: fresh ones cost a page
// fault per 4 KiB and a zero fill on every call (a quarter of a 2048-token bf16 layer call).
// Contents are not kept. A thread holds at most kKeptFloats between calls; a larger call frees
// its buffers when done.
class ForwardBuffers {
 public:
  // The last three are ForwardBatch's: the packed contexts, and the members' K and V gathered
  // from the packed projections.
  enum Slot {
    kEmbedded, kScratch, kQuery, kKey, kValue, kAttended,
    kContext, kMemberKeys, kMemberValues, kSlots
  };
  static constexpr int64_t kKeptFloats = int64_t{16} << 20;  // 64 MiB

  static ForwardBuffers& OfThisThread() {
    thread_local ForwardBuffers buffers;
    return buffers;
  }

  // `count` uninitialised floats for `slot`, valid until the next Get of the slot or Release.
  float* Get(Slot slot, int64_t count) {
    if (count > sizes_[slot]) {
      data_[slot].reset();  // the old buffer goes before the new one comes
      sizes_[slot] = 0;     // (and stays gone if the new one cannot be had)
      data_[slot].reset(new float[count]);
      sizes_[slot] = count;
    }
    return data_[slot].get();
  }

  // Frees every buffer when together they exceed kKeptFloats.
  void ReleaseIfLarge() {
    int64_t total = 0;
    for (int64_t size : sizes_) total += size;
    if (total <= kKeptFloats) return;
    for (int slot = 0; slot < kSlots; ++slot) {
      data_[slot].reset();
      sizes_[slot] = 0;
    }
  }

 private:
  std::unique_ptr<float[]> data_[kSlots];
  int64_t sizes_[kSlots] = {};
};

}  // namespace

absl::StatusOr<std::unique_ptr<MultiHeadAttention>> MultiHeadAttention::Create(
    const AttentionConfig& config, AttentionWeights weights) {
  AttentionConfig resolved = config;
  if (resolved.d_model < 1) {
    return absl::InvalidArgumentError(absl::StrCat("d_model=", resolved.d_model, " must be >= 1"));
  }
  if (resolved.num_heads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads=", resolved.num_heads, " must be >= 1"));
  }
  // Bounds that keep every product of the shape (e.g. H·hd·d, 2·len·Hkv·hd) far from int64 overflow.
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  const struct {
    const char* name;
    int64_t value;
  } dims[] = {{"d_model", resolved.d_model},
              {"num_heads", resolved.num_heads},
              {"num_kv_heads", resolved.num_kv_heads},
              {"head_dim", resolved.head_dim}};
  for (const auto& dim : dims) {
    if (dim.value > kMaxDim) {
      return absl::InvalidArgumentError(
          absl::StrCat(dim.name, "=", dim.value, " must be <= ", kMaxDim));
    }
  }
  if (resolved.num_kv_heads == 0) resolved.num_kv_heads = resolved.num_heads;
  if (resolved.num_kv_heads < 1 || resolved.num_heads % resolved.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_heads=", resolved.num_kv_heads,
                                                   " must divide num_heads=", resolved.num_heads));
  }
  if (resolved.head_dim == 0) {
    if (resolved.d_model % resolved.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("num_heads=", resolved.num_heads,
                                                     " must divide d_model=", resolved.d_model,
                                                     " when head_dim is not given"));
    }
    resolved.head_dim = resolved.d_model / resolved.num_heads;
  }
  if (resolved.head_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim=", resolved.head_dim, " must be >= 1"));
  }
  if (absl::Status status = ValidateEncoding(resolved.encoding, resolved.d_model,
                                             resolved.num_heads, resolved.head_dim);
      !status.ok()) {
    return status;
  }
  const int64_t d = resolved.d_model;
  const int64_t q_width = resolved.num_heads * resolved.head_dim;
  const int64_t kv_width = resolved.num_kv_heads * resolved.head_dim;
  for (const absl::Status& status :
       {CheckSize("q_proj.weight", weights.q_proj_weight, q_width * d, false),
        CheckSize("k_proj.weight", weights.k_proj_weight, kv_width * d, false),
        CheckSize("v_proj.weight", weights.v_proj_weight, kv_width * d, false),
        CheckSize("o_proj.weight", weights.o_proj_weight, d * q_width, false),
        CheckSize("q_proj.bias", weights.q_proj_bias, q_width, true),
        CheckSize("k_proj.bias", weights.k_proj_bias, kv_width, true),
        CheckSize("v_proj.bias", weights.v_proj_bias, kv_width, true),
        CheckSize("o_proj.bias", weights.o_proj_bias, d, true)}) {
    if (!status.ok()) return status;
  }
  return std::unique_ptr<MultiHeadAttention>(new MultiHeadAttention(resolved, std::move(weights)));
}

const MultiHeadAttention::RoundedWeights* MultiHeadAttention::RoundedFor(
    ComputeType compute) const {
  if (compute != ComputeType::kBfloat16) return nullptr;
  absl::call_once(rounded_once_, [this] {
    auto rounded = [](const std::vector<float>& weight) {
      std::vector<uint16_t> bits(weight.size());
      ConvertToBfloat16Parallel(weight.data(), static_cast<int64_t>(weight.size()), bits.data());
      return bits;
    };
    rounded_.q_proj = rounded(weights_.q_proj_weight);
    rounded_.k_proj = rounded(weights_.k_proj_weight);
    rounded_.v_proj = rounded(weights_.v_proj_weight);
    rounded_.o_proj = rounded(weights_.o_proj_weight);
  });
  return &rounded_;
}

absl::Status MultiHeadAttention::Project(const float* input, int64_t batch, int64_t seq,
                                         int64_t heads, const std::vector<float>& weight,
                                         const uint16_t* rounded, const std::vector<float>& bias,
                                         ComputeType compute, float* head_major) const {
  return LinearToHeads(input, batch, seq, config_.d_model, weight.data(), DataOrNull(bias), heads,
                       config_.head_dim, head_major, compute, rounded);
}

absl::Status MultiHeadAttention::ProjectQkv(const float* x, const float* kv_source,
                                            int64_t batch, int64_t q_len, int64_t kv_len,
                                            ComputeType compute, float* q, float* k,
                                            float* v) const {
  const RoundedWeights* rounded = RoundedFor(compute);
  for (absl::Status status :
       {Project(x, batch, q_len, config_.num_heads, weights_.q_proj_weight,
                rounded ? rounded->q_proj.data() : nullptr, weights_.q_proj_bias, compute, q),
        Project(kv_source, batch, kv_len, config_.num_kv_heads, weights_.k_proj_weight,
                rounded ? rounded->k_proj.data() : nullptr, weights_.k_proj_bias, compute, k),
        Project(kv_source, batch, kv_len, config_.num_kv_heads, weights_.v_proj_weight,
                rounded ? rounded->v_proj.data() : nullptr, weights_.v_proj_bias, compute, v)}) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status MultiHeadAttention::ProjectOut(const float* attended, int64_t batch, int64_t seq,
                                            ComputeType compute, float* scratch,
                                            float* out) const {
  const int64_t h = config_.num_heads, hd = config_.head_dim;
  // attended: [B, H, S, hd] → [B, S, H, hd] = [B·S, H·hd] → out = attended·Woᵀ + bo
  if (absl::Status status = SwapMiddleAxes(attended, batch, h, seq, hd, scratch); !status.ok()) {
    return status;
  }
  return ProjectMergedRows(scratch, batch * seq, compute, out);
}

absl::Status MultiHeadAttention::ProjectMergedRows(const float* rows, int64_t count,
                                                   ComputeType compute, float* out) const {
  const RoundedWeights* rounded = RoundedFor(compute);
  return Linear(rows, count, config_.num_heads * config_.head_dim, weights_.o_proj_weight.data(),
                DataOrNull(weights_.o_proj_bias), config_.d_model, out, compute,
                rounded != nullptr ? rounded->o_proj.data() : nullptr);
}

absl::StatusOr<const float*> MultiHeadAttention::EmbedQuery(const float* query,
                                                            const int64_t* positions,
                                                            int64_t tokens,
                                                            float* encoded) const {
  if (!IsAdditive(config_.encoding) ||
      std::holds_alternative<NoPositionalEncoding>(config_.encoding)) {
    return query;
  }
  // The table cache keeps sinusoidal rows across calls (computing sin and cos per call took
  // 6% of a server's CPU under 128-token requests).
  if (absl::Status status = EncodeEmbeddings(config_.encoding, query, positions, tokens, 1,
                                             config_.d_model, 1.0f, 0, encoded, &tables_);
      !status.ok()) {
    return status;
  }
  return encoded;
}

void MultiHeadAttention::PlanAttention(const AttendInputs& inputs, SdpaShape* shape,
                                       SdpaOptions* options) const {
  const int64_t b = inputs.batch, sq = inputs.q_len;
  const int64_t sk = inputs.context != nullptr ? inputs.kv_len : sq;
  *shape = SdpaShape{b, config_.num_heads, config_.num_kv_heads, sq, sk, config_.head_dim};
  options->causal = inputs.causal;
  options->key_lengths = inputs.key_lengths;
  options->scale = config_.scale;
  options->compute = inputs.compute;
  options->is_cancelled = inputs.is_cancelled;
  options->tables = &tables_;
  if (IsAdditive(config_.encoding)) return;
  options->encoding = config_.encoding;
  options->q_positions.assign(inputs.positions, inputs.positions + b * sq);
  if (inputs.context == nullptr) {
    options->k_positions = options->q_positions;
  } else {
    options->k_positions.resize(b * sk);
    for (int64_t i = 0; i < b * sk; ++i) options->k_positions[i] = i % sk;
  }
}

absl::Status MultiHeadAttention::Forward(const AttendInputs& inputs, float* out,
                                         float* probs) const {
  const int64_t h = config_.num_heads;
  const int64_t hkv = config_.num_kv_heads;
  const int64_t hd = config_.head_dim;
  const int64_t b = inputs.batch;
  const int64_t sq = inputs.q_len;
  const int64_t sk = inputs.context != nullptr ? inputs.kv_len : sq;

  SdpaShape shape;
  SdpaOptions options;
  PlanAttention(inputs, &shape, &options);
  if (absl::Status status = ValidateSdpa(shape, options); !status.ok()) return status;
  ForwardBuffers& buffers = ForwardBuffers::OfThisThread();
  using Slot = ForwardBuffers::Slot;
  const absl::Status result = [&]() -> absl::Status {
    // x = query + P[positions] for additive encodings, else the query: [B·Sq, d]
    const absl::StatusOr<const float*> embedded =
        EmbedQuery(inputs.query, inputs.positions, b * sq,
                   buffers.Get(Slot::kEmbedded, b * sq * config_.d_model));
    if (!embedded.ok()) return embedded.status();
    const float* x = *embedded;
    const float* kv_source = inputs.context != nullptr ? inputs.context : x;
    // The projections' and the output merge's [B·S, heads·hd] rows, one at a time.
    float* scratch = buffers.Get(Slot::kScratch, b * std::max(sq, sk) * h * hd);
    float* q = buffers.Get(Slot::kQuery, b * h * sq * hd);
    float* k = buffers.Get(Slot::kKey, b * hkv * sk * hd);
    float* v = buffers.Get(Slot::kValue, b * hkv * sk * hd);
    if (absl::Status status = ProjectQkv(x, kv_source, b, sq, sk, inputs.compute, q, k, v);
        !status.ok()) {
      return status;
    }
    float* attended = buffers.Get(Slot::kAttended, b * h * sq * hd);
    if (absl::Status status = ScaledDotProductAttention(shape, options, q, k, v, attended, probs);
        !status.ok()) {
      return status;
    }
    return ProjectOut(attended, b, sq, inputs.compute, scratch, out);
  }();
  buffers.ReleaseIfLarge();
  return result;
}

struct MultiHeadAttention::PackedBatch {
  struct Member {
    int64_t index;      // in the caller's members
    SdpaShape shape;    // its attention call
    SdpaOptions options;
    int64_t q_offset;   // its first query token among the packed ones
    int64_t kv_offset;  // its first key token
  };
  std::vector<Member> members;
  int64_t q_tokens = 0;   // T: Σ B·Sq
  int64_t kv_tokens = 0;  // Σ B·Sk
  bool cross = false;     // some member attends to a context
  ComputeType compute = ComputeType::kFloat32;
};

std::vector<MultiHeadAttention::PackedBatch> MultiHeadAttention::PlanBatches(
    absl::Span<const LayerBatchMember> members, std::vector<absl::Status>* statuses,
    std::vector<int64_t>* alone) const {
  const int64_t d = config_.d_model, q_width = config_.num_heads * config_.head_dim;
  const int64_t kv_width = config_.num_kv_heads * config_.head_dim;
  std::vector<PackedBatch> groups(1);
  int64_t group_floats = 0;
  bool have_compute = false;
  ComputeType compute = ComputeType::kFloat32;
  for (int64_t i = 0; i < static_cast<int64_t>(members.size()); ++i) {
    const AttendInputs& inputs = *members[i].inputs;
    PackedBatch::Member member{i, {}, {}, 0, 0};
    PlanAttention(inputs, &member.shape, &member.options);
    (*statuses)[i] = ValidateSdpa(member.shape, member.options);
    if (!(*statuses)[i].ok()) continue;
    if (!have_compute) {
      compute = inputs.compute;
      have_compute = true;
    } else if (inputs.compute != compute) {
      (*statuses)[i] = absl::InvalidArgumentError(
          "a batch's members must share one compute type (the first member's)");
      continue;
    }
    // RunPacked's buffers for this member: x and the merged rows [q_rows, d]; q twice and the
    // heads' output [q_rows, H·hd]; k and v twice [kv_rows, Hkv·hd]; its context rows.
    const bool cross = inputs.context != nullptr;
    const int64_t q_rows = member.shape.batch * member.shape.q_len;
    const int64_t kv_rows = member.shape.batch * member.shape.kv_len;
    const int64_t floats = q_rows * (d + 3 * q_width) + kv_rows * (4 * kv_width + (cross ? d : 0));
    if (floats > ForwardBuffers::kKeptFloats) {
      alone->push_back(i);
      continue;
    }
    if (group_floats + floats > ForwardBuffers::kKeptFloats) {
      groups.emplace_back();
      group_floats = 0;
    }
    PackedBatch& group = groups.back();
    group_floats += floats;
    group.compute = compute;
    member.q_offset = group.q_tokens;
    member.kv_offset = group.kv_tokens;
    group.q_tokens += q_rows;
    group.kv_tokens += kv_rows;
    group.cross = group.cross || cross;
    group.members.push_back(std::move(member));
  }
  if (groups.back().members.empty()) groups.pop_back();
  return groups;
}

std::vector<absl::Status> MultiHeadAttention::ForwardBatch(
    absl::Span<const LayerBatchMember> members) const {
  std::vector<absl::Status> statuses(members.size());
  std::vector<int64_t> alone;
  for (const PackedBatch& group : PlanBatches(members, &statuses, &alone)) {
    const absl::Status shared = RunPacked(members, group, &statuses);
    if (shared.ok()) continue;
    for (const PackedBatch::Member& member : group.members) statuses[member.index] = shared;
  }
  for (int64_t i : alone) {
    statuses[i] = Forward(*members[i].inputs, members[i].out, members[i].probs);
  }
  ForwardBuffers::OfThisThread().ReleaseIfLarge();
  return statuses;
}

absl::Status MultiHeadAttention::RunPacked(absl::Span<const LayerBatchMember> members,
                                           const PackedBatch& batch,
                                           std::vector<absl::Status>* statuses) const {
  const int64_t d = config_.d_model, h = config_.num_heads, hkv = config_.num_kv_heads;
  const int64_t hd = config_.head_dim, tokens = batch.q_tokens, kv_tokens = batch.kv_tokens;
  ForwardBuffers& buffers = ForwardBuffers::OfThisThread();
  using Slot = ForwardBuffers::Slot;
  // x = query + P[positions] for additive encodings, else the query, each member's rows packed:
  // [T, d]. A member whose positions its encoding cannot place (past a learned table) fails
  // here alone: its rows are zeros, and it gets no attention call.
  float* x = buffers.Get(Slot::kEmbedded, tokens * d);
  std::vector<bool> embedded_ok(batch.members.size());
  for (size_t m = 0; m < batch.members.size(); ++m) {
    const PackedBatch::Member& member = batch.members[m];
    const AttendInputs& inputs = *members[member.index].inputs;
    const int64_t rows = member.shape.batch * member.shape.q_len;
    float* member_x = x + member.q_offset * d;
    const absl::StatusOr<const float*> embedded =
        EmbedQuery(inputs.query, inputs.positions, rows, member_x);
    embedded_ok[m] = embedded.ok();
    if (!embedded.ok()) {
      (*statuses)[member.index] = embedded.status();
      std::fill_n(member_x, rows * d, 0.0f);
    } else if (*embedded != member_x) {
      std::copy_n(*embedded, rows * d, member_x);
    }
  }
  // The keys' source rows [Σ B·Sk, d]: each member's context, or its own x rows.
  const float* kv_source = x;
  if (batch.cross) {
    float* packed = buffers.Get(Slot::kContext, kv_tokens * d);
    for (const PackedBatch::Member& member : batch.members) {
      const AttendInputs& inputs = *members[member.index].inputs;
      const float* rows = inputs.context != nullptr ? inputs.context : x + member.q_offset * d;
      std::copy_n(rows, member.shape.batch * member.shape.kv_len * d,
                  packed + member.kv_offset * d);
    }
    kv_source = packed;
  }
  // One product per projection for the whole batch: q [H, T, hd]; k, v [Hkv, Σ B·Sk, hd].
  float* q = buffers.Get(Slot::kQuery, h * tokens * hd);
  float* k = buffers.Get(Slot::kKey, hkv * kv_tokens * hd);
  float* v = buffers.Get(Slot::kValue, hkv * kv_tokens * hd);
  RETURN_IF_ERROR(ProjectQkv(x, kv_source, 1, tokens, kv_tokens, batch.compute, q, k, v));
  // Each member's q [B, H, Sq, hd] and k, v [B, Hkv, Sk, hd], one region per member.
  float* member_q = buffers.Get(Slot::kAttended, h * tokens * hd);
  float* member_k = buffers.Get(Slot::kMemberKeys, hkv * kv_tokens * hd);
  float* member_v = buffers.Get(Slot::kMemberValues, hkv * kv_tokens * hd);
  std::vector<SdpaBatchMember<float>> calls;
  std::vector<size_t> running;  // batch.members indices of the calls
  for (size_t m = 0; m < batch.members.size(); ++m) {
    if (!embedded_ok[m]) continue;
    const PackedBatch::Member& member = batch.members[m];
    const SdpaShape& shape = member.shape;
    float* mq = member_q + member.q_offset * h * hd;
    float* mk = member_k + member.kv_offset * hkv * hd;
    float* mv = member_v + member.kv_offset * hkv * hd;
    GatherMemberHeads(q, tokens, h, hd, member.q_offset, shape.batch, shape.q_len, mq);
    GatherMemberHeads(k, kv_tokens, hkv, hd, member.kv_offset, shape.batch, shape.kv_len, mk);
    GatherMemberHeads(v, kv_tokens, hkv, hd, member.kv_offset, shape.batch, shape.kv_len, mv);
    // The member's attended rows go where its packed query rows were (q is read no more).
    calls.push_back({shape, &member.options, mq, mk, mv, q + member.q_offset * h * hd,
                     members[member.index].probs});
    running.push_back(m);
  }
  const std::vector<absl::Status> attended = ScaledDotProductAttentionBatch(calls);
  // attended [B, H, Sq, hd] per member → its rows [B·Sq, H·hd] of scratch; a failed member's
  // rows are zeros (computed, not read).
  float* scratch = buffers.Get(Slot::kScratch, tokens * h * hd);
  std::fill_n(scratch, tokens * h * hd, 0.0f);
  for (size_t c = 0; c < calls.size(); ++c) {
    const PackedBatch::Member& member = batch.members[running[c]];
    (*statuses)[member.index] = attended[c];
    if (!attended[c].ok()) continue;
    RETURN_IF_ERROR(SwapMiddleAxes(calls[c].out, member.shape.batch, h, member.shape.q_len, hd,
                                   scratch + member.q_offset * h * hd));
  }
  // out = attended·Woᵀ + bo for all rows at once (x is read no more), then each member's rows to
  // its output.
  float* out = x;
  RETURN_IF_ERROR(ProjectMergedRows(scratch, tokens, batch.compute, out));
  for (size_t c = 0; c < calls.size(); ++c) {
    const PackedBatch::Member& member = batch.members[running[c]];
    if (!attended[c].ok()) continue;
    std::copy_n(out + member.q_offset * d, member.shape.batch * member.shape.q_len * d,
                members[member.index].out);
  }
  return absl::OkStatus();
}

absl::Status MultiHeadAttention::PlaceDecodePositions(int64_t cached, int64_t new_tokens,
                                                      float* q, float* k_new,
                                                      SdpaOptions& options) const {
  const int64_t total = cached + new_tokens;
  std::vector<int64_t> q_positions, k_positions;
  BottomRightPositions(0, 1, new_tokens, total, &q_positions, &k_positions);
  if (const auto* rope = std::get_if<RopeParams>(&config_.encoding)) {
    // Keys enter the cache rotated, so each is rotated once, at the frequencies of the step that
    // added it (dynamic scalings see the sequence length so far; cached keys are not re-rotated).
    const int64_t hd = config_.head_dim;
    if (absl::Status status = ApplyRopeHeadMajor(*rope, q, 1, config_.num_heads, new_tokens, hd,
                                                 q_positions.data(), total, &tables_, q);
        !status.ok()) {
      return status;
    }
    return ApplyRopeHeadMajor(*rope, k_new, 1, config_.num_kv_heads, new_tokens, hd,
                              q_positions.data(), total, &tables_, k_new);
  }
  if (!IsAdditive(config_.encoding)) {
    options.encoding = config_.encoding;
    options.q_positions = std::move(q_positions);
    options.k_positions = std::move(k_positions);
  }
  return absl::OkStatus();
}

absl::Status MultiHeadAttention::Decode(const DecodeInputs& inputs, KvCache* cache, float* out,
                                        float* probs) const {
  return DecodeBatch({{&inputs, cache, out, probs}}).front();
}

struct MultiHeadAttention::PackedSteps {
  struct Member {
    int64_t index;     // in the caller's members
    int64_t cached;    // tokens in its cache before the step
    int64_t n;         // its new tokens
    int64_t offset;    // its first new token among the packed ones
    SdpaOptions options;
  };
  std::vector<Member> members;
  int64_t tokens = 0;  // N: Σ n
  ComputeType compute = ComputeType::kFloat32;
};

MultiHeadAttention::PackedSteps MultiHeadAttention::PlanSteps(
    absl::Span<const DecodeBatchMember> members, std::vector<absl::Status>* statuses) const {
  PackedSteps steps;
  for (int64_t i = 0; i < static_cast<int64_t>(members.size()); ++i) {
    const DecodeInputs& inputs = *members[i].inputs;
    const int64_t n = inputs.new_tokens, cached = members[i].cache->length;
    if (n < 1) {
      (*statuses)[i] = absl::InvalidArgumentError(absl::StrCat("new tokens=", n, " must be >= 1"));
      continue;
    }
    if (cached + n - 1 > kMaxPosition) {
      (*statuses)[i] = absl::OutOfRangeError(
          absl::StrCat("position ", cached + n - 1, " is past the limit ", kMaxPosition));
      continue;
    }
    if (steps.members.empty()) {
      steps.compute = inputs.compute;
    } else if (inputs.compute != steps.compute) {
      (*statuses)[i] = absl::InvalidArgumentError(
          "a batch's members must share one compute type (the first member's)");
      continue;
    }
    PackedSteps::Member member{i, cached, n, steps.tokens, {}};
    member.options.causal = true;  // bottom-right: new token t sees the cache and new tokens ≤ t
    member.options.scale = config_.scale;
    member.options.compute = inputs.compute;
    member.options.is_cancelled = inputs.is_cancelled;
    member.options.tables = &tables_;
    steps.tokens += n;
    steps.members.push_back(std::move(member));
  }
  return steps;
}

std::vector<absl::Status> MultiHeadAttention::DecodeBatch(
    absl::Span<const DecodeBatchMember> members) const {
  std::vector<absl::Status> statuses(members.size());
  PackedSteps steps = PlanSteps(members, &statuses);
  if (steps.members.empty()) return statuses;
  const absl::Status shared = RunPackedSteps(members, steps, &statuses);
  for (const PackedSteps::Member& member : steps.members) {
    absl::Status& status = statuses[member.index];
    if (!shared.ok()) status = shared;
    // The step's rows are in the cache already; they count from now on.
    if (status.ok()) members[member.index].cache->length = member.cached + member.n;
  }
  return statuses;
}

absl::Status MultiHeadAttention::RunPackedSteps(absl::Span<const DecodeBatchMember> members,
                                                PackedSteps& steps,
                                                std::vector<absl::Status>* statuses) const {
  const int64_t d = config_.d_model, h = config_.num_heads, hkv = config_.num_kv_heads;
  const int64_t hd = config_.head_dim, tokens = steps.tokens;
  // The new tokens of every stream, packed: [N, d], at positions cached + t.
  std::vector<float> input(tokens * d), encoded(tokens * d);
  std::vector<int64_t> positions(tokens);
  for (const PackedSteps::Member& member : steps.members) {
    std::copy_n(members[member.index].inputs->query, member.n * d, input.data() + member.offset * d);
    for (int64_t t = 0; t < member.n; ++t) positions[member.offset + t] = member.cached + t;
  }
  ASSIGN_OR_RETURN(const float* x, EmbedQuery(input.data(), positions.data(), tokens,
                                               encoded.data()));
  // New rows of every stream: q [H, N, hd]; k, v [Hkv, N, hd].
  std::vector<float> q(h * tokens * hd), k_new(hkv * tokens * hd), v_new(hkv * tokens * hd);
  RETURN_IF_ERROR(ProjectQkv(x, x, 1, tokens, tokens, steps.compute, q.data(), k_new.data(),
                             v_new.data()));
  // Per stream: its q [1, H, n, hd] and its k, v rows (rotated for RoPE), written into its cache
  // past its tokens (growing the cache's room when needed).
  std::vector<float> member_q(h * tokens * hd), attended(h * tokens * hd);
  std::vector<SdpaBatchMember<float>> calls;
  std::vector<size_t> running;  // steps.members indices of the calls
  for (size_t m = 0; m < steps.members.size(); ++m) {
    PackedSteps::Member& member = steps.members[m];
    const int64_t n = member.n, offset = member.offset, total = member.cached + n;
    float* mq = member_q.data() + offset * h * hd;
    std::vector<float> mk(hkv * n * hd), mv(hkv * n * hd);
    GatherMemberHeads(q.data(), tokens, h, hd, offset, 1, n, mq);
    GatherMemberHeads(k_new.data(), tokens, hkv, hd, offset, 1, n, mk.data());
    GatherMemberHeads(v_new.data(), tokens, hkv, hd, offset, 1, n, mv.data());
    absl::Status& status = (*statuses)[member.index];
    status = PlaceDecodePositions(member.cached, n, mq, mk.data(), member.options);
    if (!status.ok()) continue;
    KvCache& cache = *members[member.index].cache;
    const int64_t limit = members[member.index].inputs->max_length;
    if (const int64_t capacity = KvCache::GrownCapacity(cache.capacity, total, limit);
        capacity != cache.capacity) {
      try {
        Regrow(cache, capacity, hkv, hd);
      } catch (const std::bad_alloc&) {
        status = absl::ResourceExhaustedError("decode: out of memory for the K/V cache");
        continue;
      }
    }
    WriteNewRows(mk, hkv, n, hd, cache.k, cache);
    WriteNewRows(mv, hkv, n, hd, cache.v, cache);
    calls.push_back({SdpaShape{1, h, hkv, n, total, hd, cache.capacity}, &member.options, mq,
                     cache.k.data(), cache.v.data(), attended.data() + offset * h * hd,
                     members[member.index].probs});
    running.push_back(m);
  }
  const std::vector<absl::Status> results = ScaledDotProductAttentionBatch(calls);
  // attended [1, H, n, hd] per stream → its rows [n, H·hd]; a failed stream's rows are zeros.
  std::vector<float> rows(tokens * h * hd, 0.0f), out(tokens * d);
  for (size_t c = 0; c < calls.size(); ++c) {
    const PackedSteps::Member& member = steps.members[running[c]];
    (*statuses)[member.index] = results[c];
    if (!results[c].ok()) continue;
    RETURN_IF_ERROR(SwapMiddleAxes(calls[c].out, 1, h, member.n, hd,
                                   rows.data() + member.offset * h * hd));
  }
  RETURN_IF_ERROR(ProjectMergedRows(rows.data(), tokens, steps.compute, out.data()));
  for (const PackedSteps::Member& member : steps.members) {
    if (!(*statuses)[member.index].ok()) continue;
    std::copy_n(out.data() + member.offset * d, member.n * d, members[member.index].out);
  }
  return absl::OkStatus();
}

}  // namespace attnserve
