// Tables sent with a request (T5's relative bias, CoPE's position embeddings) for the weight-free
// RPCs: checked against the shape the encoding needs (core/encodings/encoding_tables.h).
#ifndef ATTNSERVE_SERVER_REQUESTS_REQUEST_TABLES_H_
#define ATTNSERVE_SERVER_REQUESTS_REQUEST_TABLES_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/encodings/encoding_tables.h"
#include "core/encodings/positional_encoding.h"
#include "server/requests/tensors.h"

namespace attnserve {

// The table a request carries for its encoding, as the front end decoded it.
struct RequestTable {
  std::string field;                  // the request field it came in, e.g. "t5_table"
  std::optional<FloatTensor> tensor;  // [rows, cols]; absent when the request has none
};

// Checks the parameters that shape the encoding's table (messages "encoding.<kind>.<name>=…"),
// then gives it `table`, which must have been decoded (else its error), be present and have
// exactly the shape EncodingTable gives for `layer`. A learned table only comes with a model:
// INVALID_ARGUMENT. Kinds without a table ignore `table`.
absl::Status AttachRequestTable(absl::StatusOr<RequestTable> table, const TableLayerShape& layer,
                                PositionalEncoding& encoding);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_REQUEST_TABLES_H_
