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
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "core/encodings/position_table_cache.h"
#include "server/models/model_store.h"
#include "server/observability/metrics.h"
#include "server/requests/compute_pool.h"
#include "server/requests/decode_session.h"
#include "server/requests/request_context.h"
#include "server/requests/service_limits.h"
#include "server/rpc/decode_streams.h"
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

  // Draining: from now on every RPC answers UNAVAILABLE; the ones already running go on.
  void StartDraining();
  // Waits until no RPC is running (true) or `deadline` passes (false).
  bool WaitUntilIdle(std::chrono::system_clock::time_point deadline) const;

  grpc::ServerUnaryReactor* Encode(grpc::CallbackServerContext* context,
                                   const v1::EncodeRequest* request,
                                   v1::EncodeResponse* response) override;
  grpc::ServerUnaryReactor* Attend(grpc::CallbackServerContext* context,
                                   const v1::AttendRequest* request,
                                   v1::AttendResponse* response) override;
  grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>* Decode(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ScaledDotProductAttention(grpc::CallbackServerContext* context,
                                                      const v1::SdpaRequest* request,
                                                      v1::SdpaResponse* response) override;
  grpc::ServerUnaryReactor* PositionBias(grpc::CallbackServerContext* context,
                                         const v1::PositionBiasRequest* request,
                                         v1::PositionBiasResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::GetModelResponse* response) override;

 private:
  // An adapter: the call's context and models snapshot → its work. It runs on a request thread
  // while the call's request and response live (until the call finishes).
  using ComputeBody =
      std::function<absl::StatusOr<WorkDone>(const RequestContext&, const ModelRegistry&)>;

  // A Decode stream (decode_reactor.cc).
  class DecodeReactor;

  // UNAVAILABLE while draining; else OK, and the call counts in in_flight_ until EndCall.
  grpc::Status AdmitCall(grpc::ServerContextBase* context);
  void EndCall() { --in_flight_; }
  // A call's body, admitted (AdmitCall, EndCall): the body's status (ServeRpc), or the refusal.
  grpc::Status Serve(grpc::ServerContextBase* context, absl::string_view rpc,
                     absl::FunctionRef<absl::Status()> body);
  // RESOURCE_EXHAUSTED for a body RequestThreads refused (--rpc_threads), counted.
  grpc::Status RpcThreadsBusy();
  // A unary call whose body may block: admitted (AdmitCall) here, then the body on a request
  // thread (ServeRpc), and the call finishes with its status; RESOURCE_EXHAUSTED at once when
  // --rpc_threads bodies are running.
  grpc::ServerUnaryReactor* ServeOnRequestThread(grpc::CallbackServerContext* context,
                                                 absl::string_view rpc,
                                                 std::function<absl::Status()> body);
  // The unary computing RPCs: `body` on a compute worker with the models current when the call
  // starts, its work recorded under `rpc` and the model label of `requested_model`.
  grpc::ServerUnaryReactor* ServeCompute(grpc::CallbackServerContext* context,
                                         absl::string_view rpc, std::string requested_model,
                                         ComputeBody body);
  // The batching RPCs: the same, but `body` runs on the request thread (converting and checking
  // the request) and sends its computation to a worker through the RequestContext's `compute`,
  // where it joins the requests of its kind waiting with it (ComputePool).
  grpc::ServerUnaryReactor* ServeBatched(grpc::CallbackServerContext* context,
                                         absl::string_view rpc, std::string requested_model,
                                         ComputeBody body);

  // Computes `member` (or runs `work`) on a compute worker for the RPC of `context` (its deadline
  // bounds the wait), recording the wait and the computation under `rpc` and `model_label`
  // (ModelLabel).
  absl::Status RunCompute(grpc::ServerContextBase* context, absl::string_view rpc,
                          const std::string& model_label, BatchMember& member);
  absl::Status RunCompute(grpc::ServerContextBase* context, absl::string_view rpc,
                          const std::string& model_label, absl::FunctionRef<absl::Status()> work);
  // The metrics of a computation queued at `queued`: its wait and run when it `started`, else
  // the reason it was refused.
  void RecordComputeOutcome(absl::string_view rpc, const std::string& model_label,
                            std::chrono::steady_clock::time_point queued,
                            std::chrono::steady_clock::time_point started,
                            const absl::Status& status);
  // Counts a computed request's tokens and FLOPs (work that touched no tokens is not counted).
  void RecordWork(absl::string_view rpc, absl::string_view model_label, const WorkDone& work);
  // The request context of a call: the limits, the shared tables, the call's cancellation.
  RequestContext ContextFor(grpc::ServerContextBase* context);

  // The `model` label for a requested model: its name if `models` has it, "inline" when none is
  // named (weight-free RPCs), "unknown" otherwise — so clients cannot grow the label set.
  static std::string ModelLabel(const ModelRegistry& models, const std::string& requested_model);

  const ModelStore* models_;
  const ServiceLimits limits_;
  PositionTableCache tables_;  // sin/cos tables shared by all requests (thread-safe)
  ServerMetrics* metrics_;     // may be null
  ComputePool compute_pool_;
  KvCacheBudget kv_cache_budget_;  // all Decode streams' caches
  DecodeStreams decode_streams_;   // the open ones: their cap and idle timeout
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};  // RPC bodies running now (Decode: the whole stream)
  // Last: destroyed first, it waits for the bodies still running, which use the members above.
  RequestThreads request_threads_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_
