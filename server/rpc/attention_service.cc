#include "server/rpc/attention_service.h"

#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "server/rpc/decode_reactor.h"
#include "server/rpc/status_util.h"
#include "server/rpc/tsan_hand_off.h"
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
      kv_cache_budget_(limits.max_kv_cache_bytes, KvCacheObservers(metrics)),
      decode_streams_(DecodeStreams::Options{.max_streams = limits.max_decode_streams,
                                             .idle_timeout = limits.decode_idle_timeout}),
      request_threads_(RequestThreads::Options{.max_threads = limits.rpc_threads}) {
  // The server starts after this, and gRPC's threads then call the service.
  tsan_hand_off::Release(this);
}

grpc::Status AttentionServiceImpl::AdmitCall(grpc::ServerContextBase* context) {
  tsan_hand_off::Acquire(this);  // every call starts here
  // Counted before the draining check: the drain sets draining_ (StartDraining) and then waits
  // for in_flight_ to reach zero (WaitUntilIdle), so a call either sees draining_ or is waited
  // for (checking first let a call slip in between and be cut when the server shut down).
  ++in_flight_;
  if (draining_.load()) {
    --in_flight_;
    if (metrics_ != nullptr) metrics_->RecordRejected("draining");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is draining (shutting down); retry on another replica");
  }
  return grpc::Status::OK;
}

grpc::Status AttentionServiceImpl::Serve(grpc::ServerContextBase* context, absl::string_view rpc,
                                         absl::FunctionRef<absl::Status()> body) {
  if (grpc::Status admitted = AdmitCall(context); !admitted.ok()) return admitted;
  grpc::Status status = ServeRpc(rpc, body);
  EndCall();
  return status;
}

grpc::Status AttentionServiceImpl::RpcThreadsBusy() {
  if (metrics_ != nullptr) metrics_->RecordRejected("rpc_threads");
  return grpc::Status(
      grpc::StatusCode::RESOURCE_EXHAUSTED,
      absl::StrCat("all ", limits_.rpc_threads, " RPC threads are busy (--rpc_threads)"));
}

grpc::ServerUnaryReactor* AttentionServiceImpl::ServeOnRequestThread(
    grpc::CallbackServerContext* context, absl::string_view rpc,
    std::function<absl::Status()> body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Admitted here, on gRPC's thread: a call refused (no token, draining) takes no request thread.
  if (grpc::Status admitted = AdmitCall(context); !admitted.ok()) {
    reactor->Finish(admitted);
    return reactor;
  }
  // Finish is the body's last act: the call's request, response and context end with it.
  const bool scheduled =
      request_threads_.TrySchedule([this, rpc, reactor, body = std::move(body)] {
        const grpc::Status status = ServeRpc(rpc, body);
        EndCall();
        reactor->Finish(status);
      });
  if (!scheduled) {
    EndCall();
    reactor->Finish(RpcThreadsBusy());
  }
  return reactor;
}

grpc::ServerUnaryReactor* AttentionServiceImpl::ServeCompute(grpc::CallbackServerContext* context,
                                                             absl::string_view rpc,
                                                             std::string requested_model,
                                                             ComputeBody body) {
  return ServeOnRequestThread(context, rpc, [=]() -> absl::Status {
    // The models this request uses, taken as it starts (a reload meanwhile does not change them).
    const std::shared_ptr<const ModelRegistry> models = models_->Current();
    const std::string label = ModelLabel(*models, requested_model);
    const RequestContext request_context = ContextFor(context);
    return RunCompute(context, rpc, label, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(const WorkDone work, body(request_context, *models));
      RecordWork(rpc, label, work);
      return absl::OkStatus();
    });
  });
}

grpc::ServerUnaryReactor* AttentionServiceImpl::ServeBatched(grpc::CallbackServerContext* context,
                                                             absl::string_view rpc,
                                                             std::string requested_model,
                                                             ComputeBody body) {
  return ServeOnRequestThread(context, rpc, [=]() -> absl::Status {
    // The models this request uses, taken as it starts (a reload meanwhile does not change them).
    const std::shared_ptr<const ModelRegistry> models = models_->Current();
    const std::string label = ModelLabel(*models, requested_model);
    RequestContext request_context = ContextFor(context);
    request_context.compute = [&](BatchMember& member) {
      return RunCompute(context, rpc, label, member);
    };
    ASSIGN_OR_RETURN(const WorkDone work, body(request_context, *models));
    RecordWork(rpc, label, work);
    return absl::OkStatus();
  });
}

void AttentionServiceImpl::StartDraining() { draining_ = true; }

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
  return models.Find(requested_model).ok() ? requested_model : "unknown";
}

RequestContext AttentionServiceImpl::ContextFor(grpc::ServerContextBase* context) {
  return RequestContext{limits_, tables_, [context] { return context->IsCancelled(); }, nullptr};
}

void AttentionServiceImpl::RecordWork(absl::string_view rpc, absl::string_view model_label,
                                      const WorkDone& work) {
  if (metrics_ == nullptr || work.tokens == 0) return;
  metrics_->RecordWork(rpc, model_label, static_cast<double>(work.tokens), work.flops);
}

absl::Status AttentionServiceImpl::RunCompute(grpc::ServerContextBase* context, absl::string_view rpc,
                                              const std::string& model_label,
                                              BatchMember& member) {
  const auto queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started;
  const absl::Status status = compute_pool_.Run(
      context->deadline(), [context] { return context->IsCancelled(); }, member, &started);
  RecordComputeOutcome(rpc, model_label, queued, started, status);
  return status;
}

absl::Status AttentionServiceImpl::RunCompute(grpc::ServerContextBase* context, absl::string_view rpc,
                                              const std::string& model_label,
                                              absl::FunctionRef<absl::Status()> work) {
  const auto queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started;
  const absl::Status status = compute_pool_.Run(
      context->deadline(), [context] { return context->IsCancelled(); }, work, &started);
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

grpc::ServerUnaryReactor* AttentionServiceImpl::Encode(grpc::CallbackServerContext* context,
    const v1::EncodeRequest* request, v1::EncodeResponse* response) {
  return ServeBatched(context, "Encode", request->model(),
                      [request, response](const RequestContext& call, const ModelRegistry& models) {
                        return HandleEncode(call, models, *request, response);
                      });
}

grpc::ServerUnaryReactor* AttentionServiceImpl::Attend(grpc::CallbackServerContext* context,
    const v1::AttendRequest* request, v1::AttendResponse* response) {
  return ServeBatched(context, "Attend", request->model(),
                      [request, response](const RequestContext& call, const ModelRegistry& models) {
                        return HandleAttend(call, models, *request, response);
                      });
}

grpc::ServerUnaryReactor* AttentionServiceImpl::ScaledDotProductAttention(grpc::CallbackServerContext* context,
    const v1::SdpaRequest* request, v1::SdpaResponse* response) {
  return ServeBatched(context, "ScaledDotProductAttention", "",
                      [request, response](const RequestContext& call, const ModelRegistry&) {
                        return HandleSdpa(call, *request, response);
                      });
}

grpc::ServerUnaryReactor* AttentionServiceImpl::PositionBias(grpc::CallbackServerContext* context,
    const v1::PositionBiasRequest* request, v1::PositionBiasResponse* response) {
  return ServeCompute(context, "PositionBias", request->model(),
                      [request, response](const RequestContext& call, const ModelRegistry& models) {
                        return HandlePositionBias(call, models, *request, response);
                      });
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
  reactor->Finish(Serve(context, "ListModels",
                        [&] { return HandleListModels(*models_->Current(), response); }));
  return reactor;
}

grpc::ServerUnaryReactor* AttentionServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                         const v1::GetModelRequest* request,
                                                         v1::GetModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Serve(context, "GetModel",
                        [&] { return HandleGetModel(*models_->Current(), *request, response); }));
  return reactor;
}

}  // namespace attnserve
