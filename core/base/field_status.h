// Status helpers shared by core and server code; nothing here knows gRPC.
#ifndef ATTNSERVE_CORE_BASE_FIELD_STATUS_H_
#define ATTNSERVE_CORE_BASE_FIELD_STATUS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// Prepends "<prefix>." to the message of a non-OK status, keeping its code; e.g. a core
// "sinusoidal.base=0.5 must be > 1" becomes "encoding.sinusoidal.base=0.5 must be > 1".
inline absl::Status WithFieldPrefix(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, ".", status.message()));
}

// OK when value >= minimum; else INVALID_ARGUMENT "<field>=<value> must be >= <minimum>".
inline absl::Status CheckAtLeast(absl::string_view field, int64_t value, int64_t minimum) {
  if (value >= minimum) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, "=", value, " must be >= ", minimum));
}

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_BASE_FIELD_STATUS_H_
