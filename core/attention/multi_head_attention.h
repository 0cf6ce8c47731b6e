// One multi-head attention layer with Hugging Face / torch.nn.Linear weights (y = x·Wᵀ + b) and
// the positional encoding it applies.
#ifndef ATTNSERVE_CORE_ATTENTION_MULTI_HEAD_ATTENTION_H_
#define ATTNSERVE_CORE_ATTENTION_MULTI_HEAD_ATTENTION_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/encodings/position_table_cache.h"
#include "core/encodings/positional_encoding.h"
#include "core/attention/scaled_dot_product_attention.h"

namespace attnserve {

struct AttentionConfig {
  int64_t d_model = 0;       // d; >= 1.
  int64_t num_heads = 0;     // H; >= 1.
  int64_t num_kv_heads = 0;  // Hkv; 0 = H. Must divide H.
  int64_t head_dim = 0;      // hd; 0 = d / H (H must divide d).
  std::optional<float> scale;  // Score scale; unset = 1/sqrt(hd).
  // Additive encodings (sinusoidal, learned) are added to the query input (the layer's own
  // sequence) before the projections; a cross-attention context is used as given. RoPE, ALiBi,
  // T5 and CoPE act inside attention, with cross-attention keys at positions 0..Sk−1.
  PositionalEncoding encoding;
};

struct AttentionWeights {
  std::vector<float> q_proj_weight;  // [H·hd, d]
  std::vector<float> k_proj_weight;  // [Hkv·hd, d]
  std::vector<float> v_proj_weight;  // [Hkv·hd, d]
  std::vector<float> o_proj_weight;  // [d, H·hd]
  std::vector<float> q_proj_bias;    // [H·hd] or empty (no bias)
  std::vector<float> k_proj_bias;    // [Hkv·hd] or empty
  std::vector<float> v_proj_bias;    // [Hkv·hd] or empty
  std::vector<float> o_proj_bias;    // [d] or empty
};

struct AttendInputs {
  const float* query = nullptr;    // [B, Sq, d]
  int64_t batch = 0;               // B
  int64_t q_len = 0;               // Sq
  const float* context = nullptr;  // [B, Sk, d]; nullptr = self-attention (Sk = Sq)
  int64_t kv_len = 0;              // Sk; ignored for self-attention
  const int64_t* positions = nullptr;  // [B, Sq] positions of the query tokens, each >= 0
                                       // (self-attention keys share them)
  bool causal = false;                 // bottom-right aligned
  std::vector<int64_t> key_lengths;    // [B] valid keys, or empty for all
  ComputeType compute = ComputeType::kFloat32;  // projections and attention products
  std::function<bool()> is_cancelled;  // polled between attention tiles; unset = never
};

// One sequence's keys and values for incremental decoding, after projection (and after RoPE for
// keys): k, v [Hkv, capacity, hd] row-major, token j of head h at row h·capacity + j (token j at
// position j); rows from `length` on are room to grow into, so a step writes its tokens in place
// and copies the cache only when the room runs out (GrownCapacity).
struct KvCache {
  int64_t length = 0;
  int64_t capacity = 0;
  std::vector<float> k;
  std::vector<float> v;

  // Bytes a cache with room for `tokens` holds for a layer with `kv_heads` heads of `head_dim`.
  static int64_t Bytes(int64_t tokens, int64_t kv_heads, int64_t head_dim) {
    return 2 * tokens * kv_heads * head_dim * static_cast<int64_t>(sizeof(float));
  }
  // The room a cache with room for `capacity` tokens has once it must hold `needed`: `capacity`
  // when that is enough, else `needed` or `capacity` grown by min(capacity, 1024), the larger,
  // but never past `limit` (the stream's most tokens; 0: none). The cache moves to larger arrays
  // once per doubling up to 1024 tokens, then once per 1024 tokens, and its room exceeds its
  // need by at most 1024 tokens (or by its own size, below that).
  static int64_t GrownCapacity(int64_t capacity, int64_t needed, int64_t limit = 0) {
    if (needed <= capacity) return capacity;
    const int64_t grown = std::max(needed, capacity + std::min<int64_t>(capacity, 1024));
    return limit > 0 ? std::max(needed, std::min(grown, limit)) : grown;
  }
};

// A member of a batch of layer calls (MultiHeadAttention::ForwardBatch): its inputs and where
// its results go, as Forward takes them.
struct LayerBatchMember {
  const AttendInputs* inputs = nullptr;  // must outlive the call
  float* out = nullptr;                  // [B, Sq, d]
  float* probs = nullptr;                // [B, H, Sq, Sk] or nullptr
};

struct DecodeInputs {
  const float* query = nullptr;  // [1, new_tokens, d]: the next tokens of the sequence
  int64_t new_tokens = 0;
  int64_t max_length = 0;        // the stream's most tokens, which caps its cache's room; 0: none
  ComputeType compute = ComputeType::kFloat32;
  std::function<bool()> is_cancelled;  // polled between attention tiles; unset = never
};

// A stream's step in a batch of decoding steps (MultiHeadAttention::DecodeBatch).
struct DecodeBatchMember {
  const DecodeInputs* inputs = nullptr;  // must outlive the call
  KvCache* cache = nullptr;              // the stream's own
  float* out = nullptr;                  // [1, n, d]
  float* probs = nullptr;                // [1, H, n, length + n] or nullptr
};

class MultiHeadAttention {
 public:
  // Resolves the config's defaults and checks every weight's size against it.
  static absl::StatusOr<std::unique_ptr<MultiHeadAttention>> Create(const AttentionConfig& config,
                                                                    AttentionWeights weights);

  // The config with defaults resolved (num_kv_heads, head_dim set).
  const AttentionConfig& config() const { return config_; }

  // out: [B, Sq, d]; probs: [B, H, Sq, Sk] or nullptr. Thread-safe.
  absl::Status Forward(const AttendInputs& inputs, float* out, float* probs) const;

  // Forward over a batch of calls, the variable-length way: the members' tokens are packed into
  // one [Σ B·Sq, d] matrix, so each projection reads its weights once for the whole batch, and
  // attention runs per member (ScaledDotProductAttentionBatch) with the member's own causal
  // alignment, key lengths, positions and context. Packed groups are kept within the buffers a
  // thread keeps between calls (64 MiB): more members make more groups, and a member too large
  // for one runs by Forward (its products are large enough to gain nothing from packing). statuses[i] is member i's; a member whose
  // inputs are invalid, or whose compute type differs from the first valid member's, fails alone
  // and the others run. Each member's output equals Forward's on it alone up to the order of the
  // projections' sums (bit for bit where oneDNN blocks a product the same for the packed rows).
  std::vector<absl::Status> ForwardBatch(absl::Span<const LayerBatchMember> members) const;

  // One step of incremental decoding: the new tokens get positions cache->length + t, attend
  // causally to the cached tokens and to each other, and their keys/values join the cache.
  // Outputs equal Forward with causal over the whole prefix. out: [1, n, d]; probs:
  // [1, H, n, length + n] or nullptr. On error the cache holds the same tokens (its room may have
  // grown). Thread-safe across caches.
  absl::Status Decode(const DecodeInputs& inputs, KvCache* cache, float* out, float* probs) const;

  // Decode for several streams at once (continuous batching): the new tokens of all members are
  // packed for the projections (one weight read for the batch), and each attends to its own
  // cache. statuses[i] is member i's; a member that fails (invalid, cancelled, another compute
  // type than the first valid member's) fails alone, its cache unchanged. Each member's output
  // equals Decode's on it alone up to the order of the projections' sums (see ForwardBatch).
  std::vector<absl::Status> DecodeBatch(absl::Span<const DecodeBatchMember> members) const;

 private:
  MultiHeadAttention(const AttentionConfig& config, AttentionWeights weights)
      : config_(config), weights_(std::move(weights)) {}

  // The projection weights rounded to bf16 for bf16 calls, made by the first such call (rounding
  // them on every call cost as much as a fifth of the product).
  struct RoundedWeights {
    std::vector<uint16_t> q_proj, k_proj, v_proj, o_proj;
  };
  // The rounded weights for bf16 compute, else nullptr.
  const RoundedWeights* RoundedFor(ComputeType compute) const;

  // head_major [B, heads, S, hd] ← (input [B·S, d]·Wᵀ + b) split into heads; rounded: the weight
  // rounded to bf16 for bf16 compute, or nullptr.
  absl::Status Project(const float* input, int64_t batch, int64_t seq, int64_t heads,
                       const std::vector<float>& weight, const uint16_t* rounded,
                       const std::vector<float>& bias, ComputeType compute,
                       float* head_major) const;
  // q [B, H, Sq, hd] from x [B·Sq, d]; k, v [B, Hkv, Sk, hd] from kv_source [B·Sk, d].
  absl::Status ProjectQkv(const float* x, const float* kv_source, int64_t batch, int64_t q_len,
                          int64_t kv_len, ComputeType compute, float* q, float* k,
                          float* v) const;
  // out [B·S, d] ← heads of attended [B, H, S, hd] merged, ·Woᵀ + bo; scratch holds B·S·H·hd
  // floats.
  absl::Status ProjectOut(const float* attended, int64_t batch, int64_t seq, ComputeType compute,
                          float* scratch, float* out) const;
  // out [count, d] ← rows [count, H·hd] (heads merged)·Woᵀ + bo.
  absl::Status ProjectMergedRows(const float* rows, int64_t count, ComputeType compute,
                                 float* out) const;
  // The attention call of one Forward: its shape and options (positions placed for the score
  // kinds), not yet validated.
  void PlanAttention(const AttendInputs& inputs, SdpaShape* shape, SdpaOptions* options) const;
  // ForwardBatch's plan: groups of members packed together (their attention calls, and where
  // their rows sit in the packed tensors; multi_head_attention.cc), and in *alone the members
  // too large to pack, run by Forward. Invalid members get their status and no place.
  struct PackedBatch;
  std::vector<PackedBatch> PlanBatches(absl::Span<const LayerBatchMember> members,
                                       std::vector<absl::Status>* statuses,
                                       std::vector<int64_t>* alone) const;
  // The packed computation of a planned batch; statuses of members whose attention fails are set
  // here, a failure of the shared projections is returned for all.
  absl::Status RunPacked(absl::Span<const LayerBatchMember> members, const PackedBatch& batch,
                         std::vector<absl::Status>* statuses) const;
  // The layer's input rows [tokens, d]: query + P[positions] written to `encoded` (tokens·d
  // floats) for an encoding that adds to the embeddings, else the query itself (no copy).
  absl::StatusOr<const float*> EmbedQuery(const float* query, const int64_t* positions,
                                          int64_t tokens, float* encoded) const;
  // DecodeBatch's plan and packed computation (multi_head_attention.cc).
  struct PackedSteps;
  PackedSteps PlanSteps(absl::Span<const DecodeBatchMember> members,
                        std::vector<absl::Status>* statuses) const;
  absl::Status RunPackedSteps(absl::Span<const DecodeBatchMember> members, PackedSteps& steps,
                              std::vector<absl::Status>* statuses) const;
  // Decode's position terms for `new_tokens` after `cached` (bottom-right: the new tokens are
  // the last queries): RoPE rotates q and k_new [Hkv, n, hd] in place, score kinds get their
  // positions in `options`.
  absl::Status PlaceDecodePositions(int64_t cached, int64_t new_tokens, float* q, float* k_new,
                                    SdpaOptions& options) const;

  AttentionConfig config_;
  AttentionWeights weights_;
  mutable absl::once_flag rounded_once_;
  mutable RoundedWeights rounded_;
  // RoPE cos/sin tables shared by all calls (thread-safe).
  mutable PositionTableCache tables_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_MULTI_HEAD_ATTENTION_H_
