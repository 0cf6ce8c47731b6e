#include "core/kernels/amx_tiles.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/kernels/bfloat16.h"

namespace attnserve {
namespace {

constexpr int kArchRequestXcompPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM (asm/prctl.h)
constexpr int kXfeatureTileData = 18;                // XFEATURE_XTILEDATA
constexpr int64_t kTileElements = 16 * 32;            // one 16-row × 64-byte bf16 tile
constexpr int kTileBytesPerRow = 64;

// GCC 12's AVX-512 headers build "undefined" vectors as self-initialised variables (GCC bug
// 105593), which -Wuninitialized reports wherever those intrinsics are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The 64-byte operand of ldtilecfg (palette 1): bytes per row and rows of each tile register.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

}  // namespace

bool AmxBf16Available() {
  static const bool available = [] {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
    // Linux keeps tile data off until a process asks (kernel 5.16+); refusal means no AMX here.
    return amx_bf16 && amx_tile &&
           syscall(SYS_arch_prctl, kArchRequestXcompPermission, kXfeatureTileData) == 0;
  }();
  return available;
}

namespace {

// rows[n] ← dword column n of the 16×16 dword matrix in rows (an in-register transpose: 32-bit,
// 64-bit, then two 128-bit interleaving stages).
__attribute__((target("avx512f"))) void TransposeDwords16x16(__m512i rows[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
  }
  // b[4g + j], 128-bit lane L: rows 4g…4g+3 of column 4L + j.
  for (int g = 0; g < 16; g += 4) {
    b[g] = _mm512_unpacklo_epi64(a[g], a[g + 2]);
    b[g + 1] = _mm512_unpackhi_epi64(a[g], a[g + 2]);
    b[g + 2] = _mm512_unpacklo_epi64(a[g + 1], a[g + 3]);
    b[g + 3] = _mm512_unpackhi_epi64(a[g + 1], a[g + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i even_top = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x88);  // lanes 0, 2
    const __m512i odd_top = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xdd);   // lanes 1, 3
    const __m512i even_bottom = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x88);
    const __m512i odd_bottom = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xdd);
    rows[j] = _mm512_shuffle_i32x4(even_top, even_bottom, 0x88);
    rows[8 + j] = _mm512_shuffle_i32x4(even_top, even_bottom, 0xdd);
    rows[4 + j] = _mm512_shuffle_i32x4(odd_top, odd_bottom, 0x88);
    rows[12 + j] = _mm512_shuffle_i32x4(odd_top, odd_bottom, 0xdd);
  }
}

// Elements [offset, offset + 16) of an f32 row of `size`, zero past the end.
__attribute__((target("avx512f"))) __m512 LoadPadded(const float* row, int64_t offset,
                                                     int64_t size) {
  const int64_t valid = std::clamp<int64_t>(size - offset, 0, 16);
  const __mmask16 lanes = static_cast<__mmask16>((1u << valid) - 1u);
  return _mm512_maskz_loadu_ps(lanes, row + offset);
}

// Elements [offset, offset + 32) of a row of `size` as bf16 (f32 rounded to nearest even),
// zero past the end.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) __m512i Bfloat16x32(
    const float* row, int64_t offset, int64_t size) {
  return reinterpret_cast<__m512i>(
      _mm512_cvtne2ps_pbh(LoadPadded(row, offset + 16, size), LoadPadded(row, offset, size)));
}
__attribute__((target("avx512f,avx512bw"))) __m512i Bfloat16x32(const uint16_t* row,
                                                               int64_t offset, int64_t size) {
  const int64_t valid = std::clamp<int64_t>(size - offset, 0, 32);
  const __mmask32 lanes = valid == 32 ? ~__mmask32{0} : (__mmask32{1} << valid) - 1u;
  return _mm512_maskz_loadu_epi16(lanes, row + offset);
}

// Elements [offset, offset + 16) of `first` (of `first_size`) in the low half and of `second`
// in the high half, as bf16, zero past each row's size.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) __m512i Bfloat16x16Pair(
    const float* first, int64_t first_size, const float* second, int64_t second_size,
    int64_t offset) {
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(LoadPadded(second, offset, second_size),
                                                       LoadPadded(first, offset, first_size)));
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) __m256i LoadPadded(const uint16_t* row,
                                                                       int64_t offset,
                                                                       int64_t size) {
  const int64_t valid = std::clamp<int64_t>(size - offset, 0, 16);
  return _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << valid) - 1u), row + offset);
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) __m512i Bfloat16x16Pair(
    const uint16_t* first, int64_t first_size, const uint16_t* second, int64_t second_size,
    int64_t offset) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(LoadPadded(first, offset, first_size)),
                            LoadPadded(second, offset, second_size), 1);
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void PackKeys(
    const T* k, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end, uint16_t* packed) {
  const int64_t hd_steps = PadTo32(hd) / 32;
  const T zeros[1] = {};
  for (int64_t key0 = key_begin; key0 < std::min(key_end, PadTo32(keys)); key0 += 16) {
    for (int64_t s = 0; s < hd_steps; ++s) {
      // Row n: key key0 + n's dims [32s, 32s + 32) as 16 bf16 pairs; transposed, row p holds
      // pair p of the 16 keys — the tile.
      __m512i rows[16];
      for (int n = 0; n < 16; ++n) {
        const bool real = key0 + n < keys;
        rows[n] = Bfloat16x32(real ? k + (key0 + n) * hd : zeros, 32 * s, real ? hd : 0);
      }
      TransposeDwords16x16(rows);
      uint16_t* tile = packed + ((key0 / 16) * hd_steps + s) * kTileElements;
      for (int p = 0; p < 16; ++p) _mm512_storeu_si512(tile + p * 32, rows[p]);
    }
  }
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void PackValues(
    const T* v, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end, uint16_t* packed) {
  const int64_t key_steps = PadTo32(keys) / 32;
  // Interleaves the 16 bf16 of the low half with the 16 of the high half.
  alignas(64) static constexpr uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  const T zeros[1] = {};
  for (int64_t d0 = 0; d0 < PadTo32(hd); d0 += 16) {
    for (int64_t key = key_begin; key < std::min(key_end, PadTo32(keys)); key += 2) {
      // Tile (d0 / 16, key / 32), row (key % 32) / 2: dims d0…d0+15 of keys key and key + 1
      // (a key past the end reads as zeros).
      const bool even = key < keys, odd = key + 1 < keys;
      const __m512i both = Bfloat16x16Pair(even ? v + key * hd : zeros, even ? hd : 0,
                                           odd ? v + (key + 1) * hd : zeros, odd ? hd : 0, d0);
      uint16_t* row = packed + ((d0 / 16) * key_steps + key / 32) * kTileElements +
                      ((key % 32) / 2) * 32;
      _mm512_storeu_si512(row, _mm512_permutexvar_epi16(interleave, both));
    }
  }
}

}  // namespace

// Forwarders without the target attribute the header's declarations lack (with it, GCC would
// take the definitions for other versions of the functions).
template <typename T>
void AmxPackKeys(const T* k, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end,
                 uint16_t* packed) {
  PackKeys(k, keys, hd, key_begin, key_end, packed);
}
template <typename T>
void AmxPackValues(const T* v, int64_t keys, int64_t hd, int64_t key_begin, int64_t key_end,
                   uint16_t* packed) {
  PackValues(v, keys, hd, key_begin, key_end, packed);
}
template void AmxPackKeys(const float*, int64_t, int64_t, int64_t, int64_t, uint16_t*);
template void AmxPackKeys(const uint16_t*, int64_t, int64_t, int64_t, int64_t, uint16_t*);
template void AmxPackValues(const float*, int64_t, int64_t, int64_t, int64_t, uint16_t*);
template void AmxPackValues(const uint16_t*, int64_t, int64_t, int64_t, int64_t, uint16_t*);

__attribute__((target("amx-tile"))) void AmxConfigure() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = kTileBytesPerRow;
    config.rows[t] = 16;
  }
  // GCC 12's _tile_loadconfig tells the compiler it reads only the first 8 bytes, so without
  // this barrier the stores above are dropped as dead and ldtilecfg faults on a zero config.
  asm volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

__attribute__((target("amx-tile"))) void AmxRelease() { _tile_release(); }

// Keys per pass over the row blocks: a chunk's K or V tiles (256 keys × 64 dims × 2 bytes =
// 32 KiB) stay in L1 while every row block uses them.
constexpr int64_t kKeyChunk = 256;

// Tiles: 0–3 accumulate a 32×32 f32 block, 4–5 hold two 16-row A tiles, 6–7 two B tiles.
__attribute__((target("amx-tile,amx-bf16"))) void AmxScores(
    const uint16_t* q, int64_t rows, int64_t hd, const uint16_t* packed_k, int64_t key0,
    int64_t cols, float* scores, int64_t score_stride) {
  const int64_t hd_pad = PadTo32(hd), hd_steps = hd_pad / 32;
  const int64_t q_stride_bytes = hd_pad * sizeof(uint16_t);
  const int64_t score_stride_bytes = score_stride * sizeof(float);
  for (int64_t chunk = 0; chunk < cols; chunk += kKeyChunk) {
    const int64_t chunk_end = std::min(cols, chunk + kKeyChunk);
    for (int64_t r = 0; r < rows; r += 32) {
      const uint16_t* q_top = q + r * hd_pad;
      const uint16_t* q_bottom = q_top + 16 * hd_pad;
      for (int64_t c = chunk; c < chunk_end; c += 32) {
        const uint16_t* k_left = packed_k + ((key0 + c) / 16) * hd_steps * kTileElements;
        const uint16_t* k_right = k_left + hd_steps * kTileElements;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t s = 0; s < hd_steps; ++s) {
          _tile_loadd(4, q_top + s * 32, q_stride_bytes);
          _tile_loadd(5, q_bottom + s * 32, q_stride_bytes);
          _tile_loadd(6, k_left + s * kTileElements, kTileBytesPerRow);
          _tile_loadd(7, k_right + s * kTileElements, kTileBytesPerRow);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        float* out = scores + r * score_stride + c;
        _tile_stored(0, out, score_stride_bytes);
        _tile_stored(1, out + 16, score_stride_bytes);
        _tile_stored(2, out + 16 * score_stride, score_stride_bytes);
        _tile_stored(3, out + 16 * score_stride + 16, score_stride_bytes);
      }
    }
  }
}

__attribute__((target("amx-tile,amx-bf16"))) void AmxAccumulate(
    const uint16_t* p, int64_t p_stride, int64_t rows, const uint16_t* packed_v,
    int64_t keys_total, int64_t key0, int64_t cols, int64_t hd, float* acc, int64_t acc_stride) {
  const int64_t key_steps_total = PadTo32(keys_total) / 32;
  const int64_t p_stride_bytes = p_stride * sizeof(uint16_t);
  const int64_t acc_stride_bytes = acc_stride * sizeof(float);
  const int64_t hd_pad = PadTo32(hd);
  for (int64_t chunk = 0; chunk < cols; chunk += kKeyChunk) {
    const int64_t chunk_end = std::min(cols, chunk + kKeyChunk);
    for (int64_t r = 0; r < rows; r += 32) {
      const uint16_t* p_top = p + r * p_stride;
      const uint16_t* p_bottom = p_top + 16 * p_stride;
      for (int64_t d = 0; d < hd_pad; d += 32) {
        float* out = acc + r * acc_stride + d;
        _tile_loadd(0, out, acc_stride_bytes);
        _tile_loadd(1, out + 16, acc_stride_bytes);
        _tile_loadd(2, out + 16 * acc_stride, acc_stride_bytes);
        _tile_loadd(3, out + 16 * acc_stride + 16, acc_stride_bytes);
        const uint16_t* v_left =
            packed_v + ((d / 16) * key_steps_total + key0 / 32) * kTileElements;
        const uint16_t* v_right = v_left + key_steps_total * kTileElements;
        for (int64_t c = chunk; c < chunk_end; c += 32) {
          _tile_loadd(4, p_top + c, p_stride_bytes);
          _tile_loadd(5, p_bottom + c, p_stride_bytes);
          _tile_loadd(6, v_left + (c / 32) * kTileElements, kTileBytesPerRow);
          _tile_loadd(7, v_right + (c / 32) * kTileElements, kTileBytesPerRow);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, out, acc_stride_bytes);
        _tile_stored(1, out + 16, acc_stride_bytes);
        _tile_stored(2, out + 16 * acc_stride, acc_stride_bytes);
        _tile_stored(3, out + 16 * acc_stride + 16, acc_stride_bytes);
      }
    }
  }
}

}  // namespace attnserve
