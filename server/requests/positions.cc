#include "server/requests/positions.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/encodings/positions.h"

namespace attnserve {

absl::StatusOr<std::vector<int64_t>> ResolvePositions(const DenseTensor<int64_t>* ids,
                                                      absl::string_view ids_field,
                                                      int64_t position_offset, int64_t batch,
                                                      int64_t seq) {
  std::vector<int64_t> positions;
  if (ids == nullptr) {
    // The last token sits at position_offset + seq − 1 <= kMaxPosition (seq >= 1, so the bound
    // itself cannot overflow).
    const int64_t max_offset = kMaxPosition - seq + 1;
    if (position_offset < 0 || position_offset > max_offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "position_offset=", position_offset, " must be in [0, ", max_offset,
          "]: the last position, position_offset + ", seq - 1, ", must be <= ", kMaxPosition));
    }
    positions.resize(batch * seq);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < seq; ++t) positions[b * seq + t] = position_offset + t;
    }
    return positions;
  }
  const std::vector<int64_t>& shape = ids->shape;
  const bool per_row = shape.size() == 2;
  if ((shape.size() != 1 && !per_row) || shape.back() != seq || (per_row && shape[0] != batch)) {
    return absl::InvalidArgumentError(absl::StrCat(ids_field, ".shape=", FormatShape(shape),
                                                   " must be [", seq, "] or [", batch, ",", seq,
                                                   "]"));
  }
  RETURN_IF_ERROR(CheckPositions(ids->values.data(), static_cast<int64_t>(ids->values.size()),
                                 ids_field));
  positions.resize(batch * seq);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* row = ids->values.data() + (per_row ? b * seq : 0);
    std::copy(row, row + seq, positions.begin() + b * seq);
  }
  return positions;
}

}  // namespace attnserve
