#include "core/attention/scaled_dot_product_attention.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <new>
#include <variant>
#include <vector>

#include "core/attention/flash_attention.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/onednn_ops.h"

namespace attnserve {
namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

bool NeedsMask(const SdpaShape& shape, const SdpaOptions& options) {
  if (options.causal) return true;
  for (int64_t length : options.key_lengths) {
    if (length < shape.kv_len) return true;
  }
  return false;
}

// A copy of bf16 bits as f32 (widened exactly), made by all threads into uninitialised memory.
std::unique_ptr<float[]> ParallelWiden(const uint16_t* x, int64_t count) {
  std::unique_ptr<float[]> copy(new float[count]);
  WidenBfloat16Parallel(x, count, copy.get());
  return copy;
}

// k and v copied without the gaps between K/V heads (kv_stride), for the paths that read them
// as whole [B, Hkv, Sk, hd] tensors; `shape` loses its kv_stride. Nothing to do without gaps.
template <typename T>
void CompactKv(SdpaShape& shape, const T*& k, const T*& v, std::unique_ptr<T[]>* k_copy,
               std::unique_ptr<T[]>* v_copy) {
  if (KvHeadRows(shape) == shape.kv_len) return;
  const int64_t heads = shape.batch * shape.num_kv_heads;
  const int64_t head_size = shape.kv_len * shape.head_dim;
  const int64_t stride = KvHeadRows(shape) * shape.head_dim;
  k_copy->reset(new T[heads * head_size]);
  v_copy->reset(new T[heads * head_size]);
  for (int64_t head = 0; head < heads; ++head) {
    std::copy_n(k + head * stride, head_size, k_copy->get() + head * head_size);
    std::copy_n(v + head * stride, head_size, v_copy->get() + head * head_size);
  }
  k = k_copy->get();
  v = v_copy->get();
  shape.kv_stride = 0;
}

// RoPE's q' and k': rotated copies of q and k into q_rotated, k_rotated, each made in one pass
// by all threads (a zero-filled copy, a one-thread copy, and a parallel region per head each took
// a large share of a RoPE call): f32 from f32 or from bf16 (widened exactly), or bf16 from bf16
// (rotated in f32, rounded once). Dynamic scalings see the longest position of the request.
template <typename T, typename Out>
absl::Status RotatedCopies(const RopeParams& rope, const SdpaShape& shape,
                           const SdpaOptions& options, const T* q, const T* k,
                           std::unique_ptr<Out[]>* q_rotated, std::unique_ptr<Out[]>* k_rotated) {
  const int64_t seq_len =
      1 + std::max(*std::max_element(options.q_positions.begin(), options.q_positions.end()),
                   *std::max_element(options.k_positions.begin(), options.k_positions.end()));
  q_rotated->reset(new Out[shape.batch * shape.num_heads * shape.q_len * shape.head_dim]);
  k_rotated->reset(new Out[shape.batch * shape.num_kv_heads * shape.kv_len * shape.head_dim]);
  // Without a shared cache, one for this call still computes each position's cos/sin once.
  PositionTableCache call_tables;
  PositionTableCache* tables = options.tables != nullptr ? options.tables : &call_tables;
  if (absl::Status status = ApplyRopeHeadMajor(
          rope, q, shape.batch, shape.num_heads, shape.q_len, shape.head_dim,
          options.q_positions.data(), seq_len, tables, q_rotated->get());
      !status.ok()) {
    return status;
  }
  return ApplyRopeHeadMajor(rope, k, shape.batch, shape.num_kv_heads, shape.kv_len,
                            shape.head_dim, options.k_positions.data(), seq_len, tables,
                            k_rotated->get());
}

// values rounded to bf16, kept as f32, by all threads: the operands a bf16 GEMM sees.
std::vector<float> RoundedToBfloat16(const float* values, int64_t count) {
  std::vector<float> copy(count);
  RoundToBfloat16Parallel(values, count, copy.data());
  return copy;
}

// *bias ← [B, 1, group·Sq, Sk] holding the mask (0 or −inf), or [B, Hkv, group·Sq, Sk] holding
// ALiBi / T5 bias plus the mask (bias_heads Hkv); left empty when there is neither.
absl::Status MaskAndBias(const SdpaShape& shape, const SdpaOptions& options, bool per_head_bias,
                         bool masked, int64_t bias_heads, std::vector<float>* bias) {
  if (!per_head_bias && !masked) return absl::OkStatus();
  const int64_t Sq = shape.q_len, Sk = shape.kv_len;
  const int64_t rows = shape.num_heads / shape.num_kv_heads * Sq;
  bias->assign(shape.batch * bias_heads * rows * Sk, 0.0f);
  for (int64_t b = 0; b < shape.batch; ++b) {
    float* batch_bias = bias->data() + b * bias_heads * rows * Sk;
    // ALiBi / T5 bias [H, Sq, Sk] is [Hkv, group·Sq, Sk] since query head h = kv_head·G + g.
    if (per_head_bias) {
      if (absl::Status status = ScoreBiasMap(
              options.encoding, shape.num_heads, options.q_positions.data() + b * Sq, Sq,
              options.k_positions.data() + b * Sk, Sk, options.causal, batch_bias);
          !status.ok()) {
        return status;
      }
    }
    if (!masked) continue;
    for (int64_t r = 0; r < bias_heads * rows; ++r) {
      const int64_t visible = VisibleKeyCount(shape, options, b, r % Sq);
      std::fill(batch_bias + r * Sk + visible, batch_bias + (r + 1) * Sk, kMasked);
    }
  }
  return absl::OkStatus();
}

// Zero probabilities for the query rows that see no key (oneDNN's softmax of an all −inf row is
// NaN; such rows attend to nothing). probs: [B, H, Sq, Sk].
void ZeroRowsWithoutKeys(const SdpaShape& shape, const SdpaOptions& options, float* probs) {
  const int64_t H = shape.num_heads, Sq = shape.q_len, Sk = shape.kv_len;
  for (int64_t b = 0; b < shape.batch; ++b) {
    for (int64_t i = 0; i < Sq; ++i) {
      if (VisibleKeyCount(shape, options, b, i) > 0) continue;
      for (int64_t h = 0; h < H; ++h) {
        float* row = probs + ((b * H + h) * Sq + i) * Sk;
        std::fill(row, row + Sk, 0.0f);
      }
    }
  }
}

// AddCopeLogits on rows [rows, Sk] of scores (q: [rows, hd], the rows' queries), the rows shared
// among all threads: each row's logits depend on that row alone. Running out of memory for a
// row's positions is RESOURCE_EXHAUSTED (an exception must not leave the parallel region).
absl::Status AddCopeLogitsParallel(const CopeParams& cope, const float* q, int64_t rows,
                                   int64_t Sk, int64_t hd, float* scores) {
  constexpr int64_t kRowsPerTask = 8;
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  bool out_of_memory = false;
  ApplyComputeThreads();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t first = task * kRowsPerTask;
    try {
      AddCopeLogits(cope, q + first * hd, std::min(kRowsPerTask, rows - first), Sk, hd,
                    scores + first * Sk);
    } catch (const std::bad_alloc&) {
#pragma omp atomic write
      out_of_memory = true;
    }
  }
  if (out_of_memory) return absl::ResourceExhaustedError("attention: out of memory");
  return absl::OkStatus();
}

// The scores as a whole tensor probs [B, H, Sq, Sk] (for callers that want the probabilities):
// mask and bias, Q·Kᵀ, CoPE's logits, softmax, then P·V into out. q, k (already rotated for RoPE) and v as ScaledDotProductAttention takes
// them.
absl::Status MaterialisedAttention(const SdpaShape& shape, const SdpaOptions& options,
                                   const float* q, const float* k, const float* v, float* out,
                                   float* probs) {
  const int64_t B = shape.batch, H = shape.num_heads, Hkv = shape.num_kv_heads;
  const int64_t Sq = shape.q_len, Sk = shape.kv_len, hd = shape.head_dim;
  // The `group` query heads of one kv head are contiguous in q: [B, Hkv, group·Sq, hd].
  const int64_t rows = H / Hkv * Sq;
  const bool per_head_bias = std::holds_alternative<AlibiParams>(options.encoding) ||
                             std::holds_alternative<T5BiasParams>(options.encoding);
  const bool masked = NeedsMask(shape, options);
  const int64_t bias_heads = per_head_bias ? Hkv : 1;
  std::vector<float> bias;
  if (absl::Status status = MaskAndBias(shape, options, per_head_bias, masked, bias_heads, &bias);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          AttentionScores(q, k, bias.empty() ? nullptr : bias.data(), bias_heads, B, Hkv, rows,
                          Sk, hd, EffectiveScale(shape, options), probs);
      !status.ok()) {
    return status;
  }
  if (const auto* cope = std::get_if<CopeParams>(&options.encoding)) {
    if (absl::Status status = AddCopeLogitsParallel(*cope, q, B * H * Sq, Sk, hd, probs);
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = SoftmaxRows(probs, B * H * Sq, Sk); !status.ok()) return status;
  if (masked) ZeroRowsWithoutKeys(shape, options, probs);
  return ProbsTimesValues(probs, v, B, Hkv, rows, Sk, hd, out);
}

// CoPE without probabilities to return: the computation above on a block of query rows at a
// time (CopeBlockRows of one K/V head's group·Sq rows), so it holds one block of scores, not
// B·H·Sq·Sk. Each row's gates need only that row. The mask is written into the block's scores
// (−inf past each row's visible keys), which is what adding it does. Cancellation is polled
// between blocks. k and v are read in place, gaps between heads (kv_stride) included.
absl::Status RowBlockedCopeAttention(const SdpaShape& shape, const SdpaOptions& options,
                                     const float* q, const float* k, const float* v, float* out) {
  const CopeParams& cope = std::get<CopeParams>(options.encoding);
  const int64_t Hkv = shape.num_kv_heads, Sq = shape.q_len, Sk = shape.kv_len;
  const int64_t hd = shape.head_dim;
  const int64_t rows = shape.num_heads / Hkv * Sq;  // row r is query i = r % Sq of its head
  const int64_t block = CopeBlockRows(shape, options.cope_block_elements);
  const float scale = EffectiveScale(shape, options);
  std::vector<float> scores(block * Sk);  // [block, Sk]
  for (int64_t head = 0; head < shape.batch * Hkv; ++head) {
    const int64_t b = head / Hkv;
    const float* q_rows = q + head * rows * hd;  // [rows, hd]
    const float* k_head = k + head * KvHeadRows(shape) * hd;  // [Sk, hd]
    const float* v_head = v + head * KvHeadRows(shape) * hd;
    for (int64_t first = 0; first < rows; first += block) {
      if (options.is_cancelled && options.is_cancelled()) {
        return absl::CancelledError("attention cancelled between CoPE row blocks");
      }
      const int64_t n = std::min(block, rows - first);
      if (absl::Status status = AttentionScores(q_rows + first * hd, k_head, nullptr, 1, 1, 1, n,
                                                Sk, hd, scale, scores.data());
          !status.ok()) {
        return status;
      }
      std::vector<int64_t> visible(n);
      for (int64_t r = 0; r < n; ++r) {
        visible[r] = VisibleKeyCount(shape, options, b, (first + r) % Sq);
        std::fill(scores.begin() + r * Sk + visible[r], scores.begin() + (r + 1) * Sk, kMasked);
      }
      if (absl::Status status =
              AddCopeLogitsParallel(cope, q_rows + first * hd, n, Sk, hd, scores.data());
          !status.ok()) {
        return status;
      }
      if (absl::Status status = SoftmaxRows(scores.data(), n, Sk); !status.ok()) return status;
      for (int64_t r = 0; r < n; ++r) {
        if (visible[r] == 0) std::fill_n(scores.begin() + r * Sk, Sk, 0.0f);
      }
      if (absl::Status status = ProbsTimesValues(scores.data(), v_head, 1, 1, n, Sk, hd,
                                                 out + (head * rows + first) * hd);
          !status.ok()) {
        return status;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ScaledDotProductAttention(const SdpaShape& call_shape, const SdpaOptions& options,
                                       const float* q, const float* k, const float* v, float* out,
                                       float* probs) {
  if (absl::Status status = ValidateSdpa(call_shape, options); !status.ok()) return status;
  SdpaShape shape = call_shape;
  const bool cope = std::holds_alternative<CopeParams>(options.encoding);
  const bool tiled = probs == nullptr && !cope;
  // The tiled kernel and CoPE's row blocks read k and v across gaps between heads; the whole
  // matrix, RoPE's rotation and the bf16 rounding read them whole.
  std::unique_ptr<float[]> k_compact, v_compact;
  if (probs != nullptr || std::holds_alternative<RopeParams>(options.encoding) ||
      (!tiled && options.compute == ComputeType::kBfloat16)) {
    CompactKv(shape, k, v, &k_compact, &v_compact);
  }
  const int64_t q_count = shape.batch * shape.num_heads * shape.q_len * shape.head_dim;
  const int64_t kv_count = shape.batch * shape.num_kv_heads * shape.kv_len * shape.head_dim;

  // RoPE: q' and k' are rotated copies.
  std::unique_ptr<float[]> q_rotated, k_rotated;
  if (const auto* rope = std::get_if<RopeParams>(&options.encoding)) {
    if (absl::Status status = RotatedCopies(*rope, shape, options, q, k, &q_rotated, &k_rotated);
        !status.ok()) {
      return status;
    }
    q = q_rotated.get();
    k = k_rotated.get();
  }

  // Without probabilities to return, the tiled kernel never materialises the scores.
  if (tiled) return FlashAttention(shape, options, q, k, v, out);
  // bf16 compute in the paths below: the same operands a bf16 GEMM sees (bf16-rounded q, k, v;
  // products exact in f32; f32 accumulation).
  std::vector<float> q_bf16, k_bf16, v_bf16;
  if (options.compute == ComputeType::kBfloat16) {
    q_bf16 = RoundedToBfloat16(q, q_count);
    k_bf16 = RoundedToBfloat16(k, kv_count);
    v_bf16 = RoundedToBfloat16(v, kv_count);
    q = q_bf16.data();
    k = k_bf16.data();
    v = v_bf16.data();
  }
  if (probs == nullptr) return RowBlockedCopeAttention(shape, options, q, k, v, out);
  return MaterialisedAttention(shape, options, q, k, v, out, probs);
}

absl::Status ScaledDotProductAttention(const SdpaShape& call_shape, const SdpaOptions& options,
                                       const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                       uint16_t* out) {
  if (absl::Status status = ValidateSdpa(call_shape, options); !status.ok()) return status;
  SdpaShape shape = call_shape;
  const auto* rope = std::get_if<RopeParams>(&options.encoding);
  const bool tiled = options.compute == ComputeType::kBfloat16 &&
                     !std::holds_alternative<CopeParams>(options.encoding);
  // Only the tiled kernel reads k and v across gaps between heads.
  std::unique_ptr<uint16_t[]> k_compact, v_compact;
  if (!tiled || rope != nullptr) CompactKv(shape, k, v, &k_compact, &v_compact);
  const int64_t q_count = shape.batch * shape.num_heads * shape.q_len * shape.head_dim;
  const int64_t kv_count = shape.batch * shape.num_kv_heads * shape.kv_len * shape.head_dim;
  if (tiled) {
    if (rope == nullptr) return FlashAttention(shape, options, q, k, v, out);
    // q' and k' rotated in f32 and rounded as the kernel would round f32 operands.
    std::unique_ptr<uint16_t[]> q_rotated, k_rotated;
    if (absl::Status status = RotatedCopies(*rope, shape, options, q, k, &q_rotated, &k_rotated);
        !status.ok()) {
      return status;
    }
    return FlashAttention(shape, options, q_rotated.get(), k_rotated.get(), v, out);
  }
  // CoPE needs whole rows of scores, and f32 compute f32 operands: widened (exactly), the f32
  // version, the output rounded. The widened values are bf16 already, so the f32 version runs
  // with f32 compute: bf16 compute would only round them again, into three more copies.
  const std::unique_ptr<float[]> q_f32 = ParallelWiden(q, q_count);
  const std::unique_ptr<float[]> k_f32 = ParallelWiden(k, kv_count);
  const std::unique_ptr<float[]> v_f32 = ParallelWiden(v, kv_count);
  const std::unique_ptr<float[]> out_f32(new float[q_count]);
  SdpaOptions f32_options = options;
  f32_options.compute = ComputeType::kFloat32;
  if (absl::Status status = ScaledDotProductAttention(shape, f32_options, q_f32.get(),
                                                      k_f32.get(), v_f32.get(), out_f32.get(),
                                                      nullptr);
      !status.ok()) {
    return status;
  }
  ConvertToBfloat16Parallel(out_f32.get(), q_count, out);
  return absl::OkStatus();
}

}  // namespace attnserve
