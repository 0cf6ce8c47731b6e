// Status helpers shared by core and server code; nothing here knows gRPC.
#ifndef ATTNSERVE_CORE_BASE_FIELD_STATUS_H_
#define ATTNSERVE_CORE_BASE_FIELD_STATUS_H_

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

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_BASE_FIELD_STATUS_H_
