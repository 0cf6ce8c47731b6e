// The arithmetic a call's matrix products use.
#ifndef ATTNSERVE_CORE_KERNELS_COMPUTE_TYPE_H_
#define ATTNSERVE_CORE_KERNELS_COMPUTE_TYPE_H_

namespace attnserve {

// Arithmetic of matrix products: f32 throughout, or bf16 operands (AVX512-BF16 / AMX where the
// CPU has them) with f32 accumulation. Softmax, biases and outputs stay f32 either way.
enum class ComputeType { kFloat32, kBfloat16 };

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_COMPUTE_TYPE_H_
