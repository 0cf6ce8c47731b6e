// The range of token positions every encoding accepts.
#ifndef ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_
#define ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// The largest position (2^31 − 1, as int32 position ids allow). Bounding positions keeps every
// position sum, difference and table size in range.
inline constexpr int64_t kMaxPosition = (int64_t{1} << 31) - 1;

// INVALID_ARGUMENT "<field>[<index>]=<value> must be in [0, 2147483647]" for the first position
// outside [0, kMaxPosition] (field names the caller's input, e.g. "position_ids").
absl::Status CheckPositions(const int64_t* positions, int64_t count, absl::string_view field);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_POSITIONS_H_
