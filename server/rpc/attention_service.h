// attnserve.v1.AttentionService: each RPC converts the request, calls the core, and maps the
// status. Metrics are recorded by the interceptor in server/observability/metrics.h, not here.
#ifndef ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_
#define ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "core/encodings/position_table_cache.h"
#include "server/rpc/auth.h"
#include "server/requests/compute_pool.h"
#include "server/observability/metrics.h"
#include "server/models/model_store.h"

namespace attnserve {

// Per-request bounds, checked before anything request-sized is allocated.
struct ServiceLimits {
  int64_t max_batch = 64;               // batch dimension of any input
  int64_t max_sequence_length = 8192;   // seq / q_len / kv_len
  // B·H·Sq·Sk, the size of the score matrix one request may need (2^26 f32 = 256 MiB).
  int64_t max_attention_elements = int64_t{1} << 26;
  // The largest response (--max_message_bytes): a request whose response would not fit is
  // rejected before anything is computed.
  int64_t max_response_bytes = int64_t{64} << 20;
  // All Decode streams' K/V caches together (--max_kv_cache_bytes); a step that would pass it is
  // RESOURCE_EXHAUSTED.
  int64_t max_kv_cache_bytes = int64_t{1} << 30;
  // Computations running at once (--compute_workers) and waiting for a turn
  // (--compute_queue_depth); past both, RESOURCE_EXHAUSTED at once.
  int compute_workers = 1;
  int compute_queue_depth = 64;
};

class AttentionServiceImpl final : public v1::AttentionService::Service {
 public:
  // `models` (and `metrics` and `authenticator`, which may be null) must outlive the service.
  // Each request uses the models current when it starts, to its end (ModelStore).
  // With an authenticator every call must carry its bearer token (UNAUTHENTICATED otherwise).
  AttentionServiceImpl(const ModelStore* models, ServiceLimits limits,
                       ServerMetrics* metrics = nullptr,
                       const TokenAuthenticator* authenticator = nullptr)
      : models_(models),
        limits_(limits),
        metrics_(metrics),
        authenticator_(authenticator),
        compute_pool_(limits.compute_workers, limits.compute_queue_depth,
                      [metrics](int busy, int waiting) {
                        if (metrics != nullptr) metrics->ObserveCompute(busy, waiting);
                      }) {}

  // Draining: from now on every RPC answers UNAVAILABLE; the ones already running go on.
  void StartDraining();
  // Waits until no RPC is running (true) or `deadline` passes (false).
  bool WaitUntilIdle(std::chrono::system_clock::time_point deadline) const;

  grpc::Status Encode(grpc::ServerContext* context, const v1::EncodeRequest* request,
                      v1::EncodeResponse* response) override;
  grpc::Status Attend(grpc::ServerContext* context, const v1::AttendRequest* request,
                      v1::AttendResponse* response) override;
  grpc::Status Decode(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream)
      override;
  grpc::Status ScaledDotProductAttention(grpc::ServerContext* context,
                                         const v1::SdpaRequest* request,
                                         v1::SdpaResponse* response) override;
  grpc::Status PositionBias(grpc::ServerContext* context, const v1::PositionBiasRequest* request,
                            v1::PositionBiasResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const v1::GetModelRequest* request,
                        v1::GetModelResponse* response) override;

 private:
  // `models`: the snapshot the handler took when the request started (ModelStore).
  absl::Status DoEncode(const ModelRegistry& models, const v1::EncodeRequest& request,
                        v1::EncodeResponse* response) const;
  // is_cancelled: polled between attention tiles (the RPC's cancellation or deadline).
  absl::Status DoAttend(const ModelRegistry& models, const v1::AttendRequest& request,
                        std::function<bool()> is_cancelled, v1::AttendResponse* response) const;
  absl::Status DoSdpa(const v1::SdpaRequest& request, std::function<bool()> is_cancelled,
                      v1::SdpaResponse* response) const;
  // Serves one Decode stream: the first message names the model; each message's tokens continue
  // the sequence. The stream's K/V cache is accounted in kv_cache_bytes_ and freed at the end.
  absl::Status DoDecode(grpc::ServerContext* context,
                        grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream);
  absl::Status DoPositionBias(const ModelRegistry& models, const v1::PositionBiasRequest& request,
                              v1::PositionBiasResponse* response) const;

  // INVALID_ARGUMENT naming the size when a batch, sequence or score size exceeds the limits;
  // `q_field` and `kv_field` name the request fields the lengths come from.
  absl::Status CheckLimits(int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                           absl::string_view q_field = "q_len",
                           absl::string_view kv_field = "kv_len") const;
  // Every RPC's body: UNAVAILABLE while draining, else ServeRpc, counted in in_flight_.
  // Runs an RPC's body unless the server is draining or the call is not authenticated.
  grpc::Status Serve(grpc::ServerContext* context, absl::string_view rpc,
                     absl::FunctionRef<absl::Status()> body);

  // Metrics, when a ServerMetrics was given.
  void RecordWork(absl::string_view rpc, absl::string_view model, int64_t tokens,
                  double flops) const;
  void ObserveDecode() const;

  // Runs `work` on a compute worker for the RPC of `context` (its deadline bounds the wait),
  // recording the wait and the computation under `rpc` and `model_label` (ModelLabel).
  absl::Status RunCompute(grpc::ServerContext* context, absl::string_view rpc,
                          const std::string& model_label, absl::FunctionRef<absl::Status()> work);

  // The `model` label for a requested model: its name if `models` has it, "inline" when none is
  // named (weight-free RPCs), "unknown" otherwise — so clients cannot grow the label set.
  static std::string ModelLabel(const ModelRegistry& models, const std::string& requested_model);

  // INVALID_ARGUMENT naming `field` when a response holding a FLOAT32 `tensor` of `shape` (its
  // elements bounded by CheckLimits) plus `other_bytes` of other data exceeds the message limit.
  absl::Status CheckResponseSize(absl::string_view field, absl::string_view tensor,
                                 const std::vector<int64_t>& shape, int64_t other_bytes) const;

  const ModelStore* models_;
  ServiceLimits limits_;
  // sin/cos tables shared by all requests (thread-safe).
  mutable PositionTableCache tables_;
  ServerMetrics* metrics_;  // may be null
  const TokenAuthenticator* authenticator_;  // may be null
  ComputePool compute_pool_;
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};  // RPC bodies running now (Decode: the whole stream)
  std::atomic<int64_t> decode_streams_{0};  // open Decode streams
  // Bytes held by all Decode streams' K/V caches.
  std::atomic<int64_t> kv_cache_bytes_{0};
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ATTENTION_SERVICE_H_
