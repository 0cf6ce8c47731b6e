#include "core/attention/flash_attention.h"

#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kernels/alibi_term.h"
#include "core/kernels/amx_tiles.h"
#include "core/kernels/bfloat16.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/cpu_features.h"
#include "core/kernels/onednn_ops.h"
#include "core/kernels/softmax_kernels.h"
#include "dnnl.hpp"

namespace attnserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr unsigned int kFlushToZero = 0x8000;      // MXCSR FTZ: subnormal results become 0
constexpr unsigned int kDenormalsAreZero = 0x0040;  // MXCSR DAZ: subnormal inputs read as 0

// The position-dependent part of the scores, prepared once per call (shared by all heads and
// tiles) for ALiBi and T5.
class ScoreBias {
 public:
  ScoreBias(const SdpaShape& shape, const SdpaOptions& options)
      : shape_(shape), options_(options) {
    if (const auto* alibi = std::get_if<AlibiParams>(&options.encoding)) {
      slopes_ = AlibiSlopes(*alibi, shape.num_heads);
    }
    t5_ = std::get_if<T5BiasParams>(&options.encoding);
    if (slopes_.empty() && t5_ == nullptr) return;
    const int64_t Sq = shape.q_len, Sk = shape.kv_len;
    q_relative_.resize(shape.batch * Sq);
    k_relative_.resize(shape.batch * Sk);
    bucket_by_distance_.resize(shape.batch);
    keys_ascend_.resize(shape.batch);
    min_distance_.resize(shape.batch);
    for (int64_t b = 0; b < shape.batch; ++b) {
      // Positions are in [0, kMaxPosition] (ValidateSdpa), so these differences cannot overflow.
      const int64_t* q = options.q_positions.data() + b * Sq;
      const int64_t* k = options.k_positions.data() + b * Sk;
      const auto [q_min, q_max] = std::minmax_element(q, q + Sq);
      const auto [k_min, k_max] = std::minmax_element(k, k + Sk);
      for (int64_t i = 0; i < Sq; ++i) q_relative_[b * Sq + i] = static_cast<float>(q[i] - *k_min);
      for (int64_t j = 0; j < Sk; ++j) k_relative_[b * Sk + j] = static_cast<float>(k[j] - *k_min);
      keys_ascend_[b] = std::is_sorted(k, k + Sk);
      // T5 buckets need a logarithm: tabulate them per key–query distance when the distances
      // span no more than the request's own size (contiguous positions span Sq + Sk − 1).
      min_distance_[b] = *k_min - *q_max;
      const int64_t range = *k_max - *q_min - min_distance_[b] + 1;
      if (t5_ != nullptr && range <= 2 * (Sq + Sk)) {
        bucket_by_distance_[b].resize(range);
        for (int64_t d = 0; d < range; ++d) bucket_by_distance_[b][d] = Bucket(min_distance_[b] + d);
      }
    }
  }

  bool active() const { return !slopes_.empty() || t5_ != nullptr; }
  bool alibi() const { return !slopes_.empty(); }

  // ALiBi: the bias of query row i (batch element b, head h) for keys from j0 on.
  AlibiTerm AlibiRow(int64_t b, int64_t h, int64_t i, int64_t j0) const {
    return AlibiTerm{static_cast<float>(slopes_[h]), q_relative_[b * shape_.q_len + i],
                     k_relative_.data() + b * shape_.kv_len + j0, options_.causal};
  }

  // ALiBi: the key j < keys nearest query row i of batch element b (keys >= 1). A binary search
  // where the key positions ascend, as they usually do; a scan otherwise.
  int64_t NearestKey(int64_t b, int64_t i, int64_t keys) const {
    const float q = q_relative_[b * shape_.q_len + i];
    const float* k = k_relative_.data() + b * shape_.kv_len;
    if (!keys_ascend_[b]) {
      return std::min_element(k, k + keys, [q](float x, float y) {
               return std::fabs(q - x) < std::fabs(q - y);
             }) - k;
    }
    const int64_t above = std::lower_bound(k, k + keys, q) - k;  // first key at or after q
    if (above == 0) return 0;
    if (above == keys) return keys - 1;
    return q - k[above - 1] <= k[above] - q ? above - 1 : above;
  }

  // row[c] ← scale·row[c] + bias of query row i (batch element b, head h) and key j0 + c, for
  // c < n.
  void AddRow(int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, float scale,
              float* row) const {
    const int64_t Sq = shape_.q_len, Sk = shape_.kv_len;
    if (alibi()) {
      AddAlibiRow(row, n, scale, AlibiRow(b, h, i, j0));
      return;
    }
    if (scale != 1.0f) ScaleRow(row, n, scale);
    const std::vector<float>& table = *t5_->table;
    const int64_t H = shape_.num_heads;
    const int64_t q = options_.q_positions[b * Sq + i];
    const int64_t* k = options_.k_positions.data() + b * Sk + j0;
    const std::vector<int32_t>& buckets = bucket_by_distance_[b];
    if (buckets.empty()) {
      for (int64_t c = 0; c < n; ++c) row[c] += table[Bucket(k[c] - q) * H + h];
      return;
    }
    const int64_t offset = -min_distance_[b] - q;
    for (int64_t c = 0; c < n; ++c) row[c] += table[buckets[k[c] + offset] * H + h];
  }

 private:
  int32_t Bucket(int64_t distance) const {
    return static_cast<int32_t>(
        T5RelativeBucket(distance, t5_->bidirectional, t5_->num_buckets, t5_->max_distance));
  }

  const SdpaShape& shape_;
  const SdpaOptions& options_;
  std::vector<double> slopes_;          // ALiBi, per head
  const T5BiasParams* t5_ = nullptr;
  std::vector<float> q_relative_, k_relative_;            // ALiBi: [B·Sq], [B·Sk]
  std::vector<bool> keys_ascend_;                         // per batch element
  std::vector<std::vector<int32_t>> bucket_by_distance_;  // T5: per batch element, or empty
  std::vector<int64_t> min_distance_;                     // T5: per batch element
};

// Row-major C [M,N] (+)= alpha·A·op(B), A [M,K], B [K,N] (or [N,K] when b_transposed), C f32,
// through oneDNN matmul primitives built once per shape for this thread: the brgemm kernels, far
// faster on tiles than the gemm:jit behind dnnl_sgemm. Tile shapes repeat within and across calls,
// so each thread keeps its primitives (ThreadState). Operands are f32, or bf16 (uint16_t bits)
// with f32 accumulation — widened to f32 per call where oneDNN has no bf16 matmul
// (OneDnnHasBfloat16Matmul).
class TileGemm {
 public:
  explicit TileGemm(ComputeType compute)
      : engine_(dnnl::engine::kind::cpu, 0),
        stream_(engine_),
        widen_(compute == ComputeType::kBfloat16 && !OneDnnHasBfloat16Matmul()),
        operand_(compute == ComputeType::kBfloat16 && !widen_ ? dnnl::memory::data_type::bf16
                                                              : dnnl::memory::data_type::f32) {}

  // a: [m, k] dense; b: [k, n] dense (or [n, k] when b_transposed); c: [m, n] dense.
  void Run(int64_t m, int64_t n, int64_t k, float alpha, const void* a, const void* b,
           bool b_transposed, bool accumulate, float* c) {
    using dnnl::memory;
    if (widen_) {
      a = Widened(static_cast<const uint16_t*>(a), m * k, a_wide_);
      b = Widened(static_cast<const uint16_t*>(b), k * n, b_wide_);
    }
    const Key key{m, n, k, b_transposed, accumulate, alpha};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
      // Edge tiles take shapes from the requests; start over rather than grow without bound.
      if (primitives_.size() >= kMaxPrimitives) primitives_.clear();
      const memory::desc a_md({m, k}, operand_, memory::format_tag::ab);
      const memory::desc b_md({k, n}, operand_,
                              b_transposed ? memory::format_tag::ba : memory::format_tag::ab);
      const memory::desc c_md({m, n}, memory::data_type::f32, memory::format_tag::ab);
      dnnl::primitive_attr attr;
      if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
      if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine_);
      it = primitives_.emplace(key, Entry{dnnl::matmul(pd), a_md, b_md, c_md}).first;
    }
    Entry& e = it->second;
    e.primitive.execute(stream_,
                        {{DNNL_ARG_SRC, dnnl::memory(e.a, engine_, const_cast<void*>(a))},
                         {DNNL_ARG_WEIGHTS, dnnl::memory(e.b, engine_, const_cast<void*>(b))},
                         {DNNL_ARG_DST, dnnl::memory(e.c, engine_, c)}});
  }

 private:
  struct Key {
    int64_t m, n, k;
    bool b_transposed, accumulate;
    float alpha;
    bool operator<(const Key& o) const {
      return std::tie(m, n, k, b_transposed, accumulate, alpha) <
             std::tie(o.m, o.n, o.k, o.b_transposed, o.accumulate, o.alpha);
    }
  };
  static constexpr size_t kMaxPrimitives = 64;
  struct Entry {
    dnnl::matmul primitive;
    dnnl::memory::desc a, b, c;
  };
  // bits as f32 values in `wide` (grown as needed; this runs inside one work item's thread).
  static const float* Widened(const uint16_t* bits, int64_t count, std::vector<float>& wide) {
    if (static_cast<int64_t>(wide.size()) < count) wide.resize(count);
    for (int64_t i = 0; i < count; ++i) wide[i] = Bfloat16ToFloat(bits[i]);
    return wide.data();
  }
  dnnl::engine engine_;
  dnnl::stream stream_;
  bool widen_;  // bf16 operands, but oneDNN has no bf16 matmul here
  dnnl::memory::data_type operand_;
  std::vector<float> a_wide_, b_wide_;
  std::map<Key, Entry> primitives_;
};

// P for one bf16 score row of a tile: out[c] = e^(scale·row[c] − shift), returning {shift, Σ}.
// The shift is the row's running maximum from earlier tiles (on its first tile, the maximum of
// its last 16 visible scores: the nearest keys, which ALiBi favours and causal rows always
// see), and the same pass finds this tile's maximum; only when that exceeds the
// shift by more than kShiftHeadroom is the row done again with its own maximum. Values up to
// e^16 keep P, the sums and P·V far from f32 overflow, and a separate pass for the maximum — an
// eighth of the kernel's time on AMX — is saved.
constexpr float kShiftHeadroom = 16.0f;

std::pair<float, float> Bfloat16Probabilities(const float* row, int64_t n, float scale,
                                              float running_max, uint16_t* out) {
  const int64_t last = std::min<int64_t>(n, 16);
  float shift = running_max != kNegInf ? running_max : RowMax(row + n - last, last) * scale;
  float tile_max;
  float sum = ExpShiftedSumToBfloat16(row, n, scale, shift, out, &tile_max);
  if (tile_max * scale > shift + kShiftHeadroom) {
    shift = tile_max * scale;
    sum = ExpShiftedSumToBfloat16(row, n, scale, shift, out, &tile_max);
  }
  return {shift, sum};
}

// Uninitialised storage for elements of T on a 64-byte boundary, grown on demand (contents are
// not kept). malloc aligns large blocks to 16 bytes only, and then every 64-byte AMX tile row and
// 512-bit vector of a buffer straddles two cache lines.
template <typename T>
class CacheAlignedArray {
 public:
  void Reserve(int64_t size) {
    if (size <= size_) return;
    data_.reset(static_cast<T*>(::operator new(size * sizeof(T), kAlignment)));
    size_ = size;
  }
  T* data() const { return data_.get(); }

 private:
  static constexpr std::align_val_t kAlignment{64};
  struct Free {
    void operator()(T* p) const { ::operator delete(p, kAlignment); }
  };
  std::unique_ptr<T[], Free> data_;
  int64_t size_ = 0;
};

// Rows of a tensor (f32, or bf16 bits) as bf16 bits.
void CopyAsBfloat16(const float* values, int64_t n, uint16_t* out) {
  ScaleRowIntoBfloat16(values, n, 1.0f, out);
}
void CopyAsBfloat16(const uint16_t* values, int64_t n, uint16_t* out) {
  std::memcpy(out, values, n * sizeof(uint16_t));
}

// out[c] ← row[c]·factor for c < n, in the output tensor's type.
void WriteScaledRow(const float* row, int64_t n, float factor, float* out) {
  ScaleRowInto(row, n, factor, out);
}
void WriteScaledRow(const float* row, int64_t n, float factor, uint16_t* out) {
  ScaleRowIntoBfloat16(row, n, factor, out);
}

// The GEMM operands of a call, from tensors of T (float, or uint16_t bf16 bits): f32 inputs as
// they are; bf16 operands for oneDNN's bf16 products (bf16 tensors as they are, f32 ones as
// copies); or, for the AMX products, K and V packed per (batch element, K/V head) in the tile
// layout (core/kernels/amx_tiles.h) while Q rows are copied per work item.
template <typename T>
struct Operands {
  enum class Kind { kFloat32, kBfloat16, kAmx };
  // AMX packing runs in parts of this many keys of one head, spread over the threads.
  static constexpr int64_t kPackKeys = 256;

  Kind kind;
  const void* q;
  const void* k;
  const void* v;
  int64_t element_size = sizeof(T);
  std::vector<uint16_t> q_bf16, k_bf16, v_bf16;  // kBfloat16 from f32: owned copies
  // kAmx: [B·Hkv] packed heads, filled by Pack (every element written, so not zeroed first).
  CacheAlignedArray<uint16_t> k_packed, v_packed;
  int64_t packed_head_size = 0;  // kAmx: elements per packed head
  int64_t pack_parts = 0;        // kAmx: Pack(part) for part < pack_parts fills both

  // kFloat32 needs T = float (bf16 tensors are computed in bf16).
  Operands(Kind kind, const SdpaShape& shape, const T* q_in, const T* k_in, const T* v_in)
      : kind(kind), q(q_in), k(k_in), v(v_in), shape_(shape) {
    const int64_t kv_heads = shape.batch * shape.num_kv_heads;
    const int64_t kv_count = kv_heads * shape.kv_len * shape.head_dim;
    if constexpr (std::is_same_v<T, float>) {
      if (kind == Kind::kBfloat16) {
        q_bf16 = ToBfloat16(q_in, shape.batch * shape.num_heads * shape.q_len * shape.head_dim);
        k_bf16 = ToBfloat16(k_in, kv_count);
        v_bf16 = ToBfloat16(v_in, kv_count);
        q = q_bf16.data();
        k = k_bf16.data();
        v = v_bf16.data();
        element_size = sizeof(uint16_t);
      }
    }
    if (kind == Kind::kAmx) {
      packed_head_size = AmxPackedSize(shape.kv_len, shape.head_dim);
      k_packed.Reserve(kv_heads * packed_head_size);
      v_packed.Reserve(kv_heads * packed_head_size);
      parts_per_head_ = (shape.kv_len + kPackKeys - 1) / kPackKeys;
      pack_parts = kv_heads * parts_per_head_;
    }
  }

  // kAmx: packs the keys and values [kPackKeys·i, kPackKeys·(i + 1)) of one K/V head, where
  // part = head·parts_per_head_ + i.
  void Pack(int64_t part) const {
    const int64_t Sk = shape_.kv_len, hd = shape_.head_dim;
    const int64_t kv_head = part / parts_per_head_;
    const int64_t begin = (part % parts_per_head_) * kPackKeys;
    const int64_t source = kv_head * Sk * hd, target = kv_head * packed_head_size;
    AmxPackKeys(static_cast<const T*>(k) + source, Sk, hd, begin, begin + kPackKeys,
                k_packed.data() + target);
    AmxPackValues(static_cast<const T*>(v) + source, Sk, hd, begin, begin + kPackKeys,
                  v_packed.data() + target);
  }

  static std::vector<uint16_t> ToBfloat16(const float* values, int64_t count) {
    std::vector<uint16_t> bits(count);
    ConvertToBfloat16Parallel(values, count, bits.data());
    return bits;
  }

  // Element `index` of an operand, as a pointer the GEMM takes.
  const void* At(const void* base, int64_t index) const {
    return static_cast<const char*>(base) + index * element_size;
  }

 private:
  const SdpaShape& shape_;
  int64_t parts_per_head_ = 0;
};

// One thread's buffers for a work item, grown to the largest tiles it has seen. Sizes are rounded
// up to the AMX layout's multiples of 32 (core/kernels/amx_tiles.h) plus a row padding, which also
// covers the other paths. Contents are not kept between items: each writes what it reads.
struct Scratch {
  // Row stride of scores and P for k_tile keys: on AMX 32 beyond the blocks, so that no two
  // rows of a tile are a multiple of 4 KiB apart (the 16 row loads and stores would all fall in
  // the same L1 sets) and P rows stay on 64-byte boundaries.
  static int64_t ScoreStride(int64_t k_tile, bool amx) {
    return amx ? PadTo32(k_tile) + 32 : k_tile;
  }

  void Reserve(int64_t q_tile, int64_t k_tile, int64_t hd, bool bf16, bool amx) {
    // The AMX path scores 32 rows at a time; the others the whole item.
    const int64_t score_size = PadTo32(amx ? 32 : q_tile) * ScoreStride(k_tile, amx);
    scores.Reserve(score_size);
    if (bf16) probs_bf16.Reserve(score_size);
    if (amx) q_rows.Reserve(PadTo32(q_tile) * PadTo32(hd));
    acc.Reserve(PadTo32(q_tile) * PadTo32(hd));
    row_max.Reserve(q_tile);
    row_sum.Reserve(q_tile);
    if (amx) lane_sums.Reserve(q_tile * 16);
    visible.Reserve(q_tile);
  }

  CacheAlignedArray<float> scores;         // [q_tile, k_tile] (AMX: [32, k_tile])
  CacheAlignedArray<uint16_t> probs_bf16;  // the P operand for bf16 compute, as scores
  CacheAlignedArray<uint16_t> q_rows;      // [q_tile, hd] for AMX: this item's Q rows in bf16
  CacheAlignedArray<float> acc;            // [q_tile, hd] unnormalised output rows
  CacheAlignedArray<float> row_max;        // [q_tile] running maxima (bf16: shifts)
  CacheAlignedArray<float> row_sum;        // [q_tile] (AMX: lane_sums instead)
  CacheAlignedArray<float> lane_sums;      // [q_tile, 16] AMX: row sums in 16 partial sums
  CacheAlignedArray<int64_t> visible;      // [q_tile] keys each row sees
};

// What a compute thread keeps between calls: its scratch buffers and GEMM primitives. Fresh
// buffers cost page faults and fresh primitives a primitive-descriptor creation each, per thread
// and call: together ~0.2 ms, a quarter of a 512-token call on 16 threads.
struct ThreadState {
  Scratch scratch;
  std::unique_ptr<TileGemm> gemm_f32, gemm_bf16;

  TileGemm& Gemm(ComputeType compute) {
    std::unique_ptr<TileGemm>& gemm = compute == ComputeType::kBfloat16 ? gemm_bf16 : gemm_f32;
    if (gemm == nullptr) gemm = std::make_unique<TileGemm>(compute);
    return *gemm;
  }
};

ThreadState& CurrentThreadState() {
  thread_local ThreadState state;
  return state;
}

// FlashAttention for tensors of T: float, or uint16_t bf16 bits (with bf16 compute).
template <typename T>
absl::Status TiledAttention(const SdpaShape& shape, const SdpaOptions& options, const T* q,
                            const T* k, const T* v, T* out, FlashTiling tiling) {
  const bool supported = std::holds_alternative<NoPositionalEncoding>(options.encoding) ||
                         std::holds_alternative<RopeParams>(options.encoding) ||
                         std::holds_alternative<AlibiParams>(options.encoding) ||
                         std::holds_alternative<T5BiasParams>(options.encoding);
  if (!supported) {
    return absl::InvalidArgumentError(absl::StrCat("FlashAttention cannot apply encoding.",
                                                   EncodingName(options.encoding)));
  }
  const int64_t B = shape.batch, H = shape.num_heads, Hkv = shape.num_kv_heads;
  const int64_t Sq = shape.q_len, Sk = shape.kv_len, hd = shape.head_dim;
  const int64_t group = H / Hkv;
  const bool bf16 = options.compute == ComputeType::kBfloat16;
  const bool amx = bf16 && tiling.use_amx && AmxBf16Available() && CpuHasAvx512Bf16();
  const int64_t q_tile = std::max<int64_t>(1, std::min(amx ? tiling.amx_q_tile : tiling.q_tile, Sq));
  // The AMX products start key tiles at multiples of 32.
  const int64_t k_tile =
      amx ? PadTo32(std::max<int64_t>(1, std::min(tiling.amx_k_tile, Sk)))
          : std::max<int64_t>(1, std::min(tiling.k_tile, Sk));
  const int64_t q_tiles = (Sq + q_tile - 1) / q_tile;
  const float scale = EffectiveScale(shape, options);
  // The call's tables and operand copies; running out of memory for them is the caller's
  // RESOURCE_EXHAUSTED, not an exception out of the kernel.
  std::unique_ptr<const ScoreBias> bias_holder;
  std::unique_ptr<const Operands<T>> operands_holder;
  try {
    bias_holder = std::make_unique<const ScoreBias>(shape, options);
    using Kind = typename Operands<T>::Kind;
    operands_holder = std::make_unique<const Operands<T>>(
        amx ? Kind::kAmx : bf16 ? Kind::kBfloat16 : Kind::kFloat32, shape, q, k, v);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("attention: out of memory");
  }
  const ScoreBias& bias = *bias_holder;
  const Operands<T>& operands = *operands_holder;
  // Row strides of the item's buffers: the AMX products work on blocks of 32.
  const int64_t acc_stride = amx ? PadTo32(hd) : hd;

  std::atomic<bool> stop{false};
  // Whichever thread starts a tile polls for cancellation, one at a time (a poll in progress
  // makes the others skip theirs).
  std::atomic<bool> polling{false};
  auto poll_cancelled = [&] {
    if (options.is_cancelled == nullptr || polling.exchange(true)) return;
    if (options.is_cancelled()) stop = true;
    polling = false;
  };
  const int64_t stride = Scratch::ScoreStride(k_tile, amx);

  // A work item on AMX: its rows in blocks of 32, fused per key tile — scores, exponentials and
  // P·V in turn on buffers that stay in L1 (a 32×128 f32 block is 16 KiB; a whole 64×1024 block
  // written by the tile stores and read back by the exponentials missed L1 on every line). Key
  // tiles start at the anchor (below), so each row's first shift usually stays its shift.
  auto process_amx = [&](int64_t b, int64_t h, int64_t i0, int64_t rows, Scratch& scratch) {
    const int64_t hd_pad = PadTo32(hd);
    const int64_t q_offset = ((b * H + h) * Sq + i0) * hd;
    const int64_t packed_offset = (b * Hkv + h / group) * operands.packed_head_size;
    const uint16_t* k_packed = operands.k_packed.data() + packed_offset;
    const uint16_t* v_packed = operands.v_packed.data() + packed_offset;
    // The item's Q rows in bf16, zero in the padding the 32×32 blocks read.
    uint16_t* q_rows = scratch.q_rows.data();
    if (hd == hd_pad) {  // rows already contiguous: one copy
      CopyAsBfloat16(q + q_offset, rows * hd, q_rows);
      std::fill(q_rows + rows * hd, q_rows + PadTo32(rows) * hd, uint16_t{0});
    } else {
      std::fill(q_rows, q_rows + PadTo32(rows) * hd_pad, uint16_t{0});
      for (int64_t r = 0; r < rows; ++r) {
        CopyAsBfloat16(q + q_offset + r * hd, hd, q_rows + r * hd_pad);
      }
    }
    float* acc = scratch.acc.data();
    float* shift = scratch.row_max.data();
    float* lane_sums = scratch.lane_sums.data();
    int64_t* visible = scratch.visible.data();
    std::fill(acc, acc + PadTo32(rows) * acc_stride, 0.0f);
    std::fill(shift, shift + rows, kNegInf);
    std::fill(lane_sums, lane_sums + rows * 16, 0.0f);
    for (int64_t r = 0; r < rows; ++r) visible[r] = VisibleKeyCount(shape, options, b, i0 + r);
    // The last row sees the most keys (visibility never shrinks down the rows).
    const int64_t keys = visible[rows - 1];
    // Key tiles from the anchor back to the first, then those after it. The anchor holds the
    // key nearest the item's last query: the largest ALiBi bias (and the last visible key for
    // causal rows and without ALiBi).
    const int64_t tiles = (keys + k_tile - 1) / k_tile;
    const int64_t anchor =
        bias.alibi() && keys > 0 ? bias.NearestKey(b, i0 + rows - 1, keys) / k_tile : tiles - 1;
    // Cancellation is polled about every 1024 keys, as on the other paths.
    const int64_t poll_every = std::max<int64_t>(1, 1024 / k_tile);
    float* scores = scratch.scores.data();
    uint16_t* probs = scratch.probs_bf16.data();
    for (int64_t step = 0; step < tiles; ++step) {
      const int64_t j0 = (step <= anchor ? anchor - step : step) * k_tile;
      if (step % poll_every == 0) {
        poll_cancelled();
        if (stop.load(std::memory_order_relaxed)) return;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += 32) {
        const int64_t block_rows = std::min<int64_t>(32, rows - r0);
        const int64_t block_keys = visible[r0 + block_rows - 1];
        if (block_keys <= j0) continue;
        const int64_t cols = std::min(k_tile, block_keys - j0);
        // scores [32, cols] = Q_block · K_tileᵀ, unscaled
        AmxScores(q_rows + r0 * hd_pad, block_rows, hd, k_packed, j0, cols, scores, stride);
        for (int64_t r = 0; r < block_rows; ++r) {
          const int64_t row_index = r0 + r;
          float* row = scores + r * stride;
          uint16_t* p_row = probs + r * stride;
          const int64_t row_cols = std::clamp<int64_t>(visible[row_index] - j0, 0, cols);
          // Masked keys and the padding of the last 32 get probability 0.
          std::fill(p_row + row_cols, p_row + PadTo32(cols), uint16_t{0});
          if (row_cols == 0) continue;
          // ALiBi's bias goes into the exponentials; T5's is added here, and so is a scale
          // <= 0 (a shift taken as max(row)·scale is the scaled maximum only for a positive
          // one).
          float row_scale = scale;
          AlibiTerm alibi_term;
          const AlibiTerm* alibi = nullptr;
          if (bias.alibi()) {
            alibi_term = bias.AlibiRow(b, h, i0 + row_index, j0);
            alibi = &alibi_term;
          } else if (bias.active()) {
            bias.AddRow(b, h, i0 + row_index, j0, row_cols, row_scale, row);
            row_scale = 1.0f;
          } else if (row_scale <= 0.0f) {
            ScaleRow(row, row_cols, row_scale);
            row_scale = 1.0f;
          }
          float* sums = lane_sums + row_index * 16;
          if (shift[row_index] == kNegInf) {
            // The row's first tile (usually the anchor): with ALiBi its exponents, bias added
            // here, and their maximum; otherwise the maximum of the last 16.
            if (alibi != nullptr) {
              AddAlibiRow(row, row_cols, row_scale, *alibi);
              row_scale = 1.0f;
              alibi = nullptr;
              shift[row_index] = RowMax(row, row_cols);
            } else {
              const int64_t nearest = std::min<int64_t>(row_cols, 16);
              shift[row_index] = RowMax(row + row_cols - nearest, nearest) * row_scale;
            }
          }
          if (!ExpShiftedToBfloat16Lanes(row, row_cols, row_scale, shift[row_index], p_row, sums,
                                         alibi)) {
            // Scores far above the shift: shift by this tile's maximum, and rescale what the
            // row has summed and accumulated so far. The call then passes (values <= 1).
            if (alibi != nullptr) {
              AddAlibiRow(row, row_cols, row_scale, *alibi);
              row_scale = 1.0f;
              alibi = nullptr;
            }
            const float new_shift = RowMax(row, row_cols) * row_scale;
            const float correction = ExpNonPositive(shift[row_index] - new_shift);
            ScaleRow(sums, 16, correction);
            ScaleRow(acc + row_index * acc_stride, hd, correction);
            shift[row_index] = new_shift;
            ExpShiftedToBfloat16Lanes(row, row_cols, row_scale, new_shift, p_row, sums, alibi);
          }
        }
        // acc [32, hd] += P [32, cols] · V_tile [cols, hd]
        AmxAccumulate(probs, stride, block_rows, v_packed, Sk, j0, cols, hd,
                      acc + r0 * acc_stride, acc_stride);
      }
    }
    T* out_rows = out + q_offset;
    for (int64_t r = 0; r < rows; ++r) {
      float sum = 0.0f;
      for (int l = 0; l < 16; ++l) sum += lane_sums[r * 16 + l];
      const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;  // no visible key: zeros
      WriteScaledRow(acc + r * acc_stride, hd, inverse, out_rows + r * hd);
    }
  };

  // A work item through oneDNN's matmul: per key tile, scores for all its rows, then the online
  // softmax row by row, then P·V.
  auto process_gemm = [&](int64_t b, int64_t h, int64_t i0, int64_t rows, Scratch& scratch,
                          TileGemm& gemm) {
    const int64_t q_offset = ((b * H + h) * Sq + i0) * hd;
    const int64_t kv_offset = (b * Hkv + h / group) * Sk * hd;
    // The last row sees the most keys (visibility never shrinks down the rows).
    const int64_t keys = VisibleKeyCount(shape, options, b, i0 + rows - 1);
    float* acc = scratch.acc.data();
    float* row_max = scratch.row_max.data();
    float* row_sum = scratch.row_sum.data();
    std::fill(acc, acc + rows * acc_stride, 0.0f);
    std::fill(row_max, row_max + rows, kNegInf);
    std::fill(row_sum, row_sum + rows, 0.0f);

    for (int64_t j0 = 0; j0 < keys; j0 += k_tile) {
      poll_cancelled();
      if (stop.load(std::memory_order_relaxed)) return;
      const int64_t cols = std::min(k_tile, keys - j0);
      float* scores = scratch.scores.data();
      // scores [rows, cols] = Q_tile · K_tileᵀ · scale
      gemm.Run(rows, cols, hd, scale, operands.At(operands.q, q_offset),
               operands.At(operands.k, kv_offset + j0 * hd), true, false, scores);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = scores + r * cols;
        const int64_t visible =
            std::clamp<int64_t>(VisibleKeyCount(shape, options, b, i0 + r) - j0, 0, cols);
        if (bias.active()) bias.AddRow(b, h, i0 + r, j0, visible, 1.0f, row);
        // Masked keys get probability 0 (in the operand P·V reads).
        uint16_t* row_bf16 = bf16 ? scratch.probs_bf16.data() + r * cols : nullptr;
        if (bf16) {
          std::fill(row_bf16 + visible, row_bf16 + cols, uint16_t{0});
        } else {
          std::fill(row + visible, row + cols, 0.0f);
        }
        if (visible == 0) continue;
        // Online softmax: exponentials relative to a shift at or above the maximum so far; what
        // earlier tiles accumulated is rescaled when the shift rises.
        float new_max, tile_sum;
        if (bf16) {
          std::tie(new_max, tile_sum) =
              Bfloat16Probabilities(row, visible, 1.0f, row_max[r], row_bf16);
        } else {
          new_max = std::max(row_max[r], RowMax(row, visible));
          tile_sum = ExpShiftedSum(row, visible, new_max);
        }
        const float correction = ExpNonPositive(row_max[r] - new_max);
        row_sum[r] = row_sum[r] * correction + tile_sum;
        if (correction != 1.0f) ScaleRow(acc + r * acc_stride, hd, correction);
        row_max[r] = new_max;
      }
      // acc [rows, hd] += P [rows, cols] · V_tile [cols, hd]
      const void* probs = bf16 ? static_cast<const void*>(scratch.probs_bf16.data()) : scores;
      gemm.Run(rows, hd, cols, 1.0f, probs, operands.At(operands.v, kv_offset + j0 * hd), false,
               true, acc);
    }
    T* out_rows = out + q_offset;
    for (int64_t r = 0; r < rows; ++r) {
      const float inverse = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;  // no visible key: zeros
      WriteScaledRow(acc + r * acc_stride, hd, inverse, out_rows + r * hd);
    }
  };

  // Work item `item` = (batch element, head, query tile), written to its rows of `out`.
  auto process = [&](int64_t item, Scratch& scratch, TileGemm& gemm) {
    const int64_t b = item / (H * q_tiles);
    const int64_t h = (item / q_tiles) % H;
    // Within a head, the longest (last) causal query tiles go first, balancing the schedule.
    const int64_t i0 = (q_tiles - 1 - item % q_tiles) * q_tile;
    const int64_t rows = std::min(q_tile, Sq - i0);
    if (amx) {
      process_amx(b, h, i0, rows, scratch);
    } else {
      process_gemm(b, h, i0, rows, scratch, gemm);
    }
  };

  // An exception must not leave an OpenMP region (that terminates the process): each thread
  // catches its own, the first is kept, and the others stop at their next tile.
  std::string error;
  bool out_of_memory = false;
  auto record = [&](const std::exception& e) {
#pragma omp critical(attnserve_flash_attention_error)
    {
      if (error.empty()) {
        error = e.what();
        out_of_memory = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
      }
    }
    stop = true;
  };

  ApplyComputeThreads();
#pragma omp parallel
  {
    // Probabilities far below a row's maximum reach the subnormal range in P·V; x86 handles
    // subnormals in microcode, tens of times slower. Flush them to zero on this thread for the
    // kernel's duration (their contribution is below f32 resolution of the row sum anyway).
    const unsigned int saved_csr = _mm_getcsr();
    _mm_setcsr(saved_csr | kFlushToZero | kDenormalsAreZero);
    ThreadState& state = CurrentThreadState();
    TileGemm* gemm = nullptr;
    try {
      state.scratch.Reserve(q_tile, k_tile, hd, bf16, amx);
      gemm = &state.Gemm(options.compute);
      if (amx) AmxConfigure();
    } catch (const std::exception& e) {
      record(e);
    }
    // Every thread reaches the worksharing loops, even one whose set-up failed. Packing (AMX
    // only) ends at the loop's barrier, before any item reads the packed K and V.
#pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < operands.pack_parts; ++part) operands.Pack(part);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * H * q_tiles; ++item) {
      if (stop.load(std::memory_order_relaxed)) continue;
      try {
        process(item, state.scratch, *gemm);
      } catch (const std::exception& e) {
        record(e);
      }
    }
    if (amx) AmxRelease();
    _mm_setcsr(saved_csr);
  }
  if (!error.empty()) {
    return out_of_memory ? absl::ResourceExhaustedError("attention: out of memory")
                         : absl::InternalError(absl::StrCat("attention: ", error));
  }
  if (stop) return absl::CancelledError("attention cancelled between tiles");
  return absl::OkStatus();
}

}  // namespace

absl::Status FlashAttention(const SdpaShape& shape, const SdpaOptions& options, const float* q,
                            const float* k, const float* v, float* out, FlashTiling tiling) {
  return TiledAttention(shape, options, q, k, v, out, tiling);
}

absl::Status FlashAttention(const SdpaShape& shape, const SdpaOptions& options,
                            const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            uint16_t* out, FlashTiling tiling) {
  if (options.compute != ComputeType::kBfloat16) {
    return absl::InvalidArgumentError("FlashAttention on bf16 tensors computes in bf16");
  }
  return TiledAttention(shape, options, q, k, v, out, tiling);
}

}  // namespace attnserve
