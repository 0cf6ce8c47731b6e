#include "server/rpc/attention_service.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "server/kserve/operation_models.h"
#include "server/rpc/decode_reactor.h"
#include "server/rpc/status_util.h"
#include "server/rpc/tsan_hand_off.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/unary_rpcs.h"

namespace attnserve {

namespace {


// The Decode gauges and the budget's refusals, when there are metrics.
KvCacheBudget::Observers KvCacheObservers(ServerMetrics* metrics) {
  if (metrics == nullptr) return {};
  return {[metrics](int64_t streams, int64_t bytes) { metrics->ObserveDecode(streams, bytes); },
          [metrics] { metrics->RecordRejected("kv_cache_budget"); }};
}

// The batch size histograms, when there are metrics.
ComputePool::BatchObserver BatchObserver(ServerMetrics* metrics) {
  if (metrics == nullptr) return nullptr;
  return [metrics](absl::Span<BatchMember* const> batch) {
    int64_t tokens = 0;
    for (const BatchMember* member : batch) tokens += member->tokens();
    metrics->RecordBatch(batch.front()->rpc(), batch.front()->model(),
                         static_cast<int>(batch.size()), tokens);
  };
}

}  // namespace

AttentionServiceImpl::AttentionServiceImpl(const ModelStore* models, ServiceLimits limits,
                                           ServerMetrics* metrics)
    : models_(models),
      limits_(limits),
      metrics_(metrics),
      compute_pool_(limits.compute_workers, limits.compute_queue_depth,
                    [metrics](int busy, int waiting) {
                      if (metrics != nullptr) metrics->ObserveCompute(busy, waiting);
                    },
                    limits.batching, BatchObserver(metrics)),
      memory_budget_(
          limits.max_request_memory_bytes,
          [metrics](int64_t bytes) {
            if (metrics != nullptr) metrics->ObserveRequestMemory(bytes);
          },
          // Returned memory may let calls waiting to be read start (set once they exist).
          [this] {
            if (unary_calls_ != nullptr) unary_calls_->ReadWaiting();
          }),
      kv_cache_budget_(limits.max_kv_cache_bytes, KvCacheObservers(metrics)),
      decode_streams_(ClientWaits::Options{.max_streams = limits.max_decode_streams,
                                           .idle_timeout = limits.decode_idle_timeout}),
      reading_calls_(ClientWaits::Options{.max_streams = std::numeric_limits<int64_t>::max(),
                                          .idle_timeout = limits.request_read_timeout}),
      unary_calls_(std::make_unique<UnaryCalls>(
          this, static_cast<size_t>(std::max(limits.compute_queue_depth, 0)))),
      request_threads_(RequestThreads::Options{.max_threads = limits.rpc_threads}) {
  // The unary computing methods are served by unary_calls_ (generic), which reads their messages
  // only once there is room for them.
  const google::protobuf::ServiceDescriptor* descriptor =
      v1::EncodeRequest::descriptor()->file()->FindServiceByName("AttentionService");
  for (const char* method : {"Encode", "Attend", "ScaledDotProductAttention", "PositionBias"}) {
    MarkMethodGeneric(descriptor->FindMethodByName(method)->index());
  }
  // The server starts after this, and gRPC's threads then call the service.
  tsan_hand_off::Release(this);
}

absl::Status AttentionServiceImpl::AdmitCall() {
  tsan_hand_off::Acquire(this);  // every call starts here
  // Counted before the draining check: the drain sets draining_ (StartDraining) and then waits
  // for in_flight_ to reach zero (WaitUntilIdle), so a call either sees draining_ or is waited
  // for (checking first let a call slip in between and be cut when the server shut down).
  ++in_flight_;
  if (draining_.load()) {
    --in_flight_;
    if (metrics_ != nullptr) metrics_->RecordRejected("draining");
    return absl::UnavailableError(
        "the server is draining (shutting down); retry on another replica");
  }
  return absl::OkStatus();
}

AttentionServiceImpl::CallControl AttentionServiceImpl::ControlOf(
    grpc::ServerContextBase* context) {
  return CallControl{context->deadline(), [context] { return context->IsCancelled(); }};
}

absl::Status AttentionServiceImpl::ScheduleBody(std::function<void()> body) {
  if (request_threads_.TrySchedule(std::move(body))) return absl::OkStatus();
  if (metrics_ != nullptr) metrics_->RecordRejected("rpc_threads");
  return absl::ResourceExhaustedError(
      absl::StrCat("all ", limits_.rpc_threads, " RPC threads are busy (--rpc_threads)"));
}

grpc::Status AttentionServiceImpl::Serve(absl::string_view rpc,
                                         absl::FunctionRef<absl::Status()> body) {
  if (absl::Status admitted = AdmitCall(); !admitted.ok()) return ToGrpcStatus(admitted);
  grpc::Status status = ServeRpc(rpc, body);
  EndCall();
  return status;
}

absl::Status AttentionServiceImpl::ServeUnary(
    const CallControl& call, absl::string_view rpc, bool batched, MemoryHold& memory,
    const std::string& requested_model,
    absl::FunctionRef<absl::StatusOr<WorkDone>(const RequestContext&, const ModelRegistry&)>
        body) {
  // The models this request uses, taken as it starts (a reload meanwhile does not change them).
  const std::shared_ptr<const ModelRegistry> models = models_->Current();
  const std::string label = ModelLabel(*models, requested_model);
  const auto admitted = std::chrono::steady_clock::now();
  RequestContext request_context = ContextFor(call, memory);
  const auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const WorkDone work, body(request_context, *models));
    RecordWork(rpc, label, work);
    return absl::OkStatus();
  };
  absl::Status status;
  if (batched) {
    request_context.compute = [&](BatchMember& member) {
      return RunCompute(call, rpc, label, member);
    };
    status = run();
  } else {
    status = RunCompute(call, rpc, label, run);
  }
  if (metrics_ != nullptr) {
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - admitted;
    metrics_->RecordRequest(rpc, label,
                            StatusCodeName(static_cast<grpc::StatusCode>(status.code())),
                            seconds.count());
  }
  return status;
}

AttentionServiceImpl::~AttentionServiceImpl() = default;

grpc::CallbackGenericService* AttentionServiceImpl::unary_calls() { return unary_calls_.get(); }

void AttentionServiceImpl::StartDraining() {
  draining_ = true;
  unary_calls_->FinishWaiting(grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      "the server is draining (shutting down); retry on another replica"));
}

bool AttentionServiceImpl::WaitUntilIdle(std::chrono::system_clock::time_point deadline) const {
  while (in_flight_.load() > 0) {
    if (std::chrono::system_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::string AttentionServiceImpl::ModelLabel(const ModelRegistry& models,
                                             const std::string& requested_model) {
  if (requested_model.empty()) return "inline";
  // The KServe v2 door's operation models are a fixed few names.
  if (IsOperationModel(requested_model)) return requested_model;
  return models.Find(requested_model).ok() ? requested_model : "unknown";
}

RequestContext AttentionServiceImpl::ContextFor(const CallControl& call, MemoryHold& memory) {
  return RequestContext{limits_, tables_, call.is_cancelled, nullptr,
                        [this, &memory](int64_t bytes) { return ReserveMemory(memory, bytes); }};
}

absl::Status AttentionServiceImpl::ReserveMemory(MemoryHold& memory, int64_t bytes) {
  absl::Status status = memory.Add(bytes);
  if (!status.ok() && metrics_ != nullptr) metrics_->RecordRejected("memory_budget");
  return status;
}

absl::Status AttentionServiceImpl::ResizeMemory(MemoryHold& memory, int64_t bytes) {
  absl::Status status = memory.ResizeTo(bytes);
  if (!status.ok() && metrics_ != nullptr) metrics_->RecordRejected("memory_budget");
  return status;
}

void AttentionServiceImpl::RecordWork(absl::string_view rpc, absl::string_view model_label,
                                      const WorkDone& work) {
  if (metrics_ == nullptr || work.tokens == 0) return;
  metrics_->RecordWork(rpc, model_label, static_cast<double>(work.tokens), work.flops);
}

absl::Status AttentionServiceImpl::RunCompute(const CallControl& call, absl::string_view rpc,
                                              const std::string& model_label,
                                              BatchMember& member) {
  const auto queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started;
  const absl::Status status =
      compute_pool_.Run(call.deadline, call.is_cancelled, member, &started);
  RecordComputeOutcome(rpc, model_label, queued, started, status);
  return status;
}

absl::Status AttentionServiceImpl::RunCompute(const CallControl& call, absl::string_view rpc,
                                              const std::string& model_label,
                                              absl::FunctionRef<absl::Status()> work) {
  const auto queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started;
  const absl::Status status = compute_pool_.Run(call.deadline, call.is_cancelled, work, &started);
  RecordComputeOutcome(rpc, model_label, queued, started, status);
  return status;
}

void AttentionServiceImpl::RecordComputeOutcome(absl::string_view rpc,
                                                const std::string& model_label,
                                                std::chrono::steady_clock::time_point queued,
                                                std::chrono::steady_clock::time_point started,
                                                const absl::Status& status) {
  if (metrics_ == nullptr) return;
  if (started != std::chrono::steady_clock::time_point()) {
    const std::chrono::duration<double> waited = started - queued;
    const std::chrono::duration<double> ran = std::chrono::steady_clock::now() - started;
    metrics_->RecordCompute(rpc, model_label, waited.count(), ran.count());
  } else if (status.code() == absl::StatusCode::kResourceExhausted) {
    metrics_->RecordRejected("queue_full");
  } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    metrics_->RecordRejected("deadline");
  } else if (status.code() == absl::StatusCode::kCancelled) {
    metrics_->RecordRejected("cancelled");
  }
}

grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>* AttentionServiceImpl::Decode(
    grpc::CallbackServerContext* context) {
  return new DecodeReactor(this, context);
}

// The model RPCs answer on gRPC's thread: they neither block nor compute.
grpc::ServerUnaryReactor* AttentionServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                           const v1::ListModelsRequest*,
                                                           v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Serve("ListModels",
                        [&] { return HandleListModels(*models_->Current(), response); }));
  return reactor;
}

grpc::ServerUnaryReactor* AttentionServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                         const v1::GetModelRequest* request,
                                                         v1::GetModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Serve("GetModel",
                        [&] { return HandleGetModel(*models_->Current(), *request, response); }));
  return reactor;
}

}  // namespace attnserve
