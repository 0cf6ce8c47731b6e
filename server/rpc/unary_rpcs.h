// The unary attnserve.v1 RPCs, one adapter each (defined in <rpc>_rpc.cc): the protobuf request
// → the transport-neutral call (server/requests) → its handler → the protobuf response. The
// computing ones return what they computed for the shell's metrics. `models`: the snapshot the
// call took as it started.
#ifndef ATTNSERVE_SERVER_RPC_UNARY_RPCS_H_
#define ATTNSERVE_SERVER_RPC_UNARY_RPCS_H_

#include "absl/status/statusor.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

absl::StatusOr<WorkDone> HandleEncode(const RequestContext& context, const ModelRegistry& models,
                                      const v1::EncodeRequest& request,
                                      v1::EncodeResponse* response);

absl::StatusOr<WorkDone> HandleAttend(const RequestContext& context, const ModelRegistry& models,
                                      const v1::AttendRequest& request,
                                      v1::AttendResponse* response);

absl::StatusOr<WorkDone> HandleSdpa(const RequestContext& context, const v1::SdpaRequest& request,
                                    v1::SdpaResponse* response);

absl::StatusOr<WorkDone> HandlePositionBias(const RequestContext& context,
                                            const ModelRegistry& models,
                                            const v1::PositionBiasRequest& request,
                                            v1::PositionBiasResponse* response);

// The model RPCs (model_rpcs.cc): they neither compute nor block.
absl::Status HandleListModels(const ModelRegistry& models, v1::ListModelsResponse* response);
absl::Status HandleGetModel(const ModelRegistry& models, const v1::GetModelRequest& request,
                            v1::GetModelResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_UNARY_RPCS_H_
