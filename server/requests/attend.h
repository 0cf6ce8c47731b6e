// Attend, transport-neutral: a loaded model's attention layer over a request's embeddings.
#ifndef ATTNSERVE_SERVER_REQUESTS_ATTEND_H_
#define ATTNSERVE_SERVER_REQUESTS_ATTEND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/kernels/onednn_ops.h"
#include "server/models/loaded_model.h"
#include "server/requests/request_context.h"
#include "server/requests/tensors.h"

namespace attnserve {

// The StatusOr fields hold what the front end converted, or why it could not, reported in its
// turn among the checks (see EncodeCall).
struct AttendCall {
  const LoadedModel* model = nullptr;  // must be set
  FloatTensor query;                   // [batch, q_len, d_model]
  // [batch, kv_len, d_model]; absent: self-attention.
  absl::StatusOr<std::optional<FloatTensor>> context = std::nullopt;
  // [batch·q_len], each in [0, kMaxPosition].
  absl::StatusOr<std::vector<int64_t>> positions = absl::InternalError("positions not resolved");
  bool causal = false;
  std::vector<int64_t> key_lengths;    // [batch] valid keys per element; empty: all
  absl::StatusOr<ComputeType> compute = ComputeType::kFloat32;
  bool return_attention = false;
  int64_t output_bytes = 0;  // the output's size on the wire, for the response limit
  // How the front end's protocol names the query and context, for messages.
  std::string query_field = "query";
  std::string context_field = "context";
};

struct AttendResult {
  std::vector<float> output;  // [batch, q_len, d_model]
  AttentionMap attention;
};

// Checks the call against the model and the limits (the response included), then runs the layer
// through context.compute: batched with the other Attend calls on the same model instance and
// compute type that wait with it (MultiHeadAttention::ForwardBatch).
absl::StatusOr<WorkDone> RunAttend(const RequestContext& context, AttendCall& call,
                                   AttendResult* result);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_ATTEND_H_
