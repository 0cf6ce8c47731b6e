// attnserve.v1.PositionalEncoding (wire) → attnserve::PositionalEncoding (core parameters).
#ifndef ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_
#define ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/positional_encoding.pb.h"
#include <string>

#include "attnserve/v1/model_config.pb.h"
#include "attnserve/v1/tensor.pb.h"
#include "google/protobuf/message.h"
#include "core/encodings/positional_encoding.h"
#include "server/requests/request_tables.h"

namespace attnserve {

// Applies the proto's documented defaults. `field` prefixes messages ("encoding.sinusoidal.variant=…").
// Parameter ranges are checked later by ValidateEncoding, once the layer shape is known (only
// sinusoidal.padding_idx is range-checked here: [0, kMaxPosition]). Tables
// (learned, T5, CoPE) are left empty: the caller attaches them from a model or the request.
absl::StatusOr<PositionalEncoding> EncodingFromProto(const v1::PositionalEncoding& proto,
                                                     absl::string_view field);

// The table an inline `encoding` takes from `request`, any request message with table fields
// (T5's `t5_table`, CoPE's `cope_pos_emb`; FLOAT32 or BFLOAT16, rank 2), decoded when sent. Kinds
// without one, or a request without the kind's field, give an absent table.
absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const google::protobuf::Message& request);

// The ModelConfig.tensor_names override of an encoding table's tensor (empty: its Hugging Face
// name).
const std::string& TableNameOverride(const v1::TensorNames& names, TableRole role);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_
