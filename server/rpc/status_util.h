// The one mapping from absl::Status (core and server logic) to grpc::Status (the wire).
#ifndef ATTNSERVE_SERVER_RPC_STATUS_UTIL_H_
#define ATTNSERVE_SERVER_RPC_STATUS_UTIL_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace attnserve {

// Same code (absl and gRPC share the canonical code numbers) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Runs one RPC's work and maps its status with ToGrpcStatus. An exception never escapes into
// gRPC's threads: std::bad_alloc becomes RESOURCE_EXHAUSTED "out of memory computing <rpc>", any
// other std::exception INTERNAL with its what(). Every RPC method goes through this.
grpc::Status ServeRpc(absl::string_view rpc, absl::FunctionRef<absl::Status()> body);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_STATUS_UTIL_H_
