#include "server/rpc/caller_credentials.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "grpc/grpc.h"
#include "grpc/grpc_security.h"
#include "server/rpc/tsan_hand_off.h"
#include "spdlog/spdlog.h"

namespace attnserve {
namespace {

constexpr absl::string_view kHealthMethods = "/grpc.health.v1.Health/";

absl::string_view View(const grpc_slice& slice) {
  return {reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice)};
}

// What the processor and the certificate fetcher share. gRPC's core owns it through the
// processor (freed by its destroy function) and so keeps it as long as the credentials, which
// outlive the C++ object that made them.
struct CallerChecks {
  CallerChecks(const Secrets* secrets, std::function<void()> refused)
      : secrets(secrets), refused(std::move(refused)) {}

  const Secrets* const secrets;
  const std::function<void()> refused;
  std::mutex mutex;
  int64_t identity_version_given = 0;  // the TLS identity version handed to gRPC last
};

// gRPC's auth metadata processor: runs on the transport's thread when a call's headers arrive,
// before its message is read, and answers at once (no blocking work).
void CheckCall(void* state, grpc_auth_context* /*context*/, const grpc_metadata* metadata,
               size_t count, grpc_process_auth_metadata_done_cb done, void* user_data) {
  CallerChecks& checks = *static_cast<CallerChecks*>(state);
  tsan_hand_off::Acquire(state);
  std::optional<absl::string_view> path, authorization;
  const grpc_metadata* authorization_entry = nullptr;
  for (size_t i = 0; i < count; ++i) {
    const absl::string_view key = View(metadata[i].key);
    if (key == ":path") path = View(metadata[i].value);
    if (key == "authorization") {
      authorization = View(metadata[i].value);
      authorization_entry = &metadata[i];
    }
  }
  const bool health = path.has_value() && absl::StartsWith(*path, kHealthMethods);
  const absl::Status status = health ? absl::OkStatus() : checks.secrets->CheckToken(authorization);
  if (!status.ok() && checks.refused) checks.refused();
  tsan_hand_off::Release(state);  // the last use of `checks`: DestroyChecks acquires it
  if (status.ok()) {
    done(user_data, authorization_entry, authorization_entry == nullptr ? 0 : 1, nullptr, 0,
         GRPC_STATUS_OK, nullptr);
    return;
  }
  const std::string message(status.message());
  done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, message.c_str());
}

void DestroyChecks(void* state) {
  tsan_hand_off::Acquire(state);  // after every CheckCall, through gRPC's own synchronisation
  delete static_cast<CallerChecks*>(state);
}

// gRPC's certificate config fetcher: called at server start and before each new connection's
// handshake; hands over the identity when its version changed since the last call.
grpc_ssl_certificate_config_reload_status FetchIdentity(
    void* user_data, grpc_ssl_server_certificate_config** config) {
  CallerChecks& checks = *static_cast<CallerChecks*>(user_data);
  tsan_hand_off::Acquire(user_data);
  // Released on every return, after the lock's release: DestroyChecks acquires it.
  struct ReleaseOnReturn {
    void* checks;
    ~ReleaseOnReturn() { tsan_hand_off::Release(checks); }
  } release{user_data};
  int64_t version = 0;
  const std::shared_ptr<const TlsIdentity> identity = checks.secrets->tls_identity(&version);
  std::lock_guard<std::mutex> lock(checks.mutex);
  if (identity == nullptr || version == checks.identity_version_given) {
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  }
  const grpc_ssl_pem_key_cert_pair pair{identity->private_key.c_str(),
                                        identity->cert_chain.c_str()};
  // gRPC's fetcher path requires root certificates even when clients are not asked for theirs
  // (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE): the server's own chain stands in, unused. The
  // config copies the strings.
  const std::string& roots = identity->client_ca.empty() ? identity->cert_chain : identity->client_ca;
  *config = grpc_ssl_server_certificate_config_create(roots.c_str(), &pair, 1);
  checks.identity_version_given = version;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

// grpc::ServerCredentials over credentials of gRPC's core (the C++ API has no way to combine
// plaintext with an auth metadata processor, nor TLS with a certificate fetcher).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* credentials)
      : credentials_(credentials) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(credentials_); }

  // The checks are part of the credentials (CreateCallerCredentials); a second processor
  // would bypass them.
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    spdlog::critical("SetAuthMetadataProcessor on the caller credentials");
    std::abort();
  }

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override {
    return grpc_server_add_http2_port(server, address.c_str(), credentials_);
  }

  grpc_server_credentials* const credentials_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> CreateCallerCredentials(const Secrets* secrets,
                                                                 std::function<void()> refused) {
  auto* checks = new CallerChecks(secrets, std::move(refused));
  grpc_server_credentials* credentials = nullptr;
  if (secrets->tls()) {
    grpc_ssl_server_credentials_options* options =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            secrets->mutual_tls() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            FetchIdentity, checks);
    credentials = grpc_ssl_server_credentials_create_with_options(options);
  } else {
    credentials = grpc_insecure_server_credentials_create();
  }
  // The processor owns `checks` (its destroy function frees them with the credentials).
  tsan_hand_off::Release(checks);
  grpc_server_credentials_set_auth_metadata_processor(
      credentials, grpc_auth_metadata_processor{CheckCall, DestroyChecks, checks});
  return std::make_shared<CoreServerCredentials>(credentials);
}

}  // namespace attnserve
