// The one mapping from absl::Status (core and server logic) to grpc::Status (the wire).
#ifndef ATTNSERVE_SERVER_STATUS_UTIL_H_
#define ATTNSERVE_SERVER_STATUS_UTIL_H_

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

// Prepends "<prefix>." to the message of a non-OK status, keeping its code; e.g. a core
// "sinusoidal.base=0.5 must be > 1" becomes "encoding.sinusoidal.base=0.5 must be > 1".
absl::Status WithFieldPrefix(const absl::Status& status, absl::string_view prefix);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_STATUS_UTIL_H_
