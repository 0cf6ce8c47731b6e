// Early-return helpers for absl::Status / absl::StatusOr (absl 20220623 ships none).
#ifndef ATTNSERVE_CORE_BASE_STATUS_MACROS_H_
#define ATTNSERVE_CORE_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ATTNSERVE_CONCAT_INNER(a, b) a##b
#define ATTNSERVE_CONCAT(a, b) ATTNSERVE_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function unless it is OK.
#define RETURN_IF_ERROR(expr)                                      \
  do {                                                             \
    if (absl::Status status_ = (expr); !status_.ok()) return status_; \
  } while (false)

// `lhs = *expr` for an OK StatusOr, else returns its status. `lhs` may declare a variable.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(ATTNSERVE_CONCAT(status_or_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                          \
  if (!statusor.ok()) return statusor.status();    \
  lhs = *std::move(statusor)

#endif  // ATTNSERVE_CORE_BASE_STATUS_MACROS_H_
