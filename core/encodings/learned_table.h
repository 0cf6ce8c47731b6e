// The learned tables some encodings carry (T5's bias table, CoPE's position embeddings): the
// check that one is present and of its parameters' size.
#ifndef ATTNSERVE_CORE_ENCODINGS_LEARNED_TABLE_H_
#define ATTNSERVE_CORE_ENCODINGS_LEARNED_TABLE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// `table` [rows, cols], the parameter `name` of the encoding `prefix` ("t5" and "table"): present
// (not nullptr) and holding rows·cols values, rows·cols within int64. rows is the encoding's own
// parameter `rows_name`, cols the layer dimension `cols_name`; both must be >= 1. Messages:
// "t5.table is missing; …", "t5.num_buckets=… times num_heads=… overflows int64",
// "t5.table has … values; must be num_buckets·num_heads=…".
absl::Status CheckLearnedTable(absl::string_view prefix, absl::string_view name,
                               const std::vector<float>* table, absl::string_view rows_name,
                               int64_t rows, absl::string_view cols_name, int64_t cols);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_LEARNED_TABLE_H_
