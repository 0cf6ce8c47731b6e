#include "server/app/health_probe.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
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

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// TLS that accepts whatever certificate answers (see ProbeHealth), presenting the server's own
// under mutual TLS; null when the files cannot be read.
std::shared_ptr<grpc::ChannelCredentials> ProbeTlsCredentials(const ProbeTls& tls) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_verify_server_certs(false);
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
  if (tls.client_ca) {
    const std::string cert = ReadFile(tls.cert_file), key = ReadFile(tls.key_file);
    if (cert.empty() || key.empty()) return nullptr;
    options.set_certificate_provider(
        std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
            std::vector<grpc::experimental::IdentityKeyCertPair>{{key, cert}}));
    options.watch_identity_key_cert_pairs();
  }
  return grpc::experimental::TlsCredentials(options);
}

}  // namespace

int ProbeHealth(const std::string& address, const std::string& service, absl::Duration timeout,
                const ProbeTls& tls) {
  const std::string target = DialAddress(address);
  const std::shared_ptr<grpc::ChannelCredentials> credentials =
      tls.cert_file.empty() ? grpc::InsecureChannelCredentials() : ProbeTlsCredentials(tls);
  if (credentials == nullptr) {
    std::printf("health %s: cannot read --tls_cert_file=%s or --tls_key_file=%s\n",
                target.c_str(), tls.cert_file.c_str(), tls.key_file.c_str());
    return 1;
  }
  auto channel = grpc::CreateChannel(target, credentials);
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
