// inference.GRPCInferenceService, the KServe v2 protocol on the gRPC port: the protobuf messages
// ↔ the transport-neutral requests of model_infer.h. ModelInfer computes, so it is served like
// the attnserve.v1 unary computing RPCs (UnaryCall, server/rpc/unary_call.h: memory budget before
// reading, a request thread, batching); the health and metadata RPCs answer on gRPC's thread.
#ifndef ATTNSERVE_SERVER_KSERVE_GRPC_INFERENCE_SERVICE_H_
#define ATTNSERVE_SERVER_KSERVE_GRPC_INFERENCE_SERVICE_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/models/model_store.h"
#include "server/requests/request_context.h"

namespace attnserve {

// ModelInfer's adapter, called by UnaryCall: the message → InferRequest → RunModelInfer → the
// message. Raw and typed contents are never mixed: raw_input_contents has one entry per input
// (then no input has typed contents) or none; the response sends its outputs raw when the
// request did, or when an output is BF16 or FP16 (which have no typed field), typed otherwise.
absl::StatusOr<WorkDone> HandleModelInfer(const RequestContext& context,
                                          const ModelRegistry& models,
                                          const inference::ModelInferRequest& request,
                                          inference::ModelInferResponse* response);

// What a parsed ModelInferRequest holds in memory, from above: the message, its strings, its
// repeated fields at their element size, and each map entry at kMapEntryBytes plus its strings.
// (Not Reflection::SpaceUsedLong, which crashed on its map fields in the ThreadSanitizer build.)
int64_t ModelInferRequestHeldBytes(const inference::ModelInferRequest& request);

class GrpcInferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  struct Options {
    std::string server_version;      // ServerMetadata's version
    std::function<bool()> draining;  // true once the server drains: not ready
  };
  // `models` must outlive the service. ModelInfer is marked generic: the server's generic
  // service (AttentionServiceImpl::unary_calls) serves it.
  GrpcInferenceService(const ModelStore* models, Options options);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;

 private:
  const ModelStore* models_;
  const Options options_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_GRPC_INFERENCE_SERVICE_H_
