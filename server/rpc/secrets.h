// Who may call the server, read from files that may change while it runs: the TLS identity (PEM
// certificate chain and key, and a client CA for mutual TLS) and the bearer tokens. Reload()
// reads them again; a changed group that checks out replaces the one in use, anything else
// leaves it in use (so a half-written rotation never takes the server down).
#ifndef ATTNSERVE_SERVER_RPC_SECRETS_H_
#define ATTNSERVE_SERVER_RPC_SECRETS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnserve {

// The files, each empty when unused (the defaults keep designated initialisers warning-free).
struct SecretFiles {
  std::string tls_cert_file = "";  // PEM certificate chain of the server; empty = plaintext
  std::string tls_key_file = "";   // PEM private key of that certificate
  // PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
  std::string tls_client_ca_file = "";
  std::string auth_token_file = "";  // bearer tokens, one per line; empty = no token required
};

// A TLS identity whose key belongs to its certificate (checked with OpenSSL).
struct TlsIdentity {
  std::string cert_chain;   // PEM, the server's certificate first
  std::string private_key;  // PEM
  std::string client_ca;    // PEM; empty: clients are not asked for a certificate
};

class Secrets {
 public:
  // Called after each reload of a group whose files changed: `group` is "tls" or "tokens", `ok`
  // false when the new files were refused (the previous ones stay in use).
  using ReloadObserver = std::function<void(absl::string_view group, bool ok)>;

  // Reads every file. INVALID_ARGUMENT naming the flag when a file is missing, unreadable or
  // empty, holds no PEM object (or token) of its kind, when the key does not belong to the
  // certificate, or when only one of certificate and key is given.
  static absl::StatusOr<std::unique_ptr<Secrets>> Load(const SecretFiles& files,
                                                       ReloadObserver observer = nullptr);

  bool tls() const { return !files_.tls_cert_file.empty(); }
  bool mutual_tls() const { return !files_.tls_client_ca_file.empty(); }
  bool tokens_required() const { return !files_.auth_token_file.empty(); }

  // Reads the files again. A group (TLS: certificate, key and CA together; tokens) whose
  // content changed replaces the one in use when it checks out as Load's do; otherwise the error
  // is logged (once for each content) and the previous one stays. Both outcomes are observed.
  void Reload();

  // OK when no token is required, or when `authorization` (the value of the call's
  // "authorization" header; nullopt when it has none) is "Bearer <one of the tokens>";
  // UNAUTHENTICATED saying what is wrong otherwise, never echoing what the client sent. Every
  // token is compared, each in a time that depends only on the lengths.
  absl::Status CheckToken(std::optional<absl::string_view> authorization) const;

  // The TLS identity in use (null without TLS) and, in `version`, its version: 1 at start, one
  // more at each replacement.
  std::shared_ptr<const TlsIdentity> tls_identity(int64_t* version) const;

 private:
  // One group's files as last read: the content in use, and the last refused content with its
  // error (logged once).
  struct GroupState {
    std::string content;
    std::string refused_content;
  };

  Secrets(SecretFiles files, ReloadObserver observer)
      : files_(std::move(files)), observer_(std::move(observer)) {}
  void ReloadTls();
  void ReloadTokens();
  // Logs a refused reload of `group` unless `content` was refused before, and observes it.
  void Refused(absl::string_view group, const absl::Status& status, GroupState& state,
               const std::string& content);

  const SecretFiles files_;
  const ReloadObserver observer_;
  std::mutex reload_mutex_;  // one Reload at a time (the states below)
  GroupState tls_state_;
  GroupState tokens_state_;

  mutable std::mutex mutex_;  // what calls read:
  std::shared_ptr<const TlsIdentity> tls_identity_;
  int64_t tls_version_ = 0;
  std::shared_ptr<const std::vector<std::string>> tokens_;
};

// The tokens of a token file's content: one per line, surrounding whitespace removed, blank
// lines and lines starting with '#' skipped. INVALID_ARGUMENT when none is left.
absl::StatusOr<std::vector<std::string>> ParseTokens(absl::string_view content);

// The PEM texts of `files` checked: certificate chain, key and CA parse, and the key belongs to
// the chain's first certificate. INVALID_ARGUMENT naming the flag and file otherwise.
absl::StatusOr<TlsIdentity> CheckTlsIdentity(const SecretFiles& files, std::string cert_chain,
                                             std::string private_key, std::string client_ca);

// a == b in time that depends only on the lengths, not on where the bytes differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_SECRETS_H_
