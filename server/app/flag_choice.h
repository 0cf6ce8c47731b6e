// Flags whose value names one of a few choices (--log_level, --log_format, --access_log): read in
// any case, and refused at start, naming every accepted value, otherwise (an unknown log level
// used to turn every log off without a word).
#ifndef ATTNSERVE_SERVER_APP_FLAG_CHOICE_H_
#define ATTNSERVE_SERVER_APP_FLAG_CHOICE_H_

#include <initializer_list>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// The choice `value` names, compared without case, e.g. ParseFlagChoice<LogFormat>("log_format",
// "JSON", {{"text", LogFormat::kText}, {"json", LogFormat::kJson}}); INVALID_ARGUMENT naming the
// flag, the value and the accepted names when it names none.
template <typename T>
absl::StatusOr<T> ParseFlagChoice(absl::string_view flag, absl::string_view value,
                                  std::initializer_list<std::pair<absl::string_view, T>> choices) {
  std::vector<absl::string_view> names;
  for (const auto& [name, choice] : choices) {
    if (absl::EqualsIgnoreCase(name, value)) return choice;
    names.push_back(name);
  }
  return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", value, " must be one of ",
                                                 absl::StrJoin(names, ", "), " (in any case)"));
}

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_APP_FLAG_CHOICE_H_
