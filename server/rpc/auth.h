// Who may call the server: TLS (optionally mutual) server credentials from PEM files, and an
// optional bearer token every AttentionService call must carry.
#ifndef ATTNSERVE_SERVER_RPC_AUTH_H_
#define ATTNSERVE_SERVER_RPC_AUTH_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/string_ref.h"

namespace attnserve {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain of the server; empty = plaintext
  std::string key_file;        // PEM private key of that certificate
  std::string client_ca_file;  // PEM CA bundle: when set, clients must present a certificate it
                               // signed (mutual TLS)
};

// Insecure credentials when `files.cert_file` is empty; TLS (mutual when client_ca_file is set)
// otherwise. INVALID_ARGUMENT naming the flag when a file is missing, unreadable or empty, or when
// only one of cert and key is given.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(
    const TlsFiles& files);

// Bearer-token authentication: a call is let in when its metadata carries
// `authorization: Bearer <token>` with the configured token.
class TokenAuthenticator {
 public:
  // The token is the file's content without surrounding whitespace; it must not be empty.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(const std::string& path);
  explicit TokenAuthenticator(std::string token) : token_(std::move(token)) {}

  // OK, or UNAUTHENTICATED saying what is missing (never echoing what the client sent). The
  // comparison takes the same time wherever the tokens differ.
  absl::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

 private:
  std::string token_;
};

// a == b in time that depends only on the lengths, not on where the bytes differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_AUTH_H_
