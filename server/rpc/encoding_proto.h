// attnserve.v1.PositionalEncoding (wire) → attnserve::PositionalEncoding (core parameters).
#ifndef ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_
#define ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/positional_encoding.pb.h"
#include "attnserve/v1/tensor.pb.h"
#include "core/encodings/positional_encoding.h"
#include "server/requests/request_tables.h"

namespace attnserve {

// Applies the proto's documented defaults. `field` prefixes messages ("encoding.sinusoidal.variant=…").
// Parameter ranges are checked later by ValidateEncoding, once the layer shape is known (only
// sinusoidal.padding_idx is range-checked here: [0, kMaxPosition]). Tables
// (learned, T5, CoPE) are left empty: the caller attaches them from a model or the request.
absl::StatusOr<PositionalEncoding> EncodingFromProto(const v1::PositionalEncoding& proto,
                                                     absl::string_view field);

// The table an inline `encoding` takes from its request: T5's from `t5_table`, CoPE's from
// `cope_pos_emb` (FLOAT32 or BFLOAT16, rank 2), decoded when sent; the other kinds take none.
absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const v1::Tensor& t5_table,
                                                   const v1::Tensor& cope_pos_emb);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ENCODING_PROTO_H_
