// RoPE's rotation of one head by a row of cos/sin values (core/encodings/rope.cc prepares the
// rows). Built without FMA contraction (core/CMakeLists.txt): every CPU and both layouts give the
// same bits. Internal to core/encodings.
#ifndef ATTNSERVE_CORE_ENCODINGS_ROPE_ROTATION_H_
#define ATTNSERVE_CORE_ENCODINGS_ROPE_ROTATION_H_

#include <cstdint>

namespace attnserve {

// One head's rotated dims, half-split: pair k is (lo[k], hi[k]) with hi = lo + r/2, rotated by
// cos_row[k] and sin_row[k] for k < half.
void RotateHalfSplit(float* __restrict lo, float* __restrict hi, const float* __restrict cos_row,
                     const float* __restrict sin_row, int64_t half);

// One head's rotated dims, interleaved: pair k is (head[2k], head[2k+1]).
void RotateInterleaved(float* __restrict head, const float* __restrict cos_row,
                       const float* __restrict sin_row, int64_t half);

// One half-split head x [head_dim] from bf16 bits to bf16 bits in one pass: widened, its first
// 2·half dims rotated as RotateHalfSplit rotates, every dim rounded as ScaleRowIntoBfloat16Avx512
// rounds — the same bits as those three steps in turn, without the f32 head between them. Needs
// CpuHasAvx512Bf16().
void RotateHalfSplitBfloat16Avx512(const uint16_t* x, int64_t head_dim, int64_t half,
                                   const float* cos_row, const float* sin_row, uint16_t* out);

// out [n] ← the head x [n] as f32: copied (nothing to do when out is x), or bf16 bits widened
// exactly.
void CopyHead(const float* x, int64_t n, float* out);
void CopyHead(const uint16_t* x, int64_t n, float* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_ROPE_ROTATION_H_
