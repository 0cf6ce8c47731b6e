#include "server/rpc/unary_rpcs.h"

#include "core/base/status_macros.h"
#include "server/requests/attend.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {

absl::StatusOr<WorkDone> HandleAttend(const RequestContext& context, const ModelRegistry& models,
                                      const v1::AttendRequest& request,
                                      v1::AttendResponse* response) {
  AttendCall call;
  ASSIGN_OR_RETURN(call.model, models.Find(request.model()));
  ASSIGN_OR_RETURN(call.query,
                   DecodeFloatTensor(request.query(), "query", 3, "[batch, q_len, d_model]"));
  if (request.has_context()) {
    call.context = DecodeFloatTensor(request.context(), "context", 3, "[batch, kv_len, d_model]");
  }
  call.compute = ComputeTypeFromProto(request.compute_dtype());
  call.positions = ResolvePositions(request.position_ids(), "position_ids",
                                    request.position_offset(), call.query.shape[0],
                                    call.query.shape[1]);
  call.causal = request.causal();
  call.key_lengths.assign(request.key_lengths().begin(), request.key_lengths().end());
  call.return_attention = request.return_attention();
  // The output has the query's shape and dtype, so its size is the query's.
  call.output_bytes = static_cast<int64_t>(request.query().data().size());

  AttendResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunAttend(context, call, &result));
  EncodeFloatTensor(call.query.shape, result.output.data(), request.query().dtype(),
                    response->mutable_output());
  if (call.return_attention) {
    EncodeAttentionMap(result.attention, response->mutable_attention());
  }
  return work;
}

}  // namespace attnserve
