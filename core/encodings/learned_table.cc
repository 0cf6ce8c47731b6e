#include "core/encodings/learned_table.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace attnserve {

absl::Status CheckLearnedTable(absl::string_view prefix, absl::string_view name,
                               const std::vector<float>* table, absl::string_view rows_name,
                               int64_t rows, absl::string_view cols_name, int64_t cols) {
  if (table == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ".", name, " is missing; must hold ",
                                                   rows_name, "·", cols_name, " values"));
  }
  if (rows > std::numeric_limits<int64_t>::max() / cols) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ".", rows_name, "=", rows, " times ",
                                                   cols_name, "=", cols, " overflows int64"));
  }
  if (static_cast<int64_t>(table->size()) != rows * cols) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ".", name, " has ", table->size(),
                                                   " values; must be ", rows_name, "·", cols_name,
                                                   "=", rows * cols));
  }
  return absl::OkStatus();
}

}  // namespace attnserve
