// attnserve.v1 ScaledDotProductAttention: the protobuf request → SdpaCall → RunSdpa → the
// protobuf response.
#ifndef ATTNSERVE_SERVER_RPC_SDPA_RPC_H_
#define ATTNSERVE_SERVER_RPC_SDPA_RPC_H_

#include "absl/status/statusor.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/requests/request_context.h"

namespace attnserve {

absl::StatusOr<WorkDone> HandleSdpa(const RequestContext& context, const v1::SdpaRequest& request,
                                    v1::SdpaResponse* response);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_SDPA_RPC_H_
