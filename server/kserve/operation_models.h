// The built-in operation models: attnserve.v1's other computing RPCs under the KServe v2
// protocol, so that everything the first door does the second does too (docs/kserve.md). They
// are always there, on every server, beside the served models.
//
//   attnserve.encode         Encode
//     inputs      input [batch, seq, d_model] (FP32, BF16, FP16), position_ids
//     parameters  model (its encoding) or encoding (attnserve.v1.PositionalEncoding as JSON),
//                 num_heads, head_dim, position_offset, input_scale
//     outputs     output (the input's datatype)
//   attnserve.sdpa           ScaledDotProductAttention
//     inputs      q [B, H, Sq, hd], k and v [B, Hkv, Sk, hd] (FP32, BF16, FP16; all three BF16
//                 stay bf16), key_lengths [B], t5_table, cope_pos_emb
//     parameters  encoding, causal, scale, position_offset, compute_dtype, return_attention
//     outputs     output (q's datatype), attention [B, H, Sq, Sk] FP32
//   attnserve.position_bias  PositionBias
//     inputs      t5_table
//     parameters  model or encoding, num_heads, q_len, kv_len, causal
//     outputs     bias [heads, q_len, kv_len] FP32
#ifndef ATTNSERVE_SERVER_KSERVE_OPERATION_MODELS_H_
#define ATTNSERVE_SERVER_KSERVE_OPERATION_MODELS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/kserve/infer_tensors.h"
#include "server/kserve/model_infer.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

inline constexpr absl::string_view kEncodeModel = "attnserve.encode";
inline constexpr absl::string_view kSdpaModel = "attnserve.sdpa";
inline constexpr absl::string_view kPositionBiasModel = "attnserve.position_bias";

bool IsOperationModel(absl::string_view name);

// The metadata of an operation model (IsOperationModel(name) must hold).
ModelMetadata OperationMetadata(absl::string_view name);

// Runs `request` on its operation model (IsOperationModel must hold) and adds its outputs to
// `response`; INVALID_ARGUMENT naming any input, parameter or output it does not take.
absl::StatusOr<WorkDone> RunOperationModel(const RequestContext& context,
                                           const ModelRegistry& models,
                                           const InferRequest& request, InferResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_OPERATION_MODELS_H_
