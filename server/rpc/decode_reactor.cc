#include "server/rpc/decode_reactor.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/status_util.h"
#include "server/rpc/tsan_hand_off.h"

namespace attnserve {

AttentionServiceImpl::DecodeReactor::DecodeReactor(AttentionServiceImpl* service,
                                                   grpc::CallbackServerContext* context)
    : service_(service),
      context_(context),
      step_memory_(&service->memory_budget_),
      models_(service->models_->Current()),
      services_{service->kv_cache_budget_,
                [service](const std::string& model, const WorkDone& work) {
                  service->RecordWork("Decode", model, work);
                }},
      control_(ControlOf(context)),
      request_context_(service->ContextFor(control_, step_memory_)),
      handler_(*models_, services_) {
  request_context_.compute = [this](BatchMember& step) {
    return service_->RunCompute(control_, "Decode", step.model(), step);
  };
  if (absl::Status admitted = service_->AdmitCall(); !admitted.ok()) {
    FinishStream(ToGrpcStatus(admitted));
    return;
  }
  if (!service_->decode_streams_.Open(this, [this] { EndIdle(); })) {
    service_->EndCall();
    if (service_->metrics_ != nullptr) service_->metrics_->RecordRejected("decode_streams");
    const int64_t max_streams = service_->decode_streams_.options().max_streams;
    FinishStream(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat(max_streams, " Decode streams are open (--max_decode_streams=",
                                     max_streams, "); retry later or on another replica")));
    return;
  }
  admitted_ = true;
  ReadNext();
}

void AttentionServiceImpl::DecodeReactor::ReadNext() {
  // The reaper may finish the stream once the read is started; `this` may be gone after it.
  service_->decode_streams_.StartTimedRead(this, [this] {
    tsan_hand_off::Release(this);
    StartRead(&request_);
  });
}

void AttentionServiceImpl::DecodeReactor::EndIdle() {
  if (service_->metrics_ != nullptr) service_->metrics_->RecordRejected("decode_idle_timeout");
  const double seconds =
      std::chrono::duration<double>(service_->decode_streams_.options().idle_timeout).count();
  FinishStream(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      absl::StrCat("no message for ", seconds,
                                   " s (--decode_idle_timeout_seconds): the stream is ended and "
                                   "its cache freed")));
}

void AttentionServiceImpl::DecodeReactor::OnReadDone(bool ok) {
  tsan_hand_off::Acquire(this);
  if (!service_->decode_streams_.Busy(this)) return;  // ended idle: EndIdle finishes it
  if (!ok) {
    // The client ended the stream, or the call was cancelled (by the client, a deadline or
    // shutdown): that is not a stream the client ended.
    FinishStream(context_->IsCancelled()
               ? grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled")
               : grpc::Status::OK);
    return;
  }
  const int64_t message_bytes = 2 * static_cast<int64_t>(request_.ByteSizeLong());
  if (absl::Status reserved = service_->ReserveMemory(step_memory_, message_bytes);
      !reserved.ok()) {
    FinishStream(ToGrpcStatus(reserved));
    return;
  }
  if (absl::Status scheduled = service_->ScheduleBody([this] { RunStep(); }); !scheduled.ok()) {
    FinishStream(ToGrpcStatus(scheduled));
  }
}

void AttentionServiceImpl::DecodeReactor::RunStep() {
  const grpc::Status status = ServeRpc("Decode", [this] {
    return handler_.Step(request_context_, request_, &response_, &transient_);
  });
  v1::DecodeRequest().Swap(&request_);  // an idle stream keeps no message's buffers
  if (!status.ok()) {
    FinishStream(status);
    return;
  }
  tsan_hand_off::Release(this);
  StartWrite(&response_);
}

void AttentionServiceImpl::DecodeReactor::OnWriteDone(bool ok) {
  tsan_hand_off::Acquire(this);
  transient_ = BudgetHold();
  v1::DecodeResponse().Swap(&response_);
  step_memory_.Clear();  // the answer is freed: its bytes return
  if (!ok) {
    FinishStream(grpc::Status(grpc::StatusCode::CANCELLED, "the client closed the stream"));
    return;
  }
  ReadNext();
}

void AttentionServiceImpl::DecodeReactor::FinishStream(grpc::Status status) {
  handler_.End();
  tsan_hand_off::Release(this);
  Finish(std::move(status));
}

void AttentionServiceImpl::DecodeReactor::OnDone() {
  tsan_hand_off::Acquire(this);
  if (admitted_) {
    service_->decode_streams_.Close(this);
    service_->EndCall();
  }
  delete this;
}

}  // namespace attnserve
