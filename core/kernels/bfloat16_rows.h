// Rows and whole tensors converted between f32 and bf16 (core/kernels/bfloat16.h holds the
// scalar conversions they round as). Each row kernel has a portable version (compiled for
// AVX-512, AVX2 and baseline x86-64, chosen at load time) and, where the CPU has AVX512-BF16, a
// hand-vectorised one; the plain name picks the fastest the CPU runs.
#ifndef ATTNSERVE_CORE_KERNELS_BFLOAT16_ROWS_H_
#define ATTNSERVE_CORE_KERNELS_BFLOAT16_ROWS_H_

#include <cstdint>

namespace attnserve {

// out[c] = bf16(row[c] · factor) for c < n, rounded to nearest even, NaN kept a quiet NaN, as
// FloatToBfloat16 — except that the AVX-512 version (vcvtneps2bf16) flushes subnormal inputs
// and results to zero. factor 1 converts a row (the product is then exact).
void ScaleRowIntoBfloat16(const float* row, int64_t n, float factor, uint16_t* out);
void ScaleRowIntoBfloat16Portable(const float* row, int64_t n, float factor, uint16_t* out);
void ScaleRowIntoBfloat16Avx512(const float* row, int64_t n, float factor,
                                uint16_t* out);  // needs CpuHasAvx512Bf16()

// out[i] = bf16(values[i]) for i < count as ScaleRowIntoBfloat16 (factor 1), in chunks over
// OpenMP threads: whole tensors.
void ConvertToBfloat16Parallel(const float* values, int64_t count, uint16_t* out);

// out[i] = RoundToBfloat16(values[i]) (f32 holding the bf16 value, subnormals kept), and
// out[i] = the f32 value of bf16 bits[i], for i < count, over OpenMP threads: whole tensors.
void RoundToBfloat16Parallel(const float* values, int64_t count, float* out);
void WidenBfloat16Parallel(const uint16_t* bits, int64_t count, float* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_BFLOAT16_ROWS_H_
