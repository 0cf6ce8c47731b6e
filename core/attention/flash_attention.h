// Tiled scaled dot-product attention with an online softmax (FlashAttention-style). Per
// (batch, head, query tile) it walks the visible key tiles, keeping running row maxima and sums,
// so no thread ever holds more than a [q_tile, k_tile] block of scores, and tiles that the causal
// mask or the key lengths hide are never computed.
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "core/attention/sdpa_options.h"

namespace attnserve {

struct FlashTiling {
  // Measured on the 2-core development machine (docs/performance.md): 128×1024 blocks keep the
  // tile products on brgemm at ~0.8 of the GEMM ceiling; smaller tiles pay per-call overhead.
  int64_t q_tile = 128;    // query rows per work item
  int64_t k_tile = 1024;   // keys per score block
  int64_t amx_q_tile = 64;  // query rows per work item on AMX (more items, same speed)
  // BFLOAT16 products on AMX tiles (core/kernels/amx_tiles.h) where the CPU has AMX-BF16 and
  // AVX512-BF16; otherwise, or when false, on oneDNN's bf16 matmul.
  bool use_amx = true;
  // Keys per fused step on AMX (rounded up to a multiple of 32): each 32-row block's scores,
  // exponentials and P·V for this many keys stay in L1.
  int64_t amx_k_tile = 128;
};

// out = softmax(q·kᵀ·scale + bias + mask)·v with the ScaledDotProductAttention contract for
// probs == nullptr. Handles options.encoding none, ALiBi and T5 (bias added per tile); RoPE must
// already be applied to q and k by the caller; CoPE is not supported (it needs whole rows).
// Options must be valid (ValidateSdpa). Work items run in parallel over OpenMP threads, each
// calling oneDNN's GEMM sequentially. options.is_cancelled is polled between tiles.
//   q: [B, H, Sq, hd]; k, v: [B, Hkv, Sk, hd]; out: [B, H, Sq, hd]
absl::Status FlashAttention(const SdpaShape& shape, const SdpaOptions& options, const float* q,
                            const float* k, const float* v, float* out, FlashTiling tiling = {});

// The same on bf16 tensors (uint16_t bits; out rounded to nearest even), for options.compute
// kBfloat16 (INVALID_ARGUMENT otherwise): the operands go to the products as they are, with
// half the bytes of f32 and no conversions. Equal to the f32 version on the same values widened
// to f32, its output rounded to bf16.
absl::Status FlashAttention(const SdpaShape& shape, const SdpaOptions& options,
                            const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            uint16_t* out, FlashTiling tiling = {});

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_H_
