// The operands of one FlashAttention call in the form its products take them. Internal to
// core/attention.
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_OPERANDS_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_OPERANDS_H_

#include <cstdint>
#include <vector>

#include "core/attention/sdpa_options.h"
#include "core/kernels/cache_aligned_array.h"

namespace attnserve {

// The GEMM operands of a call, from tensors of T (float, or uint16_t bf16 bits): f32 inputs as
// they are; bf16 operands for oneDNN's bf16 products (bf16 tensors as they are, f32 ones as
// copies); or, for the AMX products, K and V packed per (batch element, K/V head) in the tile
// layout (core/kernels/amx_tiles.h) while Q rows are copied per work item.
template <typename T>
struct FlashOperands {
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

  // kFloat32 needs T = float (bf16 tensors are computed in bf16). q: [B, H, Sq, hd];
  // k, v: [B, Hkv, Sk, hd]; they must outlive this object.
  FlashOperands(Kind kind, const SdpaShape& shape, const T* q_in, const T* k_in, const T* v_in);

  // kAmx: packs the keys and values [kPackKeys·i, kPackKeys·(i + 1)) of one K/V head, where
  // part = head·parts_per_head_ + i.
  void Pack(int64_t part) const;

  // Element `index` of an operand, as a pointer the GEMM takes.
  const void* At(const void* base, int64_t index) const {
    return static_cast<const char*>(base) + index * element_size;
  }

 private:
  const SdpaShape& shape_;
  int64_t parts_per_head_ = 0;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_OPERANDS_H_
