// bf16 tile products on Intel AMX for the tiled attention (core/attention/flash_attention_amx.cc).
//
// Why not oneDNN: with head_dim 64 the score product Q·Kᵀ does 64 multiply-adds per f32 output,
// and oneDNN 2.6's AMX matmul spends ~1 cycle writing each output (measured ~370 GFLOP/s on one
// core for 128×1024×64 against ~730 for large products), plus re-packing K for every query tile.
// Here K and V are packed once per call into the tile layout, and the products store their tiles
// straight into the caller's f32 buffers.
//
// Layouts (all bf16 as uint16_t bits; "pad32(x)" rounds x up to a multiple of 32):
//   Q rows (A operand):  row-major [rows, pad32(hd)], zero beyond hd.
//   packed K (B of Q·Kᵀ): tiles of 16 rows × 32 elements in the order (key block of 16, dim step
//       of 32); in the tile of keys 16i… and dims 32s…, row p, elements 2n and 2n+1 are
//       K[16i + n][32s + 2p] and K[16i + n][32s + 2p + 1]. Keys padded to pad32(keys), dims to
//       pad32(hd), with zeros. AmxPackedSize(keys, hd) elements.
//   packed V (B of P·V):  tiles in the order (dim block of 16, key step of 32); in the tile of
//       dims 16j… and keys 32s…, row p, elements 2n and 2n+1 are V[32s + 2p][16j + n] and
//       V[32s + 2p + 1][16j + n]. Same padding and size.
//   P (A operand):       row-major [rows, pad32(cols)], zero beyond the visible keys.
#ifndef ATTNSERVE_CORE_KERNELS_AMX_TILES_H_
#define ATTNSERVE_CORE_KERNELS_AMX_TILES_H_

#include <cstdint>

namespace attnserve {

// Whether this CPU has AMX-BF16 and Linux lets this process use tile data (asked once).
bool AmxBf16Available();

constexpr int64_t PadTo32(int64_t x) { return (x + 31) / 32 * 32; }

// Elements of a packed K or V for `keys` keys of `hd` dims.
constexpr int64_t AmxPackedSize(int64_t keys, int64_t hd) { return PadTo32(keys) * PadTo32(hd); }

// k, v: [keys, hd] row-major, f32 (rounded to bf16, nearest even) or bf16 → packed as above: the
// tiles of keys [key_begin, key_end) (key_begin a multiple of 32; key_end is clipped to
// pad32(keys)), so that threads can pack parts of one head. Packing every part writes every
// element of the AmxPackedSize(keys, hd) output. Need AVX512-BF16 (which AMX-BF16 CPUs have).
// T is float or uint16_t.
template <typename T>
void AmxPackKeys(const T* k, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end,
                 uint16_t* packed);
template <typename T>
void AmxPackValues(const T* v, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end,
                   uint16_t* packed);

// Loads this thread's tile configuration (eight 16×64-byte tiles); call before the products on
// each thread, and AmxRelease when done.
void AmxConfigure();
void AmxRelease();

// scores[r][c] = Σ_d q[r][d]·K[key0 + c][d] for r < pad32(rows), c < pad32(cols), unscaled.
//   q: [pad32(rows), pad32(hd)] row-major (rows past `rows` must be readable);
//   packed_k: the whole packed K of this head; key0 a multiple of 32;
//   scores: row stride score_stride floats (>= pad32(cols)).
void AmxScores(const uint16_t* q, int64_t rows, int64_t hd, const uint16_t* packed_k,
               int64_t key0, int64_t cols, float* scores, int64_t score_stride);

// acc[r][d] += Σ_c p[r][c]·V[key0 + c][d] for r < pad32(rows), d < pad32(hd).
//   p: [pad32(rows), p_stride] row-major with p_stride >= pad32(cols), zero in [cols, pad32(cols));
//   packed_v: the whole packed V of this head; key0 a multiple of 32;
//   acc: [pad32(rows), acc_stride] with acc_stride >= pad32(hd).
void AmxAccumulate(const uint16_t* p, int64_t p_stride, int64_t rows, const uint16_t* packed_v,
                   int64_t keys_total, int64_t key0, int64_t cols, int64_t hd, float* acc,
                   int64_t acc_stride);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_AMX_TILES_H_
