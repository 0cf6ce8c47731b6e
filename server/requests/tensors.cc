#include "server/requests/tensors.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnserve {

std::string FormatShape(absl::Span<const int64_t> shape) {
  constexpr size_t kShownDims = 8;
  if (shape.size() <= kShownDims) return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
  return absl::StrCat("[", absl::StrJoin(shape.first(kShownDims), ","), ",…(", shape.size(),
                      " dims)]");
}

}  // namespace attnserve
