// attnserve.v1.AttentionService, the gRPC shell: draining, the compute queue and
// the work metrics. Every RPC uses gRPC's callback API; what blocks (a computation waiting for
// its batch: a unary call's body, a Decode step) runs on RequestThreads. Each RPC's request → core → response lives in its own adapter
// (server/rpc/*_rpc.cc, declared in unary_rpcs.h and decode_rpc.h) over the transport-neutral
// handlers in server/requests/.
#ifndef ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_
#define ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "grpcpp/generic/async_generic_service.h"
#include "google/protobuf/message_lite.h"
#include "core/encodings/position_table_cache.h"
#include "server/models/model_store.h"
#include "server/observability/metrics.h"
#include "server/requests/compute_pool.h"
#include "server/requests/decode_session.h"
#include "server/requests/memory_budget.h"
#include "server/requests/request_context.h"
#include "server/requests/service_limits.h"
#include "server/rpc/client_waits.h"
#include "server/rpc/request_threads.h"

namespace attnserve {

using AttentionServiceBase = v1::AttentionService::CallbackService;

class AttentionServiceImpl final : public AttentionServiceBase {
 public:
  // `models` (and `metrics`, which may be null) must outlive the service. Each request uses the
  // models current when it starts, to its end (ModelStore). Who may call is decided before a
  // call gets here, by the server's credentials (caller_credentials.h).
  AttentionServiceImpl(const ModelStore* models, ServiceLimits limits,
                       ServerMetrics* metrics = nullptr);
  ~AttentionServiceImpl() override;

  // The generic service that serves the unary computing RPCs (unary_call.h), to be registered
  // with the server beside this one.
  grpc::CallbackGenericService* unary_calls();

  // Draining: from now on every RPC answers UNAVAILABLE; the ones already running go on.
  void StartDraining();
  bool draining() const { return draining_.load(); }
  // Waits until no RPC is running (true) or `deadline` passes (false).
  bool WaitUntilIdle(std::chrono::system_clock::time_point deadline) const;

  // --- The request path for the server's other doors (the KServe v2 REST door,
  // server/kserve/http_door.h): their computing calls are admitted, drained, threaded, budgeted,
  // batched and measured as this service's own unary calls are.

  // A call's deadline and cancellation, whatever its transport.
  struct CallControl {
    std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
    std::function<bool()> is_cancelled = [] { return false; };
  };
  // UNAVAILABLE while draining (counted); else OK, and the call counts in flight until EndCall.
  absl::Status AdmitCall();
  void EndCall() { --in_flight_; }
  // Runs `body` on a request thread; RESOURCE_EXHAUSTED (counted) past --rpc_threads.
  absl::Status ScheduleBody(std::function<void()> body);
  MemoryBudget* memory_budget() { return &memory_budget_; }
  const ServiceLimits& limits() const { return limits_; }
  // memory.Add(bytes) or memory.ResizeTo(bytes), a refusal counted (reason memory_budget).
  absl::Status ReserveMemory(MemoryHold& memory, int64_t bytes);
  absl::Status ResizeMemory(MemoryHold& memory, int64_t bytes);
  // A unary computing call's body, on a request thread, with the models current as it starts:
  // `body` on a compute worker, or (`batched`) on this thread, sending its computation to a
  // worker through the RequestContext's `compute`, where it joins the requests of its kind
  // waiting with it (ComputePool). Its work is recorded under `rpc` and the model label of
  // `requested_model`; `memory` is the call's share of the memory budget.
  absl::Status ServeUnary(const CallControl& call, absl::string_view rpc, bool batched,
                          MemoryHold& memory, const std::string& requested_model,
                          absl::FunctionRef<absl::StatusOr<WorkDone>(const RequestContext&,
                                                                     const ModelRegistry&)>
                              body);

  grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>* Decode(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::GetModelResponse* response) override;

 private:
  // A Decode stream (decode_reactor.cc).
  class DecodeReactor;
  // A unary computing call and the generic service that makes them (unary_call.h).
  class UnaryCall;
  class UnaryCalls;

  // The control of a gRPC call: its deadline and cancellation.
  static CallControl ControlOf(grpc::ServerContextBase* context);
  // A call's body, admitted (AdmitCall, EndCall): the body's status (ServeRpc), or the refusal.
  grpc::Status Serve(absl::string_view rpc, absl::FunctionRef<absl::Status()> body);

  // Computes `member` (or runs `work`) on a compute worker for `call` (its deadline bounds the
  // wait), recording the wait and the computation under `rpc` and `model_label` (ModelLabel).
  absl::Status RunCompute(const CallControl& call, absl::string_view rpc,
                          const std::string& model_label, BatchMember& member);
  absl::Status RunCompute(const CallControl& call, absl::string_view rpc,
                          const std::string& model_label, absl::FunctionRef<absl::Status()> work);
  // The metrics of a computation queued at `queued`: its wait and run when it `started`, else
  // the reason it was refused.
  void RecordComputeOutcome(absl::string_view rpc, const std::string& model_label,
                            std::chrono::steady_clock::time_point queued,
                            std::chrono::steady_clock::time_point started,
                            const absl::Status& status);
  // Counts a computed request's tokens and FLOPs (work that touched no tokens is not counted).
  void RecordWork(absl::string_view rpc, absl::string_view model_label, const WorkDone& work);
  // The request context of a call: the limits, the shared tables, the call's cancellation, its
  // memory reservation.
  RequestContext ContextFor(const CallControl& call, MemoryHold& memory);

  // The `model` label for a requested model: its name if `models` has it, "inline" when none is
  // named (weight-free RPCs), "unknown" otherwise — so clients cannot grow the label set.
  static std::string ModelLabel(const ModelRegistry& models, const std::string& requested_model);

  const ModelStore* models_;
  const ServiceLimits limits_;
  PositionTableCache tables_;  // sin/cos tables shared by all requests (thread-safe)
  ServerMetrics* metrics_;     // may be null
  ComputePool compute_pool_;
  MemoryBudget memory_budget_;     // all unary calls' requests, computations and answers
  KvCacheBudget kv_cache_budget_;  // all Decode streams' caches
  ClientWaits decode_streams_;     // the open ones: their cap and idle timeout
  ClientWaits reading_calls_;      // unary calls reading their message: their read timeout
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};  // RPC bodies running now (Decode: the whole stream)
  std::unique_ptr<UnaryCalls> unary_calls_;
  // Last: destroyed first, it waits for the bodies still running, which use the members above.
  RequestThreads request_threads_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_
