#include "server/rpc/decode_rpc.h"

#include <utility>

#include "core/base/status_macros.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {

absl::Status DecodeStreamHandler::Step(const RequestContext& context,
                                       const v1::DecodeRequest& request,
                                       v1::DecodeResponse* response, BudgetHold* transient) {
  if (!session_.has_value()) {
    ASSIGN_OR_RETURN(const LoadedModel* model, models_.Find(request.model()));
    session_.emplace(*model, context.limits, services_.budget);
  }
  DecodeStep step;
  step.model = request.model();
  step.query = DecodeFloatTensor(request.query(), "query", 3, "[1, new_tokens, d_model]");
  step.return_attention = request.return_attention();
  DecodeStepResult result;
  ASSIGN_OR_RETURN(const WorkDone work, session_->Step(context, step, &result));
  response->Clear();
  EncodeFloatTensor(result.output_shape, result.output.data(), request.query().dtype(),
                    response->mutable_output());
  response->set_position(result.position);
  if (step.return_attention) {
    EncodeAttentionMap(result.attention, response->mutable_attention());
  }
  services_.record_step(session_->model_name(), work);
  *transient = std::move(result.transient);
  return absl::OkStatus();
}

}  // namespace attnserve
