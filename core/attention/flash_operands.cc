#include "core/attention/flash_operands.h"

#include <type_traits>

#include "core/kernels/amx_tiles.h"
#include "core/kernels/bfloat16_rows.h"

namespace attnserve {
namespace {

std::vector<uint16_t> ToBfloat16(const float* values, int64_t count) {
  std::vector<uint16_t> bits(count);
  ConvertToBfloat16Parallel(values, count, bits.data());
  return bits;
}

}  // namespace

template <typename T>
FlashOperands<T>::FlashOperands(Kind kind, const SdpaShape& shape, const T* q_in, const T* k_in,
                                const T* v_in)
    : kind(kind), q(q_in), k(k_in), v(v_in), shape_(shape) {
  const int64_t kv_heads = shape.batch * shape.num_kv_heads;
  // A strided k and v (kv_stride) are copied whole, gaps included: still one conversion pass.
  const int64_t kv_count = kv_heads * KvHeadRows(shape) * shape.head_dim;
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

template <typename T>
void FlashOperands<T>::Pack(int64_t part) const {
  const int64_t Sk = shape_.kv_len, hd = shape_.head_dim;
  const int64_t kv_head = part / parts_per_head_;
  const int64_t begin = (part % parts_per_head_) * kPackKeys;
  const int64_t source = kv_head * KvHeadRows(shape_) * hd;
  const int64_t target = kv_head * packed_head_size;
  AmxPackKeys(static_cast<const T*>(k) + source, Sk, hd, begin, begin + kPackKeys,
              k_packed.data() + target);
  AmxPackValues(static_cast<const T*>(v) + source, Sk, hd, begin, begin + kPackKeys,
                v_packed.data() + target);
}

template struct FlashOperands<float>;
template struct FlashOperands<uint16_t>;

}  // namespace attnserve
