#include "server/rpc/unary_call.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/v1/attention_service.pb.h"
#include "core/base/status_macros.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/kserve/grpc_inference_service.h"
#include "server/rpc/client_waits.h"
#include "server/rpc/status_util.h"
#include "server/rpc/tsan_hand_off.h"
#include "server/rpc/unary_rpcs.h"

namespace attnserve {
namespace {

const std::string& RequestedModel(const v1::EncodeRequest& request) { return request.model(); }
const std::string& RequestedModel(const v1::AttendRequest& request) { return request.model(); }
const std::string& RequestedModel(const v1::PositionBiasRequest& request) {
  return request.model();
}
const std::string& RequestedModel(const inference::ModelInferRequest& request) {
  return request.model_name();
}
const std::string& RequestedModel(const v1::SdpaRequest&) {
  static const std::string* const none = new std::string;
  return *none;  // weight-free: the metrics label it "inline"
}

// What a parsed request holds in memory. Reflection's SpaceUsedLong for the attnserve.v1
// messages; ModelInferRequest has map fields, where SpaceUsedLong crashed (Debian's protobuf
// 3.21, reading the maps' reflection view, in the ThreadSanitizer build), so its own estimate.
template <typename Request>
int64_t MessageHeldBytes(const Request& request) {
  return static_cast<int64_t>(request.SpaceUsedLong());
}
int64_t MessageHeldBytes(const inference::ModelInferRequest& request) {
  return ModelInferRequestHeldBytes(request);
}

// HandleSdpa needs no models; the others' shape.
absl::StatusOr<WorkDone> HandleSdpaWithModels(const RequestContext& context,
                                              const ModelRegistry&, const v1::SdpaRequest& request,
                                              v1::SdpaResponse* response) {
  return HandleSdpa(context, request, response);
}

template <typename Request, typename Response,
          absl::StatusOr<WorkDone> (*Handle)(const RequestContext&, const ModelRegistry&,
                                             const Request&, Response*)>
class TypedExchange final : public UnaryExchange {
 public:
  absl::Status Parse(grpc::ByteBuffer& bytes) override {
    if (!grpc::SerializationTraits<Request>::Deserialize(&bytes, &request_).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("the request message does not parse as ",
                                                     Request::descriptor()->full_name()));
    }
    return absl::OkStatus();
  }
  int64_t held_bytes() const override {
    return MessageHeldBytes(request_) + 2 * static_cast<int64_t>(request_.ByteSizeLong());
  }
  const std::string& requested_model() const override { return RequestedModel(request_); }
  absl::StatusOr<WorkDone> Run(const RequestContext& context,
                               const ModelRegistry& models) override {
    return Handle(context, models, request_, &response_);
  }
  absl::Status Serialize(grpc::ByteBuffer* bytes) override {
    bool own_buffer = false;
    const grpc::Status status =
        grpc::SerializationTraits<Response>::Serialize(response_, bytes, &own_buffer);
    // The bytes are what is sent: the messages need not outlive them.
    Response().Swap(&response_);
    Request().Swap(&request_);
    if (!status.ok()) {
      return absl::InternalError(absl::StrCat("serializing the response: ", status.error_message()));
    }
    return absl::OkStatus();
  }

 private:
  Request request_;
  Response response_;
};

template <typename Exchange>
std::unique_ptr<UnaryExchange> Make() {
  return std::make_unique<Exchange>();
}

}  // namespace

const UnaryMethod* FindUnaryMethod(absl::string_view path) {
  using Encode = TypedExchange<v1::EncodeRequest, v1::EncodeResponse, HandleEncode>;
  using Attend = TypedExchange<v1::AttendRequest, v1::AttendResponse, HandleAttend>;
  using Sdpa = TypedExchange<v1::SdpaRequest, v1::SdpaResponse, HandleSdpaWithModels>;
  using Bias =
      TypedExchange<v1::PositionBiasRequest, v1::PositionBiasResponse, HandlePositionBias>;
  using ModelInfer = TypedExchange<inference::ModelInferRequest, inference::ModelInferResponse,
                                   HandleModelInfer>;
  static const UnaryMethod kMethods[] = {
      {"/attnserve.v1.AttentionService/Encode", "Encode", true, Make<Encode>},
      {"/attnserve.v1.AttentionService/Attend", "Attend", true, Make<Attend>},
      {"/attnserve.v1.AttentionService/ScaledDotProductAttention", "ScaledDotProductAttention",
       true, Make<Sdpa>},
      // Its bias map is computed whole on a compute worker; it joins no batch.
      {"/attnserve.v1.AttentionService/PositionBias", "PositionBias", false, Make<Bias>},
      // The KServe v2 door (server/kserve): a model's inference is its Attend.
      {"/inference.GRPCInferenceService/ModelInfer", "ModelInfer", true, Make<ModelInfer>},
  };
  for (const UnaryMethod& method : kMethods) {
    if (path == method.path) return &method;
  }
  return nullptr;
}

AttentionServiceImpl::UnaryCall::UnaryCall(AttentionServiceImpl* service,
                                           grpc::GenericCallbackServerContext* context)
    : service_(service),
      context_(context),
      method_(FindUnaryMethod(context->method())),
      memory_(&service->memory_budget_) {
  if (method_ == nullptr) {
    FinishWith(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                            absl::StrCat("unknown method ", context->method())));
    return;
  }
  if (absl::Status admitted = service_->AdmitCall(); !admitted.ok()) {
    FinishWith(ToGrpcStatus(admitted));
    return;
  }
  admitted_ = true;
  if (!service_->unary_calls_->ReadOrWait(this)) {
    if (service_->metrics_ != nullptr) service_->metrics_->RecordRejected("memory_budget");
    FinishWith(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("the memory budget (--max_request_memory_bytes=",
                     service_->memory_budget_.max_bytes(), ") is full and ",
                     service_->limits_.compute_queue_depth,
                     " calls wait for room to read their message (--compute_queue_depth); retry "
                     "later or on another replica")));
  }
}

bool AttentionServiceImpl::UnaryCall::ReserveRead() {
  // Until it is read, the message may be as large as any, and parsing holds it twice: its bytes
  // and the parsed message.
  constexpr int64_t kCopiesWhileParsed = 2;
  return memory_.Add(kCopiesWhileParsed * service_->limits_.max_response_bytes).ok();
}

void AttentionServiceImpl::UnaryCall::StartReading() {
  ClientWaits& reads = service_->reading_calls_;
  timed_ = reads.Open(this, [this] { EndSlowRead(); });
  // The reaper may end the call once the read is started; `this` may be gone after it.
  reads.StartTimedRead(this, [this] {
    tsan_hand_off::Release(this);
    StartRead(&request_bytes_);
  });
}

void AttentionServiceImpl::UnaryCall::EndSlowRead() {
  if (service_->metrics_ != nullptr) service_->metrics_->RecordRejected("read_timeout");
  const double seconds =
      std::chrono::duration<double>(service_->reading_calls_.options().idle_timeout).count();
  FinishWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("the request message did not arrive within ", seconds,
                                       " s (--request_read_timeout_seconds)")));
}

void AttentionServiceImpl::UnaryCall::OnCancel() {
  tsan_hand_off::Acquire(this);
  // Cancelled (by its client, its deadline or shutdown) while waiting to be read: nothing else
  // will finish it. Otherwise the read, the computation or the answer ends it.
  if (service_->unary_calls_->Leave(this)) {
    const bool deadline_passed = context_->deadline() <= std::chrono::system_clock::now();
    FinishWith(deadline_passed
                   ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                  "the deadline passed while waiting for room in the memory "
                                  "budget (--max_request_memory_bytes) to read the message")
                   : grpc::Status(grpc::StatusCode::CANCELLED,
                                  "cancelled while waiting for room to read its message"));
  }
}

void AttentionServiceImpl::UnaryCall::OnReadDone(bool ok) {
  tsan_hand_off::Acquire(this);
  if (!service_->reading_calls_.Busy(this)) return;  // too slow: EndSlowRead finishes it
  if (!ok) {
    FinishWith(context_->IsCancelled()
                   ? grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled")
                   : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "the call ended without a request message"));
    return;
  }
  exchange_ = method_->make_exchange();
  absl::Status parsed = exchange_->Parse(request_bytes_);
  request_bytes_.Clear();
  // Read: the reservation becomes what the message and its converted tensors hold.
  if (parsed.ok()) parsed = service_->ResizeMemory(memory_, exchange_->held_bytes());
  if (!parsed.ok()) {
    FinishWith(ToGrpcStatus(parsed));
    return;
  }
  if (absl::Status scheduled = service_->ScheduleBody([this] { Run(); }); !scheduled.ok()) {
    FinishWith(ToGrpcStatus(scheduled));
  }
}

void AttentionServiceImpl::UnaryCall::Run() {
  const grpc::Status status = ServeRpc(method_->rpc, [this]() -> absl::Status {
    RETURN_IF_ERROR(service_->ServeUnary(ControlOf(context_), method_->rpc, method_->batched, memory_,
                                         exchange_->requested_model(),
                                         [this](const RequestContext& context,
                                                const ModelRegistry& models) {
                                           return exchange_->Run(context, models);
                                         }));
    return exchange_->Serialize(&response_bytes_);
  });
  FinishWith(status);
}

void AttentionServiceImpl::UnaryCall::FinishWith(const grpc::Status& status) {
  if (admitted_) service_->EndCall();
  admitted_ = false;
  tsan_hand_off::Release(this);
  if (status.ok()) {
    StartWriteAndFinish(&response_bytes_, grpc::WriteOptions(), status);
  } else {
    Finish(status);
  }
}

bool AttentionServiceImpl::UnaryCalls::ReadOrWait(UnaryCall* call) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!waiting_.empty() || !call->ReserveRead()) {
      if (waiting_.size() >= max_waiting_) return false;
      call->waiting_ = true;
      waiting_.push_back(call);
      return true;
    }
  }
  call->StartReading();
  return true;
}

void AttentionServiceImpl::UnaryCalls::ReadWaiting() {
  std::vector<UnaryCall*> ready;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Oldest first; a call that does not fit keeps those behind it waiting (no call overtakes).
    while (!waiting_.empty() && waiting_.front()->ReserveRead()) {
      waiting_.front()->waiting_ = false;
      ready.push_back(waiting_.front());
      waiting_.pop_front();
    }
  }
  for (UnaryCall* call : ready) call->StartReading();
}

bool AttentionServiceImpl::UnaryCalls::Leave(UnaryCall* call) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!call->waiting_) return false;
  call->waiting_ = false;
  waiting_.erase(std::find(waiting_.begin(), waiting_.end(), call));
  return true;
}

void AttentionServiceImpl::UnaryCalls::FinishWaiting(const grpc::Status& status) {
  std::deque<UnaryCall*> refused;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (UnaryCall* call : waiting_) call->waiting_ = false;
    refused.swap(waiting_);
  }
  for (UnaryCall* call : refused) call->FinishWith(status);
}

void AttentionServiceImpl::UnaryCall::OnDone() {
  tsan_hand_off::Acquire(this);
  if (timed_) service_->reading_calls_.Close(this);
  delete this;  // returns the call's memory to the budget
}

}  // namespace attnserve
