#include "core/flash_attention.h"

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
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/bfloat16.h"
#include "core/onednn_ops.h"
#include "dnnl.hpp"

namespace attnserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr unsigned int kFlushToZero = 0x8000;      // MXCSR FTZ: subnormal results become 0
constexpr unsigned int kDenormalsAreZero = 0x0040;  // MXCSR DAZ: subnormal inputs read as 0

// e^x for x <= 0 as a polynomial that compilers vectorise (no libm call): x = n·ln2 + r,
// |r| <= ln2/2, e^r by its degree-6 Taylor polynomial (relative error < 2e-7), 2^n built in the
// exponent bits. Inputs below −87 (including −inf) give exactly 0, as a masked score must.
inline float ExpNonPositive(float x) {
  const bool underflow = x < -87.0f;
  x = underflow ? -87.0f : x;
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return underflow ? 0.0f : p * two_n;
}

// row[c] ← e^(row[c] − max) for c < n; returns their sum. Built for AVX-512, AVX2 and baseline
// x86-64, chosen at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) float ExpShiftedSum(float* row,
                                                                                  int64_t n,
                                                                                  float max) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) {
    const float e = ExpNonPositive(row[c] - max);
    row[c] = e;
    sum += e;
  }
  return sum;
}

// Sixteen lanes as a GCC vector type: the compiler emits one 512-bit (or two 256-bit) max per
// step, which its auto-vectoriser would not do for a max reduction without fast-math.
typedef float Float16 __attribute__((vector_size(64)));
typedef uint32_t Uint32x16 __attribute__((vector_size(64)));
typedef uint16_t Uint16x16 __attribute__((vector_size(32)));

__attribute__((target_clones("avx512f", "avx2", "default"))) float RowMax(const float* row,
                                                                          int64_t n) {
  Float16 lanes;
  for (int l = 0; l < 16; ++l) lanes[l] = kNegInf;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    Float16 x;
    std::memcpy(&x, row + c, sizeof(x));
    lanes = x > lanes ? x : lanes;
  }
  float max = kNegInf;
  for (int l = 0; l < 16; ++l) max = lanes[l] > max ? lanes[l] : max;
  for (; c < n; ++c) max = row[c] > max ? row[c] : max;
  return max;
}

// out[i] ← bf16(values[i]), round to nearest even, NaN kept a quiet NaN (as FloatToBfloat16), 16
// at a time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ConvertToBfloat16(
    const float* values, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Uint32x16 bits;
    std::memcpy(&bits, values + i, sizeof(bits));
    const Uint32x16 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const Uint32x16 quiet_nan = (bits >> 16) | 0x0040u;
    const Uint32x16 result = (bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
    const Uint16x16 narrow = __builtin_convertvector(result, Uint16x16);
    std::memcpy(out + i, &narrow, sizeof(narrow));
  }
  for (; i < n; ++i) out[i] = FloatToBfloat16(values[i]);
}

typedef int32_t Int32x16 __attribute__((vector_size(64)));

// For bf16 compute: e = e^(row[c] − max) written as bf16 into out[c], returning Σ e, in one
// vectorised pass. The bf16 operand keeps 8 significant bits, so e^r uses a degree-5 Taylor
// polynomial (relative error < 3e-6, far below bf16's 2^-9 rounding); the sum is of the f32 values.
__attribute__((target_clones("avx512f", "avx2", "default"))) float ExpShiftedSumToBfloat16(
    const float* row, int64_t n, float max, uint16_t* out) {
  Float16 sums = {};
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    Float16 x;
    std::memcpy(&x, row + c, sizeof(x));
    x -= max;
    const Int32x16 underflow = x < -87.0f;
    x = underflow ? -87.0f : x;
    // n = round(x·log2 e) by the 1.5·2^23 trick; r = x − n·ln 2 in two parts.
    const Float16 k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const Float16 r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;
    Float16 p = r * (1.0f / 120.0f) + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const Int32x16 exponent = (__builtin_convertvector(k, Int32x16) + 127) << 23;
    Float16 two_k;
    std::memcpy(&two_k, &exponent, sizeof(two_k));
    Float16 e = p * two_k;
    e = underflow ? 0.0f : e;
    sums += e;
    Uint32x16 bits;
    std::memcpy(&bits, &e, sizeof(bits));
    // e is finite and non-negative: round to nearest even needs no NaN case.
    const Uint16x16 narrow =
        __builtin_convertvector((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16, Uint16x16);
    std::memcpy(out + c, &narrow, sizeof(narrow));
  }
  float sum = 0.0f;
  for (int l = 0; l < 16; ++l) sum += sums[l];
  for (; c < n; ++c) {
    const float e = ExpNonPositive(row[c] - max);
    out[c] = FloatToBfloat16(e);
    sum += e;
  }
  return sum;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void ScaleRow(float* row, int64_t n,
                                                                           float factor) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) row[c] *= factor;
}

// row[c] += −slope·(q − k[c]) when causal (the DESIGN's −m(i−j); visible keys usually have
// k <= q), −slope·|q − k[c]| otherwise. Positions arrive relative to the batch element's first
// key, as floats: exact while they span < 2^24 positions, and the loop stays vectorisable.
__attribute__((target_clones("avx512f", "avx2", "default"))) void AddAlibiRow(
    float* row, int64_t n, float slope, float q_position, const float* k_positions, bool causal) {
  if (causal) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) row[c] -= slope * (q_position - k_positions[c]);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) row[c] -= slope * std::fabs(q_position - k_positions[c]);
  }
}

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
    min_distance_.resize(shape.batch);
    for (int64_t b = 0; b < shape.batch; ++b) {
      // Positions are in [0, kMaxPosition] (ValidateSdpa), so these differences cannot overflow.
      const int64_t* q = options.q_positions.data() + b * Sq;
      const int64_t* k = options.k_positions.data() + b * Sk;
      const auto [q_min, q_max] = std::minmax_element(q, q + Sq);
      const auto [k_min, k_max] = std::minmax_element(k, k + Sk);
      for (int64_t i = 0; i < Sq; ++i) q_relative_[b * Sq + i] = static_cast<float>(q[i] - *k_min);
      for (int64_t j = 0; j < Sk; ++j) k_relative_[b * Sk + j] = static_cast<float>(k[j] - *k_min);
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

  // Adds the bias of query row i (batch element b, head h) to scores of keys [j0, j0 + n).
  void AddRow(int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, float* row) const {
    const int64_t Sq = shape_.q_len, Sk = shape_.kv_len;
    if (!slopes_.empty()) {
      AddAlibiRow(row, n, static_cast<float>(slopes_[h]), q_relative_[b * Sq + i],
                  k_relative_.data() + b * Sk + j0, options_.causal);
      return;
    }
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
  std::vector<std::vector<int32_t>> bucket_by_distance_;  // T5: per batch element, or empty
  std::vector<int64_t> min_distance_;                     // T5: per batch element
};

// Row-major C [M,N] (+)= alpha·A·op(B), A [M,K], B [K,N] (or [N,K] when b_transposed), C f32,
// through oneDNN matmul primitives built once per shape for this thread: the brgemm kernels, far
// faster on tiles than the gemm:jit behind dnnl_sgemm. Tile shapes repeat, so each shape is built
// once per call. Operands are f32, or bf16 (uint16_t bits) with f32 accumulation.
class TileGemm {
 public:
  explicit TileGemm(ComputeType compute)
      : engine_(dnnl::engine::kind::cpu, 0),
        stream_(engine_),
        operand_(compute == ComputeType::kBfloat16 ? dnnl::memory::data_type::bf16
                                                   : dnnl::memory::data_type::f32) {}

  void Run(int64_t m, int64_t n, int64_t k, float alpha, const void* a, const void* b,
           bool b_transposed, bool accumulate, float* c) {
    using dnnl::memory;
    const Key key{m, n, k, b_transposed, accumulate, alpha};
    auto it = primitives_.find(key);
    if (it == primitives_.end()) {
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
  struct Entry {
    dnnl::matmul primitive;
    dnnl::memory::desc a, b, c;
  };
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::memory::data_type operand_;
  std::map<Key, Entry> primitives_;
};

// The GEMM operands of a call: the f32 inputs as they are, or their bf16 copies.
struct Operands {
  const void* q;
  const void* k;
  const void* v;
  int64_t element_size;
  std::vector<uint16_t> q_bf16, k_bf16, v_bf16;  // owned copies for kBfloat16

  Operands(ComputeType compute, const float* q_f32, const float* k_f32, const float* v_f32,
           int64_t q_count, int64_t kv_count) {
    if (compute == ComputeType::kFloat32) {
      q = q_f32;
      k = k_f32;
      v = v_f32;
      element_size = sizeof(float);
      return;
    }
    q_bf16 = ToBfloat16(q_f32, q_count);
    k_bf16 = ToBfloat16(k_f32, kv_count);
    v_bf16 = ToBfloat16(v_f32, kv_count);
    q = q_bf16.data();
    k = k_bf16.data();
    v = v_bf16.data();
    element_size = sizeof(uint16_t);
  }

  static std::vector<uint16_t> ToBfloat16(const float* values, int64_t count) {
    std::vector<uint16_t> bits(count);
    constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i += kChunk) {
      ConvertToBfloat16(values + i, std::min(kChunk, count - i), bits.data() + i);
    }
    return bits;
  }

  // Element `index` of an operand, as a pointer the GEMM takes.
  const void* At(const void* base, int64_t index) const {
    return static_cast<const char*>(base) + index * element_size;
  }
};

// One thread's buffers for a work item.
struct Scratch {
  Scratch(int64_t q_tile, int64_t k_tile, int64_t hd, bool bf16)
      : scores(q_tile * k_tile),
        probs_bf16(bf16 ? q_tile * k_tile : 0),
        acc(q_tile * hd),
        row_max(q_tile),
        row_sum(q_tile) {}

  std::vector<float> scores;         // [q_tile, k_tile]
  std::vector<uint16_t> probs_bf16;  // [q_tile, k_tile], the P operand for kBfloat16
  std::vector<float> acc;            // [q_tile, hd] unnormalised output rows
  std::vector<float> row_max, row_sum;
};

}  // namespace

absl::Status FlashAttention(const SdpaShape& shape, const SdpaOptions& options, const float* q,
                            const float* k, const float* v, float* out, FlashTiling tiling) {
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
  const int64_t q_tile = std::max<int64_t>(1, std::min(tiling.q_tile, Sq));
  const int64_t k_tile = std::max<int64_t>(1, std::min(tiling.k_tile, Sk));
  const int64_t q_tiles = (Sq + q_tile - 1) / q_tile;
  const float scale = EffectiveScale(shape, options);
  const ScoreBias bias(shape, options);

  const bool bf16 = options.compute == ComputeType::kBfloat16;
  const Operands operands(options.compute, q, k, v, B * H * Sq * hd, B * Hkv * Sk * hd);

  // Work item `item` = (batch element, head, query tile): the online softmax over its visible
  // key tiles, written to its rows of `out`.
  std::atomic<bool> stop{false};
  // Whichever thread starts a tile polls for cancellation, one at a time (a poll in progress
  // makes the others skip theirs).
  std::atomic<bool> polling{false};
  auto poll_cancelled = [&] {
    if (options.is_cancelled == nullptr || polling.exchange(true)) return;
    if (options.is_cancelled()) stop = true;
    polling = false;
  };
  auto process = [&](int64_t item, Scratch& scratch, TileGemm& gemm) {
    const int64_t b = item / (H * q_tiles);
    const int64_t h = (item / q_tiles) % H;
    // Within a head, the longest (last) causal query tiles go first, balancing the schedule.
    const int64_t i0 = (q_tiles - 1 - item % q_tiles) * q_tile;
    const int64_t rows = std::min(q_tile, Sq - i0);
    const int64_t kv_head = h / group;
    const void* q_rows = operands.At(operands.q, ((b * H + h) * Sq + i0) * hd);
    const int64_t kv_offset = (b * Hkv + kv_head) * Sk * hd;
    // The last row sees the most keys (visibility never shrinks down the rows).
    const int64_t keys = VisibleKeyCount(shape, options, b, i0 + rows - 1);

    std::fill(scratch.acc.begin(), scratch.acc.begin() + rows * hd, 0.0f);
    std::fill(scratch.row_max.begin(), scratch.row_max.begin() + rows, kNegInf);
    std::fill(scratch.row_sum.begin(), scratch.row_sum.begin() + rows, 0.0f);

    for (int64_t j0 = 0; j0 < keys; j0 += k_tile) {
      poll_cancelled();
      if (stop.load(std::memory_order_relaxed)) return;
      const int64_t cols = std::min(k_tile, keys - j0);
      float* scores = scratch.scores.data();
      // scores [rows, cols] = Q_tile · K_tileᵀ · scale
      gemm.Run(rows, cols, hd, scale, q_rows, operands.At(operands.k, kv_offset + j0 * hd), true,
               false, scores);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = scores + r * cols;
        const int64_t visible =
            std::clamp<int64_t>(VisibleKeyCount(shape, options, b, i0 + r) - j0, 0, cols);
        if (bias.active()) bias.AddRow(b, h, i0 + r, j0, visible, row);
        // Masked keys get probability 0 (in the operand P·V reads).
        uint16_t* row_bf16 = bf16 ? scratch.probs_bf16.data() + r * cols : nullptr;
        if (bf16) {
          std::fill(row_bf16 + visible, row_bf16 + cols, uint16_t{0});
        } else {
          std::fill(row + visible, row + cols, 0.0f);
        }
        if (visible == 0) continue;
        // Online softmax: rescale what earlier tiles accumulated to the new row maximum.
        const float new_max = std::max(scratch.row_max[r], RowMax(row, visible));
        const float correction = ExpNonPositive(scratch.row_max[r] - new_max);
        const float tile_sum = bf16 ? ExpShiftedSumToBfloat16(row, visible, new_max, row_bf16)
                                    : ExpShiftedSum(row, visible, new_max);
        scratch.row_sum[r] = scratch.row_sum[r] * correction + tile_sum;
        if (correction != 1.0f) ScaleRow(scratch.acc.data() + r * hd, hd, correction);
        scratch.row_max[r] = new_max;
      }
      // acc [rows, hd] += P [rows, cols] · V_tile [cols, hd]
      const void* probs = bf16 ? static_cast<const void*>(scratch.probs_bf16.data()) : scores;
      gemm.Run(rows, hd, cols, 1.0f, probs, operands.At(operands.v, kv_offset + j0 * hd), false,
               true, scratch.acc.data());
    }
    float* out_rows = out + ((b * H + h) * Sq + i0) * hd;
    for (int64_t r = 0; r < rows; ++r) {
      const float sum = scratch.row_sum[r];
      const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;  // no visible key: zeros
      for (int64_t c = 0; c < hd; ++c) out_rows[r * hd + c] = scratch.acc[r * hd + c] * inverse;
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
    std::unique_ptr<Scratch> scratch;
    std::unique_ptr<TileGemm> gemm;
    try {
      scratch = std::make_unique<Scratch>(q_tile, k_tile, hd, bf16);
      gemm = std::make_unique<TileGemm>(options.compute);
    } catch (const std::exception& e) {
      record(e);
    }
    // Every thread reaches the worksharing loop, even one whose set-up failed.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * H * q_tiles; ++item) {
      if (stop.load(std::memory_order_relaxed)) continue;
      try {
        process(item, *scratch, *gemm);
      } catch (const std::exception& e) {
        record(e);
      }
    }
    _mm_setcsr(saved_csr);
  }
  if (!error.empty()) {
    return out_of_memory ? absl::ResourceExhaustedError("attention: out of memory")
                         : absl::InternalError(absl::StrCat("attention: ", error));
  }
  if (stop) return absl::CancelledError("attention cancelled between tiles");
  return absl::OkStatus();
}

}  // namespace attnserve
