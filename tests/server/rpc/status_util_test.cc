#include "server/rpc/status_util.h"

#include <new>
#include <stdexcept>
#include <string>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

TEST(StatusUtilTest, ToGrpcStatusKeepsCodeAndMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const grpc::Status status = ToGrpcStatus(absl::InvalidArgumentError("q_len=0 must be >= 1"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "q_len=0 must be >= 1");
}

TEST(StatusUtilTest, ServeRpcMapsTheBodysStatus) {
  const grpc::Status ok = ServeRpc("Encode", [] { return absl::OkStatus(); });
  EXPECT_TRUE(ok.ok());
  const grpc::Status not_found =
      ServeRpc("GetModel", [] { return absl::NotFoundError("model=\"x\" is not loaded"); });
  EXPECT_EQ(not_found.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(not_found.error_message(), "model=\"x\" is not loaded");
}

TEST(StatusUtilTest, ServeRpcTurnsBadAllocIntoResourceExhausted) {
  const grpc::Status status =
      ServeRpc("Attend", []() -> absl::Status { throw std::bad_alloc(); });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status.error_message(), "out of memory computing Attend");
}

TEST(StatusUtilTest, ServeRpcTurnsOtherExceptionsIntoInternal) {
  const grpc::Status status = ServeRpc("PositionBias", []() -> absl::Status {
    throw std::length_error("vector::_M_default_append");
  });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(status.error_message().find("vector::_M_default_append"), std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace attnserve
