#include "server/rpc/decode_reactor.h"

#include "server/rpc/status_util.h"

namespace attnserve {

AttentionServiceImpl::DecodeReactor::DecodeReactor(AttentionServiceImpl* service,
                                                   grpc::CallbackServerContext* context)
    : service_(service),
      context_(context),
      models_(service->models_->Current()),
      services_{service->kv_cache_budget_,
                [service](const std::string& model, const WorkDone& work) {
                  service->RecordWork("Decode", model, work);
                }},
      request_context_(service->ContextFor(context)),
      handler_(*models_, services_) {
  request_context_.compute = [this](BatchMember& step) {
    return service_->RunCompute(context_, "Decode", step.model(), step);
  };
  if (grpc::Status admitted = service_->AdmitCall(context); !admitted.ok()) {
    Finish(admitted);
    return;
  }
  admitted_ = true;
  StartRead(&request_);
}

void AttentionServiceImpl::DecodeReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client ended the stream, or the call was cancelled (by the client, a deadline or
    // shutdown): that is not a stream the client ended.
    Finish(context_->IsCancelled()
               ? grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled")
               : grpc::Status::OK);
    return;
  }
  if (!service_->request_threads_.TrySchedule([this] { RunStep(); })) {
    Finish(service_->RpcThreadsBusy());
  }
}

void AttentionServiceImpl::DecodeReactor::RunStep() {
  const grpc::Status status = ServeRpc("Decode", [this] {
    return handler_.Step(request_context_, request_, &response_, &transient_);
  });
  if (!status.ok()) {
    Finish(status);
    return;
  }
  StartWrite(&response_);
}

void AttentionServiceImpl::DecodeReactor::OnWriteDone(bool ok) {
  transient_ = BudgetHold();
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client closed the stream"));
    return;
  }
  StartRead(&request_);
}

void AttentionServiceImpl::DecodeReactor::OnDone() {
  if (admitted_) service_->EndCall();
  delete this;
}

}  // namespace attnserve
