#include "server/app/health_probe.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/observability/metrics.h"

namespace attnserve {

std::string DialAddress(const std::string& listen_address) {
  for (const char* wildcard : {"0.0.0.0:", "[::]:"}) {
    if (absl::StartsWith(listen_address, wildcard)) {
      return absl::StrCat(absl::StartsWith(wildcard, "[") ? "[::1]:" : "127.0.0.1:",
                          listen_address.substr(std::string(wildcard).size()));
    }
  }
  return listen_address;
}

int ProbeHealth(const std::string& address, const std::string& service, absl::Duration timeout) {
  const std::string target = DialAddress(address);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::printf("health %s: %s: %s\n", target.c_str(),
                std::string(StatusCodeName(status.error_code())).c_str(),
                status.error_message().c_str());
    return 1;
  }
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  std::printf("health %s: %s\n", target.c_str(), name.c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace attnserve
