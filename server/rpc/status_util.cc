#include "server/rpc/status_util.h"

#include <exception>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace attnserve {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status ServeRpc(absl::string_view rpc, absl::FunctionRef<absl::Status()> body) {
  absl::Status status;
  try {
    status = body();
  } catch (const std::bad_alloc&) {
    status = absl::ResourceExhaustedError(absl::StrCat("out of memory computing ", rpc));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat(rpc, " failed: ", e.what()));
  }
  return ToGrpcStatus(status);
}

}  // namespace attnserve
