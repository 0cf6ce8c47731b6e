// The range of token positions every encoding accepts.
#ifndef ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_
#define ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// The largest position (2^31 − 1, as int32 position ids allow). Bounding positions keeps every
// position sum, difference and table size in range.
inline constexpr int64_t kMaxPosition = (int64_t{1} << 31) - 1;

// INVALID_ARGUMENT "<field>[<index>]=<value> must be in [0, 2147483647]" for the first position
// outside [0, kMaxPosition] (field names the caller's input, e.g. "position_ids").
absl::Status CheckPositions(const int64_t* positions, int64_t count, absl::string_view field);

// Bottom-right aligned positions, the DESIGN's rule when kv_len ≠ q_len (as in KV-cache decoding
// and FlashAttention ≥ 2.1): key j at first_key + j, query i at first_key + kv_len − q_len + i,
// so the last query and the last key share a position. Fills q_positions [batch·q_len] and
// k_positions [batch·kv_len], every batch element alike. The caller keeps the first query's
// position, first_key + kv_len − q_len, >= 0 and the last key's <= kMaxPosition.
void BottomRightPositions(int64_t first_key, int64_t batch, int64_t q_len, int64_t kv_len,
                          std::vector<int64_t>* q_positions, std::vector<int64_t>* k_positions);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_
