#include "server/rpc/unary_rpcs.h"

#include "core/base/status_macros.h"
#include "server/requests/encode.h"
#include "server/models/encoding_proto.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {

absl::StatusOr<WorkDone> HandleEncode(const RequestContext& context, const ModelRegistry& models,
                                      const v1::EncodeRequest& request,
                                      v1::EncodeResponse* response) {
  EncodeCall call;
  ASSIGN_OR_RETURN(call.input,
                   DecodeFloatTensor(request.input(), "input", 3, "[batch, seq, d_model]"));
  call.num_heads = request.num_heads();
  call.head_dim = request.head_dim();
  if (!request.model().empty()) {
    call.model = models.Find(request.model());
  } else {
    call.encoding = EncodingFromProto(request.encoding(), "encoding");
  }
  call.positions = ResolvePositions(request.position_ids(), "position_ids",
                                    request.position_offset(), call.input.shape[0],
                                    call.input.shape[1]);
  if (request.has_input_scale()) call.input_scale = request.input_scale();
  ASSIGN_OR_RETURN(const WorkDone work, RunEncode(context, call));
  EncodeFloatTensor(call.input.shape, call.input.values.data(), request.input().dtype(),
                    response->mutable_output());
  return work;
}

}  // namespace attnserve
