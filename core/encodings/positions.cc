#include "core/encodings/positions.h"

#include "absl/strings/str_cat.h"

namespace attnserve {

absl::Status CheckPositions(const int64_t* positions, int64_t count, absl::string_view field) {
  for (int64_t t = 0; t < count; ++t) {
    if (positions[t] < 0 || positions[t] > kMaxPosition) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", t, "]=", positions[t],
                                                     " must be in [0, ", kMaxPosition, "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace attnserve
