// The tiled attention's dispatch: the call's plan (tiles, AMX or oneDNN), its tables and
// operands, and the work items spread over the OpenMP threads. Each item runs one of the two
// paths (flash_attention_amx.cc, flash_attention_gemm.cc).
#include "core/attention/flash_attention.h"

#include <xmmintrin.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "core/attention/flash_attention_amx.h"
#include "core/attention/flash_attention_gemm.h"
#include "core/attention/flash_call.h"
#include "core/attention/flash_operands.h"
#include "core/attention/flash_thread_state.h"
#include "core/attention/score_bias.h"
#include "core/kernels/amx_tiles.h"
#include "core/kernels/cpu_features.h"
#include "core/kernels/onednn_ops.h"

namespace attnserve {
namespace {

constexpr unsigned int kFlushToZero = 0x8000;      // MXCSR FTZ: subnormal results become 0
constexpr unsigned int kDenormalsAreZero = 0x0040;  // MXCSR DAZ: subnormal inputs read as 0

bool Supported(const PositionalEncoding& encoding) {
  return std::holds_alternative<NoPositionalEncoding>(encoding) ||
         std::holds_alternative<RopeParams>(encoding) ||
         std::holds_alternative<AlibiParams>(encoding) ||
         std::holds_alternative<T5BiasParams>(encoding);
}

// The call's tiles and strides from the caller's tiling, clipped to the sequence lengths.
FlashCall PlanCall(const SdpaShape& shape, const SdpaOptions& options, const FlashTiling& tiling,
                   bool amx, const ScoreBias& bias, StopFlag* stop) {
  const int64_t Sq = shape.q_len, Sk = shape.kv_len;
  const int64_t q_tile =
      std::max<int64_t>(1, std::min(amx ? tiling.amx_q_tile : tiling.q_tile, Sq));
  // The AMX products start key tiles at multiples of 32.
  const int64_t k_tile = amx ? PadTo32(std::max<int64_t>(1, std::min(tiling.amx_k_tile, Sk)))
                             : std::max<int64_t>(1, std::min(tiling.k_tile, Sk));
  return FlashCall{shape,
                   options,
                   bias,
                   EffectiveScale(shape, options),
                   options.compute == ComputeType::kBfloat16,
                   amx,
                   q_tile,
                   k_tile,
                   (Sq + q_tile - 1) / q_tile,
                   Scratch::ScoreStride(k_tile, amx),
                   // The AMX products work on blocks of 32.
                   amx ? PadTo32(shape.head_dim) : shape.head_dim,
                   stop};
}

// Work item `index` = (batch element, head, query tile). Within a head, the longest (last)
// causal query tiles go first, balancing the schedule.
WorkItem ItemAt(const FlashCall& call, int64_t index) {
  const int64_t H = call.shape.num_heads, q_tiles = call.q_tiles;
  const int64_t i0 = (q_tiles - 1 - index % q_tiles) * call.q_tile;
  return WorkItem{index / (H * q_tiles), (index / q_tiles) % H, i0,
                  std::min(call.q_tile, call.shape.q_len - i0)};
}

// The first exception a work item threw. An exception must not leave an OpenMP region (that
// terminates the process): each thread catches its own, the first is kept, and the others stop
// at their next tile.
class FirstError {
 public:
  // Keeps e's message unless one is kept already, and stops the call.
  void Record(const std::exception& e, StopFlag& stop) {
#pragma omp critical(attnserve_flash_attention_error)
    {
      if (message_.empty()) {
        message_ = e.what();
        out_of_memory_ = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
      }
    }
    stop.Stop();
  }

  // The kept error as the call's status; OK when none is kept.
  absl::Status status() const {
    if (message_.empty()) return absl::OkStatus();
    return out_of_memory_ ? absl::ResourceExhaustedError("attention: out of memory")
                          : absl::InternalError(absl::StrCat("attention: ", message_));
  }

 private:
  std::string message_;
  bool out_of_memory_ = false;
};

// Every work item of the call, over the OpenMP threads (on AMX after packing K and V).
template <typename T>
void RunWorkItems(const FlashCall& call, const FlashOperands<T>& operands, T* out,
                  FirstError& error) {
  const int64_t items = call.shape.batch * call.shape.num_heads * call.q_tiles;
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
      state.scratch.Reserve(call.q_tile, call.k_tile, call.shape.head_dim, call.bf16, call.amx);
      gemm = &state.Gemm(call.options.compute);
      if (call.amx) AmxConfigure();
    } catch (const std::exception& e) {
      error.Record(e, *call.stop);
    }
    // Every thread reaches the worksharing loops, even one whose set-up failed. Packing (AMX
    // only) ends at the loop's barrier, before any item reads the packed K and V.
#pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < operands.pack_parts; ++part) operands.Pack(part);
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < items; ++index) {
      if (call.stop->stopped()) continue;
      try {
        if (call.amx) {
          AttendAmx(call, operands, ItemAt(call, index), state.scratch, out);
        } else {
          AttendGemm(call, operands, ItemAt(call, index), state.scratch, *gemm, out);
        }
      } catch (const std::exception& e) {
        error.Record(e, *call.stop);
      }
    }
    if (call.amx) AmxRelease();
    _mm_setcsr(saved_csr);
  }
}

// FlashAttention for tensors of T: float, or uint16_t bf16 bits (with bf16 compute).
template <typename T>
absl::Status TiledAttention(const SdpaShape& shape, const SdpaOptions& options, const T* q,
                            const T* k, const T* v, T* out, const FlashTiling& tiling) {
  if (!Supported(options.encoding)) {
    return absl::InvalidArgumentError(absl::StrCat("FlashAttention cannot apply encoding.",
                                                   EncodingName(options.encoding)));
  }
  const bool bf16 = options.compute == ComputeType::kBfloat16;
  const bool amx = bf16 && tiling.use_amx && AmxBf16Available() && CpuHasAvx512Bf16();
  // The call's tables and operand copies; running out of memory for them is the caller's
  // RESOURCE_EXHAUSTED, not an exception out of the kernel.
  std::unique_ptr<const ScoreBias> bias;
  std::unique_ptr<const FlashOperands<T>> operands;
  try {
    bias = std::make_unique<const ScoreBias>(shape, options);
    using Kind = typename FlashOperands<T>::Kind;
    operands = std::make_unique<const FlashOperands<T>>(
        amx ? Kind::kAmx : bf16 ? Kind::kBfloat16 : Kind::kFloat32, shape, q, k, v);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("attention: out of memory");
  }
  StopFlag stop(options.is_cancelled);
  FirstError error;
  RunWorkItems(PlanCall(shape, options, tiling, amx, *bias, &stop), *operands, out, error);
  if (absl::Status status = error.status(); !status.ok()) return status;
  if (stop.stopped()) return absl::CancelledError("attention cancelled between tiles");
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
