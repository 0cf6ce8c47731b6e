#include "server/rpc/decode_rpc.h"

#include "core/base/status_macros.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {
namespace {

// One message: decoded, computed by the session, answered.
absl::Status ServeStep(const RequestContext& context, const DecodeStreamServices& services,
                       const v1::DecodeRequest& request, DecodeSession& session,
                       DecodeStream* stream) {
  DecodeStep step;
  step.model = request.model();
  step.query = DecodeFloatTensor(request.query(), "query", 3, "[1, new_tokens, d_model]");
  step.return_attention = request.return_attention();
  DecodeStepResult result;
  const std::string& model = session.model_name();
  ASSIGN_OR_RETURN(const WorkDone work, session.Step(context, step, &result));
  v1::DecodeResponse response;
  EncodeFloatTensor(result.output_shape, result.output.data(), request.query().dtype(),
                    response.mutable_output());
  response.set_position(result.position);
  services.record_step(model, work);
  if (step.return_attention) {
    EncodeAttentionMap(result.attention, response.mutable_attention());
  }
  if (!stream->Write(response)) return absl::CancelledError("the client closed the stream");
  return absl::OkStatus();
}

}  // namespace

absl::Status HandleDecode(const RequestContext& context, const ModelRegistry& models,
                          const DecodeStreamServices& services, DecodeStream* stream) {
  v1::DecodeRequest request;
  if (!stream->Read(&request)) return absl::OkStatus();  // the client sent nothing
  ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(request.model()));
  DecodeSession session(*model, context.limits, services.budget);
  do {
    RETURN_IF_ERROR(ServeStep(context, services, request, session, stream));
  } while (stream->Read(&request));
  // Read also fails when the call was cancelled (by the client, a deadline or shutdown): that is
  // not a stream the client ended.
  if (context.is_cancelled && context.is_cancelled()) {
    return absl::CancelledError("the stream was cancelled");
  }
  return absl::OkStatus();
}

}  // namespace attnserve
