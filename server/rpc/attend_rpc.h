// attnserve.v1 Attend: the protobuf request → AttendCall → RunAttend → the protobuf response.
#ifndef ATTNSERVE_SERVER_RPC_ATTEND_RPC_H_
#define ATTNSERVE_SERVER_RPC_ATTEND_RPC_H_

#include "absl/status/statusor.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

// `models`: the snapshot the call took as it started.
absl::StatusOr<WorkDone> HandleAttend(const RequestContext& context, const ModelRegistry& models,
                                      const v1::AttendRequest& request,
                                      v1::AttendResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ATTEND_RPC_H_
