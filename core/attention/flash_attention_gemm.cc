#include "core/attention/flash_attention_gemm.h"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>

#include "core/kernels/softmax_kernels.h"

namespace attnserve {
namespace {

// P for one bf16 score row of a tile: out[c] = e^(scale·row[c] − shift), returning {shift, Σ}.
// The shift is the row's running maximum from earlier tiles (on its first tile, the maximum of
// its last 16 visible scores: the nearest keys, which ALiBi favours and causal rows always
// see), and the same pass finds this tile's maximum; only when that exceeds the
// shift by more than kShiftHeadroom is the row done again with its own maximum. Values up to
// e^16 keep P, the sums and P·V far from f32 overflow, and a separate pass for the maximum — an
// eighth of the kernel's time on AMX — is saved.
constexpr float kShiftHeadroom = 16.0f;

std::pair<float, float> Bfloat16Probabilities(const float* row, int64_t n, float scale,
                                              float running_max, uint16_t* out) {
  const int64_t last = std::min<int64_t>(n, 16);
  float shift = running_max != kNoMaxYet ? running_max : RowMax(row + n - last, last) * scale;
  float tile_max;
  float sum = ExpShiftedSumToBfloat16(row, n, scale, shift, out, &tile_max);
  if (tile_max * scale > shift + kShiftHeadroom) {
    shift = tile_max * scale;
    sum = ExpShiftedSumToBfloat16(row, n, scale, shift, out, &tile_max);
  }
  return {shift, sum};
}

// The running state of one output row: its maximum (or bf16 shift), sum and accumulator.
struct RowState {
  float* max;
  float* sum;
  float* acc;  // [hd]
};

// Score row r of the item (scaled) for keys [j0, j0 + cols) through the online softmax: bias
// added, masked keys given probability 0 (in p_bf16 [cols], the bf16 P row, or in the row
// itself for f32), exponentials relative to a shift at or above the maximum so far; what earlier
// tiles accumulated is rescaled when the shift rises.
void SoftmaxRow(const FlashCall& call, const WorkItem& item, int64_t r, int64_t j0, int64_t cols,
                float* row, uint16_t* p_bf16, const RowState& state) {
  const int64_t i = item.i0 + r;
  const int64_t visible =
      std::clamp<int64_t>(VisibleKeyCount(call.shape, call.options, item.b, i) - j0, 0, cols);
  if (call.bias.active()) call.bias.AddRow(item.b, item.h, i, j0, visible, 1.0f, row);
  if (p_bf16 != nullptr) {
    std::fill(p_bf16 + visible, p_bf16 + cols, uint16_t{0});
  } else {
    std::fill(row + visible, row + cols, 0.0f);
  }
  if (visible == 0) return;
  float new_max, tile_sum;
  if (p_bf16 != nullptr) {
    std::tie(new_max, tile_sum) = Bfloat16Probabilities(row, visible, 1.0f, *state.max, p_bf16);
  } else {
    new_max = std::max(*state.max, RowMax(row, visible));
    tile_sum = ExpShiftedSum(row, visible, new_max);
  }
  const float correction = ExpNonPositive(*state.max - new_max);
  *state.sum = *state.sum * correction + tile_sum;
  if (correction != 1.0f) ScaleRow(state.acc, call.shape.head_dim, correction);
  *state.max = new_max;
}

}  // namespace

template <typename T>
void AttendGemm(const FlashCall& call, const FlashOperands<T>& operands, const WorkItem& item,
                Scratch& scratch, TileGemm& gemm, T* out) {
  const int64_t hd = call.shape.head_dim, rows = item.rows;
  const int64_t q_offset = QueryOffset(call.shape, item);
  const int64_t kv_offset = KvHead(call.shape, item) * KvHeadRows(call.shape) * hd;
  // The last row sees the most keys (visibility never shrinks down the rows).
  const int64_t keys = VisibleKeyCount(call.shape, call.options, item.b, item.i0 + rows - 1);
  float* acc = scratch.acc.data();
  float* row_max = scratch.row_max.data();
  float* row_sum = scratch.row_sum.data();
  std::fill(acc, acc + rows * call.acc_stride, 0.0f);
  std::fill(row_max, row_max + rows, kNoMaxYet);
  std::fill(row_sum, row_sum + rows, 0.0f);
  float* scores = scratch.scores.data();
  uint16_t* probs_bf16 = call.bf16 ? scratch.probs_bf16.data() : nullptr;
  for (int64_t j0 = 0; j0 < keys; j0 += call.k_tile) {
    if (call.stop->Poll()) return;
    const int64_t cols = std::min(call.k_tile, keys - j0);
    // scores [rows, cols] = Q_tile · K_tileᵀ · scale
    gemm.Run(rows, cols, hd, call.scale, operands.At(operands.q, q_offset),
             operands.At(operands.k, kv_offset + j0 * hd), true, false, scores);
    for (int64_t r = 0; r < rows; ++r) {
      SoftmaxRow(call, item, r, j0, cols, scores + r * cols,
                 probs_bf16 != nullptr ? probs_bf16 + r * cols : nullptr,
                 RowState{row_max + r, row_sum + r, acc + r * call.acc_stride});
    }
    // acc [rows, hd] += P [rows, cols] · V_tile [cols, hd]
    const void* probs = probs_bf16 != nullptr ? static_cast<const void*>(probs_bf16) : scores;
    gemm.Run(rows, hd, cols, 1.0f, probs, operands.At(operands.v, kv_offset + j0 * hd), false,
             true, acc);
  }
  T* out_rows = out + q_offset;
  for (int64_t r = 0; r < rows; ++r) {
    WriteNormalisedRow(acc + r * call.acc_stride, hd, row_sum[r], out_rows + r * hd);
  }
}

template void AttendGemm<float>(const FlashCall&, const FlashOperands<float>&, const WorkItem&,
                                Scratch&, TileGemm&, float*);
template void AttendGemm<uint16_t>(const FlashCall&, const FlashOperands<uint16_t>&,
                                   const WorkItem&, Scratch&, TileGemm&, uint16_t*);

}  // namespace attnserve
