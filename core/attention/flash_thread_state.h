// What a compute thread of the tiled attention keeps between work items and calls. Internal to
// core/attention.
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_THREAD_STATE_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_THREAD_STATE_H_

#include <cstdint>
#include <memory>

#include "core/kernels/cache_aligned_array.h"
#include "core/kernels/compute_type.h"
#include "core/kernels/tile_gemm.h"

namespace attnserve {

// One thread's buffers for a work item, grown to the largest tiles it has seen. Sizes are rounded
// up to the AMX layout's multiples of 32 (core/kernels/amx_tiles.h) plus a row padding, which also
// covers the other paths. Contents are not kept between items: each writes what it reads.
struct Scratch {
  // Row stride of scores and P for k_tile keys: on AMX 32 beyond the blocks, so that no two
  // rows of a tile are a multiple of 4 KiB apart (the 16 row loads and stores would all fall in
  // the same L1 sets) and P rows stay on 64-byte boundaries.
  static int64_t ScoreStride(int64_t k_tile, bool amx);

  void Reserve(int64_t q_tile, int64_t k_tile, int64_t hd, bool bf16, bool amx);

  CacheAlignedArray<float> scores;         // [q_tile, k_tile] (AMX: [32, k_tile])
  CacheAlignedArray<uint16_t> probs_bf16;  // the P operand for bf16 compute, as scores
  CacheAlignedArray<uint16_t> q_rows;      // [q_tile, hd] for AMX: this item's Q rows in bf16
  CacheAlignedArray<float> acc;            // [q_tile, hd] unnormalised output rows
  CacheAlignedArray<float> row_max;        // [q_tile] running maxima (bf16: shifts)
  CacheAlignedArray<float> row_sum;        // [q_tile] (AMX: lane_sums instead)
  CacheAlignedArray<float> lane_sums;      // [q_tile, 16] AMX: row sums in 16 partial sums
  CacheAlignedArray<int64_t> visible;      // [q_tile] keys each row sees
};

// What a compute thread keeps between calls: its scratch buffers and tile products (whose
// primitives stay in the thread's matmul cache, core/kernels/onednn_primitives.h). Fresh buffers
// cost page faults and fresh primitives a primitive-descriptor creation each, per thread and
// call: together ~0.2 ms, a quarter of a 512-token call on 16 threads.
struct ThreadState {
  Scratch scratch;
  std::unique_ptr<TileGemm> gemm_f32, gemm_bf16;

  // This thread's products for `compute`, made on first use.
  TileGemm& Gemm(ComputeType compute);
};

// The calling thread's state.
ThreadState& CurrentThreadState();

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_THREAD_STATE_H_
