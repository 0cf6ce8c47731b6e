// Sixteen lanes at a time, shared by the row kernels (softmax_kernels.cc, bfloat16_rows.cc,
// rope_rotation.cc). Internal to core/.
#ifndef ATTNSERVE_CORE_KERNELS_VECTOR_LANES_H_
#define ATTNSERVE_CORE_KERNELS_VECTOR_LANES_H_

#include <immintrin.h>

#include <cstdint>

namespace attnserve {

// Sixteen lanes as GCC vector types: the compiler emits one 512-bit (or two 256-bit) operation
// per step, which its auto-vectoriser would not do for a max reduction without fast-math.
typedef float Float32x16 __attribute__((vector_size(64)));
typedef int32_t Int32x16 __attribute__((vector_size(64)));
typedef uint32_t Uint32x16 __attribute__((vector_size(64)));
typedef uint16_t Uint16x16 __attribute__((vector_size(32)));

// Lanes [0, remaining) of a 16-lane AVX-512 step (all 16 for remaining >= 16).
__attribute__((target("avx512f"), always_inline)) inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_VECTOR_LANES_H_
