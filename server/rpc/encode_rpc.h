// attnserve.v1 Encode: the protobuf request → EncodeCall → RunEncode → the protobuf response.
#ifndef ATTNSERVE_SERVER_RPC_ENCODE_RPC_H_
#define ATTNSERVE_SERVER_RPC_ENCODE_RPC_H_

#include "absl/status/statusor.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"

namespace attnserve {

// `models`: the snapshot the call took as it started.
absl::StatusOr<WorkDone> HandleEncode(const RequestContext& context, const ModelRegistry& models,
                                      const v1::EncodeRequest& request,
                                      v1::EncodeResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_ENCODE_RPC_H_
