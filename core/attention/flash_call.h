// One FlashAttention call as its work items see it: the shared context, a work item, and how an
// item's rows are written. Internal to core/attention (flash_attention*.cc).
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_CALL_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_CALL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>

#include "core/attention/score_bias.h"
#include "core/attention/sdpa_options.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/softmax_kernels.h"

namespace attnserve {

// A row's running maximum (or shift) before its first key tile.
inline constexpr float kNoMaxYet = -std::numeric_limits<float>::infinity();

// Whether a call's work items stop: cancelled by the caller, or failed on some thread.
class StopFlag {
 public:
  // is_cancelled may be unset (never cancelled); it must outlive this object.
  explicit StopFlag(const std::function<bool()>& is_cancelled) : is_cancelled_(is_cancelled) {}

  // Polls is_cancelled — whichever thread starts a tile polls, one at a time (a poll in progress
  // makes the others skip theirs) — and returns whether the call stops.
  bool Poll() {
    if (is_cancelled_ != nullptr && !polling_.exchange(true)) {
      if (is_cancelled_()) stop_ = true;
      polling_ = false;
    }
    return stopped();
  }
  void Stop() { stop_ = true; }
  bool stopped() const { return stop_.load(std::memory_order_relaxed); }

 private:
  const std::function<bool()>& is_cancelled_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> polling_{false};
};

// What every work item of one call shares, read-only while they run (but for *stop).
struct FlashCall {
  const SdpaShape& shape;
  const SdpaOptions& options;
  const ScoreBias& bias;
  float scale;           // EffectiveScale
  bool bf16;             // bf16 products (oneDNN's or AMX)
  bool amx;              // the fused AMX path
  int64_t q_tile;        // query rows per work item
  int64_t k_tile;        // keys per score tile (on AMX a multiple of 32)
  int64_t q_tiles;       // work items per (batch element, head)
  int64_t score_stride;  // row stride of scores and P (Scratch::ScoreStride)
  int64_t acc_stride;    // row stride of the output accumulators (AMX: padded to 32)
  StopFlag* stop;
};

// A work item: query rows [i0, i0 + rows) of head h of batch element b.
struct WorkItem {
  int64_t b, h, i0, rows;
};

// Where the item's first row starts in q and out ([B, H, Sq, hd]).
inline int64_t QueryOffset(const SdpaShape& shape, const WorkItem& item) {
  return ((item.b * shape.num_heads + item.h) * shape.q_len + item.i0) * shape.head_dim;
}

// The item's K/V head among the B·Hkv of k and v (query head h uses kv head h / (H / Hkv)).
inline int64_t KvHead(const SdpaShape& shape, const WorkItem& item) {
  return item.b * shape.num_kv_heads + item.h / (shape.num_heads / shape.num_kv_heads);
}

// out[c] ← row[c]·factor for c < n, in the output tensor's type.
inline void WriteScaledRow(const float* row, int64_t n, float factor, float* out) {
  ScaleRowInto(row, n, factor, out);
}
inline void WriteScaledRow(const float* row, int64_t n, float factor, uint16_t* out) {
  ScaleRowIntoBfloat16(row, n, factor, out);
}

// out_row [hd] ← acc_row [hd] / sum, the final normalisation of an output row; zeros for a row
// that saw no key (sum 0).
template <typename T>
void WriteNormalisedRow(const float* acc_row, int64_t hd, float sum, T* out_row) {
  const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
  WriteScaledRow(acc_row, hd, inverse, out_row);
}

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_CALL_H_
