#include "server/requests/request_tables.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/field_status.h"
#include "core/base/status_macros.h"

namespace attnserve {

absl::Status AttachRequestTable(absl::StatusOr<RequestTable> decoded,
                                const TableLayerShape& layer, PositionalEncoding& encoding) {
  if (absl::Status status = ValidateTableParams(encoding); !status.ok()) {
    return WithFieldPrefix(status, "encoding");
  }
  const std::optional<EncodingTableSpec> spec = EncodingTable(encoding, layer);
  if (!spec.has_value()) return absl::OkStatus();
  // An embedding table (learned positions) is a model's: requests send only score tables.
  if (IsAdditive(encoding)) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoding.", EncodingName(encoding),
                     " needs a model's table: set `model` to a model with learned positions"));
  }
  ASSIGN_OR_RETURN(RequestTable table, std::move(decoded));
  if (!table.tensor.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(table.field, " is required with encoding.",
                                                   EncodingName(encoding), ": FLOAT32 ",
                                                   spec->dims));
  }
  const std::vector<int64_t> shape = {spec->rows, spec->cols};
  if (table.tensor->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(table.field, ".shape=",
                                                   FormatShape(table.tensor->shape), " must be ",
                                                   FormatShape(shape), " ", spec->dims));
  }
  AttachTable(std::make_shared<const std::vector<float>>(std::move(table.tensor->values)),
              encoding);
  return absl::OkStatus();
}

}  // namespace attnserve
