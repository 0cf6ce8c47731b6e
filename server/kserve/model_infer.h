// A served model under the KServe v2 protocol, transport-neutral: its metadata, and its
// inference, which is its attention layer (RunAttend). docs/kserve.md is the user's view.
//
//   inputs      input         [batch, seq, d_model]     FP32, BF16 or FP16   required
//               context       [batch, kv_len, d_model]  as input             cross-attention
//               key_lengths   [batch]                   INT32 or INT64       valid keys each
//               position_ids  [seq] or [batch, seq]     INT32 or INT64
//   parameters  causal (bool), position_offset (int64), compute_dtype ("FP32" or "BF16"),
//               return_attention (bool)
//   outputs     output        [batch, seq, d_model]     the input's datatype
//               attention     [batch, heads, seq, kv_len]  FP32, when return_attention is set
//                                                       or the client names it
#ifndef ATTNSERVE_SERVER_KSERVE_MODEL_INFER_H_
#define ATTNSERVE_SERVER_KSERVE_MODEL_INFER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/kserve/infer_tensors.h"
#include "core/kernels/compute_type.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

// The only version of every model: models are replaced in place by reloads, not versioned.
inline constexpr absl::string_view kModelVersion = "1";

struct TensorMetadata {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;  // -1: any size
};

struct ModelMetadata {
  std::string name;
  std::vector<std::string> versions;
  std::string platform;
  std::vector<TensorMetadata> inputs;
  std::vector<TensorMetadata> outputs;
};

// The model named `name` in `models` (null for a built-in operation model, operation_models.h):
// NOT_FOUND when there is none (with the reason it failed to load, if it did), or when `version`
// is neither empty nor kModelVersion.
absl::StatusOr<const LoadedModel*> FindVersion(const ModelRegistry& models,
                                               absl::string_view name, absl::string_view version);

// The metadata of a model (found as FindVersion finds it).
absl::StatusOr<ModelMetadata> FindModelMetadata(const ModelRegistry& models,
                                                absl::string_view name,
                                                absl::string_view version);

// Runs `request` on its model (found as FindVersion finds it) — a served model through RunAttend,
// batched with the model's other Attend and ModelInfer calls; an operation model through its
// handler — and fills `response`. Every input, parameter and
// requested output is checked first: INVALID_ARGUMENT naming it for anything this model does not
// take.
absl::StatusOr<WorkDone> RunModelInfer(const RequestContext& context, const ModelRegistry& models,
                                       const InferRequest& request, InferResponse* response);

// Positions from a position-ids input when sent (INT32 or INT64, [seq] or [batch, seq]), else
// from position_offset (server/requests/positions.h).
absl::StatusOr<std::vector<int64_t>> InputPositions(const InferInput* ids, int64_t position_offset,
                                                    int64_t batch, int64_t seq);

// The compute_dtype parameter: "FP32" (the default) or "BF16".
absl::StatusOr<ComputeType> ComputeTypeParameter(const InferParameters& parameters);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_MODEL_INFER_H_
