// attnserve.v1.PositionalEncoding (in ModelConfig and in requests) → attnserve::PositionalEncoding
// (core parameters), and ModelConfig's tensor name overrides of their tables. Here, below the
// front doors, because the model repository reads the same messages.
#ifndef ATTNSERVE_SERVER_MODELS_ENCODING_PROTO_H_
#define ATTNSERVE_SERVER_MODELS_ENCODING_PROTO_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/model_config.pb.h"
#include "attnserve/v1/positional_encoding.pb.h"
#include "core/encodings/positional_encoding.h"

namespace attnserve {

// Applies the proto's documented defaults. `field` prefixes messages ("encoding.sinusoidal.variant=…").
// Parameter ranges are checked later by ValidateEncoding, once the layer shape is known (only
// sinusoidal.padding_idx is range-checked here: [0, kMaxPosition]). Tables
// (learned, T5, CoPE) are left empty: the caller attaches them from a model or the request.
absl::StatusOr<PositionalEncoding> EncodingFromProto(const v1::PositionalEncoding& proto,
                                                     absl::string_view field);

// The ModelConfig.tensor_names override of the tensor of `encoding`'s table (EncodingTable;
// empty: its Hugging Face name).
const std::string& TableNameOverride(const v1::TensorNames& names,
                                     const PositionalEncoding& encoding);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_ENCODING_PROTO_H_
