// attnserve.v1 PositionBias: the protobuf request → PositionBiasCall → RunPositionBias → the
// protobuf response.
#ifndef ATTNSERVE_SERVER_RPC_POSITION_BIAS_RPC_H_
#define ATTNSERVE_SERVER_RPC_POSITION_BIAS_RPC_H_

#include "absl/status/statusor.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

// `models`: the snapshot the call took as it started.
absl::StatusOr<WorkDone> HandlePositionBias(const RequestContext& context,
                                            const ModelRegistry& models,
                                            const v1::PositionBiasRequest& request,
                                            v1::PositionBiasResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_POSITION_BIAS_RPC_H_
