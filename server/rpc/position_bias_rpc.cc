#include "server/rpc/unary_rpcs.h"

#include "core/base/status_macros.h"
#include "server/requests/position_bias.h"
#include "server/models/encoding_proto.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {

absl::StatusOr<WorkDone> HandlePositionBias(const RequestContext& context,
                                            const ModelRegistry& models,
                                            const v1::PositionBiasRequest& request,
                                            v1::PositionBiasResponse* response) {
  PositionBiasCall call;
  if (!request.model().empty()) {
    ASSIGN_OR_RETURN(call.model, models.Find(request.model()));
  } else {
    if (!request.has_encoding()) {
      return absl::InvalidArgumentError(
          "encoding or model must be set: the bias of which encoding?");
    }
    call.encoding = EncodingFromProto(request.encoding(), "encoding");
    if (call.encoding.ok()) {
      call.table = RequestTableFromProto(*call.encoding, request);
    }
  }
  call.num_heads = request.num_heads();
  call.q_len = request.q_len();
  call.kv_len = request.kv_len();
  call.causal = request.causal();

  PositionBiasResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunPositionBias(context, call, &result));
  EncodeFloatTensor(result.shape, result.bias.data(), v1::FLOAT32, response->mutable_bias());
  return work;
}

}  // namespace attnserve
