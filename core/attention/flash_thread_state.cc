#include "core/attention/flash_thread_state.h"

#include "core/kernels/amx_tiles.h"

namespace attnserve {

int64_t Scratch::ScoreStride(int64_t k_tile, bool amx) {
  return amx ? PadTo32(k_tile) + 32 : k_tile;
}

void Scratch::Reserve(int64_t q_tile, int64_t k_tile, int64_t hd, bool bf16, bool amx) {
  // The AMX path scores 32 rows at a time; the others the whole item.
  const int64_t score_size = PadTo32(amx ? 32 : q_tile) * ScoreStride(k_tile, amx);
  scores.Reserve(score_size);
  if (bf16) probs_bf16.Reserve(score_size);
  if (amx) q_rows.Reserve(PadTo32(q_tile) * PadTo32(hd));
  acc.Reserve(PadTo32(q_tile) * PadTo32(hd));
  row_max.Reserve(q_tile);
  row_sum.Reserve(q_tile);
  if (amx) lane_sums.Reserve(q_tile * 16);
  visible.Reserve(q_tile);
}

TileGemm& ThreadState::Gemm(ComputeType compute) {
  std::unique_ptr<TileGemm>& gemm = compute == ComputeType::kBfloat16 ? gemm_bf16 : gemm_f32;
  if (gemm == nullptr) gemm = std::make_unique<TileGemm>(compute);
  return *gemm;
}

ThreadState& CurrentThreadState() {
  thread_local ThreadState state;
  return state;
}

}  // namespace attnserve
