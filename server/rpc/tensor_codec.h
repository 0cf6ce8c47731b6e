// Conversion between wire tensors (attnserve.v1.Tensor) and float buffers, with validation that
// names the field: every size is checked before anything is allocated.
#ifndef ATTNSERVE_SERVER_RPC_TENSOR_CODEC_H_
#define ATTNSERVE_SERVER_RPC_TENSOR_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention_service.pb.h"
#include "attnserve/v1/tensor.pb.h"
#include "core/encodings/positional_encoding.h"
#include "core/kernels/onednn_ops.h"
#include "server/requests/request_context.h"
#include "server/requests/request_tables.h"
#include "server/requests/tensors.h"

namespace attnserve {

// Decodes a FLOAT32 or BFLOAT16 tensor of the given rank. `dims` names each dimension for
// messages, e.g. "[batch, seq, d_model]".
absl::StatusOr<FloatTensor> DecodeFloatTensor(const v1::Tensor& tensor, absl::string_view field,
                                              int rank, absl::string_view dims);

// Decodes a BFLOAT16 tensor of the given rank without widening it; messages as above.
absl::StatusOr<Bfloat16Tensor> DecodeBfloat16Tensor(const v1::Tensor& tensor,
                                                    absl::string_view field, int rank,
                                                    absl::string_view dims);

// Writes product(shape) bf16 values as a BFLOAT16 tensor.
void EncodeBfloat16Tensor(const std::vector<int64_t>& shape, const uint16_t* bits,
                          v1::Tensor* tensor);

// Writes values (product(shape) elements) as `dtype` (FLOAT32 or BFLOAT16, round to nearest even).
void EncodeFloatTensor(const std::vector<int64_t>& shape, const float* values, v1::DataType dtype,
                       v1::Tensor* tensor);

// The table an inline `encoding` takes from its request (T5's `t5_table`, CoPE's `cope_pos_emb`;
// FLOAT32 or BFLOAT16, rank 2), decoded when sent; absent for other kinds, for a request without
// the kind's field, or when the field is empty.
absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const v1::SdpaRequest& request);
absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const v1::PositionBiasRequest& request);

// Writes attention probabilities as a FLOAT32 tensor of their shape.
void EncodeAttentionMap(const AttentionMap& map, v1::Tensor* tensor);

// Positions [batch·seq] (server/requests/positions.h) from a request's position_offset, or from
// its ids when sent (INT32 or INT64, shape [seq] or [batch, seq]).
absl::StatusOr<std::vector<int64_t>> ResolvePositions(const v1::Tensor& ids,
                                                      absl::string_view ids_field,
                                                      int64_t position_offset, int64_t batch,
                                                      int64_t seq);

// compute_dtype: FLOAT32 (or unset) computes in f32; BFLOAT16 uses bf16 operands, f32
// accumulation; INVALID_ARGUMENT otherwise.
absl::StatusOr<ComputeType> ComputeTypeFromProto(int dtype);

// "FLOAT32", or the number for values outside the enum.
std::string DataTypeName(int dtype);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_TENSOR_CODEC_H_
