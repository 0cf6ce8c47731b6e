#include "core/attention/flash_attention_amx.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/kernels/alibi_term.h"
#include "core/kernels/amx_tiles.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/softmax_kernels.h"

namespace attnserve {
namespace {

// Rows of a tensor (f32, or bf16 bits) as bf16 bits.
void CopyAsBfloat16(const float* values, int64_t n, uint16_t* out) {
  ScaleRowIntoBfloat16(values, n, 1.0f, out);
}
void CopyAsBfloat16(const uint16_t* values, int64_t n, uint16_t* out) {
  std::memcpy(out, values, n * sizeof(uint16_t));
}

// One work item's share of its thread's Scratch, and its K/V head.
struct AmxItem {
  const WorkItem& item;
  const uint16_t* q_rows;    // [pad32(rows), pad32(hd)] the item's Q rows in bf16
  const uint16_t* k_packed;  // the item's K head, packed (core/kernels/amx_tiles.h)
  const uint16_t* v_packed;  // its V head, packed
  float* scores;             // [32, score_stride] one block's scores
  uint16_t* probs;           // [32, score_stride] one block's P
  float* acc;                // [pad32(rows), acc_stride] unnormalised output rows
  float* shift;              // [rows] each row's exponent shift; kNoMaxYet before its first tile
  float* lane_sums;          // [rows, 16] each row's sum as 16 partial sums
  int64_t* visible;          // [rows] keys each row sees
};

// A score row of one key tile whose scale, and ALiBi's bias, may still be pending: the
// exponentials apply them on the fly (no pass over the row of its own) unless SettleAlibi adds
// them first.
struct PendingRow {
  float* values;  // [cols] the row's visible scores
  int64_t cols;
  float scale;  // still to multiply the values by
  bool has_alibi = false;
  AlibiTerm alibi;  // still to add, when has_alibi

  const AlibiTerm* pending_alibi() const { return has_alibi ? &alibi : nullptr; }

  // values ← scale·values + ALiBi's bias, when the bias is still pending.
  void SettleAlibi() {
    if (!has_alibi) return;
    AddAlibiRow(values, cols, scale, alibi);
    scale = 1.0f;
    has_alibi = false;
  }
};

// The item's Q rows q [rows, hd] into q_rows [pad32(rows), pad32(hd)] as bf16, zero in the
// padding the 32×32 blocks read.
template <typename T>
void LoadQueryRows(const T* q, int64_t rows, int64_t hd, uint16_t* q_rows) {
  const int64_t hd_pad = PadTo32(hd);
  if (hd == hd_pad) {  // rows already contiguous: one copy
    CopyAsBfloat16(q, rows * hd, q_rows);
    std::fill(q_rows + rows * hd, q_rows + PadTo32(rows) * hd, uint16_t{0});
    return;
  }
  std::fill(q_rows, q_rows + PadTo32(rows) * hd_pad, uint16_t{0});
  for (int64_t r = 0; r < rows; ++r) CopyAsBfloat16(q + r * hd, hd, q_rows + r * hd_pad);
}

// Zero accumulators and sums, no shifts yet, and the keys each row sees.
void StartRows(const FlashCall& call, const AmxItem& it) {
  const int64_t rows = it.item.rows;
  std::fill(it.acc, it.acc + PadTo32(rows) * call.acc_stride, 0.0f);
  std::fill(it.shift, it.shift + rows, kNoMaxYet);
  std::fill(it.lane_sums, it.lane_sums + rows * 16, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    it.visible[r] = VisibleKeyCount(call.shape, call.options, it.item.b, it.item.i0 + r);
  }
}

// Row `row_index` of the item's scores for keys [j0, j0 + cols) as the exponentials take it:
// ALiBi's bias left to them; T5's added here, and so is a scale <= 0 (a shift taken as
// max(row)·scale is the scaled maximum only for a positive one).
PendingRow StartRow(const FlashCall& call, const WorkItem& item, int64_t row_index, int64_t j0,
                    float* values, int64_t cols) {
  PendingRow row{values, cols, call.scale, false, {}};
  const int64_t i = item.i0 + row_index;
  if (call.bias.alibi()) {
    row.alibi = call.bias.AlibiRow(item.b, item.h, i, j0);
    row.has_alibi = true;
  } else if (call.bias.active()) {
    call.bias.AddRow(item.b, item.h, i, j0, cols, row.scale, values);
    row.scale = 1.0f;
  } else if (row.scale <= 0.0f) {
    ScaleRow(values, cols, row.scale);
    row.scale = 1.0f;
  }
  return row;
}

// The shift of a row's first tile (usually the anchor): with ALiBi the maximum of its exponents,
// bias added here; otherwise the maximum of its last 16 scores.
float FirstShift(PendingRow& row) {
  if (row.has_alibi) {
    row.SettleAlibi();
    return RowMax(row.values, row.cols);
  }
  const int64_t nearest = std::min<int64_t>(row.cols, 16);
  return RowMax(row.values + row.cols - nearest, nearest) * row.scale;
}

// p_row ← the row's exponentials relative to *shift, their sum added to lane_sums [16]. Scores
// far above the shift: shift by this tile's maximum instead, and rescale what the row has summed
// and accumulated so far (acc_row [hd]); the second call then passes (values <= 1).
void ExponentiateRow(PendingRow& row, float* shift, uint16_t* p_row, float* lane_sums,
                     float* acc_row, int64_t hd) {
  if (ExpShiftedToBfloat16Lanes(row.values, row.cols, row.scale, *shift, p_row, lane_sums,
                                row.pending_alibi())) {
    return;
  }
  row.SettleAlibi();
  const float new_shift = RowMax(row.values, row.cols) * row.scale;
  const float correction = ExpNonPositive(*shift - new_shift);
  ScaleRow(lane_sums, 16, correction);
  ScaleRow(acc_row, hd, correction);
  *shift = new_shift;
  ExpShiftedToBfloat16Lanes(row.values, row.cols, row.scale, new_shift, p_row, lane_sums,
                            row.pending_alibi());
}

// The key tile from j0 for the item's rows [r0, r0 + 32): scores, each row's exponentials, and
// acc += P·V_tile.
void AttendBlock(const FlashCall& call, const AmxItem& it, int64_t r0, int64_t j0) {
  const int64_t hd = call.shape.head_dim, stride = call.score_stride;
  const int64_t block_rows = std::min<int64_t>(32, it.item.rows - r0);
  const int64_t block_keys = it.visible[r0 + block_rows - 1];
  if (block_keys <= j0) return;
  const int64_t cols = std::min(call.k_tile, block_keys - j0);
  // scores [32, cols] = Q_block · K_tileᵀ, unscaled
  AmxScores(it.q_rows + r0 * PadTo32(hd), block_rows, hd, it.k_packed, j0, cols, it.scores,
            stride);
  for (int64_t r = 0; r < block_rows; ++r) {
    const int64_t row_index = r0 + r;
    uint16_t* p_row = it.probs + r * stride;
    const int64_t row_cols = std::clamp<int64_t>(it.visible[row_index] - j0, 0, cols);
    // Masked keys and the padding of the last 32 get probability 0.
    std::fill(p_row + row_cols, p_row + PadTo32(cols), uint16_t{0});
    if (row_cols == 0) continue;
    PendingRow row = StartRow(call, it.item, row_index, j0, it.scores + r * stride, row_cols);
    float* shift = it.shift + row_index;
    if (*shift == kNoMaxYet) *shift = FirstShift(row);
    ExponentiateRow(row, shift, p_row, it.lane_sums + row_index * 16,
                    it.acc + row_index * call.acc_stride, hd);
  }
  // acc [32, hd] += P [32, cols] · V_tile [cols, hd]
  AmxAccumulate(it.probs, stride, block_rows, it.v_packed, call.shape.kv_len, j0, cols, hd,
                it.acc + r0 * call.acc_stride, call.acc_stride);
}

// The key tiles of the item's `keys`, from the anchor back to the first, then those after it.
// The anchor holds the key nearest the item's last query: the largest ALiBi bias (and the last
// visible key for causal rows and without ALiBi), so each row's first shift usually stays its
// shift. Returns false when the call stops.
bool AttendKeyTiles(const FlashCall& call, const AmxItem& it, int64_t keys) {
  const int64_t k_tile = call.k_tile;
  const int64_t tiles = (keys + k_tile - 1) / k_tile;
  const int64_t last_query = it.item.i0 + it.item.rows - 1;
  const int64_t anchor = call.bias.alibi() && keys > 0
                             ? call.bias.NearestKey(it.item.b, last_query, keys) / k_tile
                             : tiles - 1;
  // Cancellation is polled about every 1024 keys, as on the other paths.
  const int64_t poll_every = std::max<int64_t>(1, 1024 / k_tile);
  for (int64_t step = 0; step < tiles; ++step) {
    const int64_t j0 = (step <= anchor ? anchor - step : step) * k_tile;
    if (step % poll_every == 0 && call.stop->Poll()) return false;
    for (int64_t r0 = 0; r0 < it.item.rows; r0 += 32) AttendBlock(call, it, r0, j0);
  }
  return true;
}

// out_rows [rows, hd] ← each accumulated row over its sum (zeros for a row without keys).
template <typename T>
void WriteRows(const FlashCall& call, const AmxItem& it, T* out_rows) {
  const int64_t hd = call.shape.head_dim;
  for (int64_t r = 0; r < it.item.rows; ++r) {
    float sum = 0.0f;
    for (int l = 0; l < 16; ++l) sum += it.lane_sums[r * 16 + l];
    WriteNormalisedRow(it.acc + r * call.acc_stride, hd, sum, out_rows + r * hd);
  }
}

}  // namespace

// Fused per key tile: a 32×128 f32 block of scores is 16 KiB and stays in L1, where a whole
// 64×1024 block, written by the tile stores and read back by the exponentials, missed L1 on
// every line.
template <typename T>
void AttendAmx(const FlashCall& call, const FlashOperands<T>& operands, const WorkItem& item,
               Scratch& scratch, T* out) {
  const SdpaShape& shape = call.shape;
  const int64_t q_offset = QueryOffset(shape, item);
  const int64_t packed_offset = KvHead(shape, item) * operands.packed_head_size;
  const AmxItem it{item,
                   scratch.q_rows.data(),
                   operands.k_packed.data() + packed_offset,
                   operands.v_packed.data() + packed_offset,
                   scratch.scores.data(),
                   scratch.probs_bf16.data(),
                   scratch.acc.data(),
                   scratch.row_max.data(),
                   scratch.lane_sums.data(),
                   scratch.visible.data()};
  LoadQueryRows(static_cast<const T*>(operands.q) + q_offset, item.rows, shape.head_dim,
                scratch.q_rows.data());
  StartRows(call, it);
  // The last row sees the most keys (visibility never shrinks down the rows).
  if (!AttendKeyTiles(call, it, it.visible[item.rows - 1])) return;
  WriteRows(call, it, out + q_offset);
}

template void AttendAmx<float>(const FlashCall&, const FlashOperands<float>&, const WorkItem&,
                               Scratch&, float*);
template void AttendAmx<uint16_t>(const FlashCall&, const FlashOperands<uint16_t>&,
                                  const WorkItem&, Scratch&, uint16_t*);

}  // namespace attnserve
