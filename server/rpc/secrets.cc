#include "server/rpc/secrets.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/base/status_macros.h"
#include "openssl/bio.h"
#include "openssl/err.h"
#include "openssl/evp.h"
#include "openssl/pem.h"
#include "openssl/x509.h"
#include "spdlog/spdlog.h"

namespace attnserve {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": cannot be read"));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (content.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": file is empty"));
  }
  return content.str();
}

// OpenSSL objects freed by their own functions.
template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* object) const { Free(object); }
};
using Certificate = std::unique_ptr<X509, Freer<X509, X509_free>>;
using PrivateKey = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using Bio = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;

Bio ReadOnlyBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM text (null when there is none), and how many it holds.
Certificate FirstCertificate(const std::string& pem, int* count) {
  Bio bio = ReadOnlyBio(pem);
  Certificate first;
  *count = 0;
  while (Certificate certificate{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (first == nullptr) first = std::move(certificate);
    ++*count;
  }
  ERR_clear_error();  // the read that ended the loop left its error
  return first;
}

absl::Status FileError(absl::string_view flag, const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": ", what));
}

// The content of `group`'s files, read together (each must be readable and not empty).
absl::StatusOr<std::vector<std::string>> ReadGroup(
    const std::vector<std::pair<const std::string*, absl::string_view>>& files) {
  std::vector<std::string> contents;
  for (const auto& [path, flag] : files) {
    if (path->empty()) {
      contents.emplace_back();
      continue;
    }
    ASSIGN_OR_RETURN(std::string content, ReadFile(*path, flag));
    contents.push_back(std::move(content));
  }
  return contents;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseTokens(absl::string_view content) {
  std::vector<std::string> tokens;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    tokens.emplace_back(line);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        "holds no token (one per line; blank lines and lines starting with # are skipped)");
  }
  return tokens;
}

absl::StatusOr<TlsIdentity> CheckTlsIdentity(const SecretFiles& files, std::string cert_chain,
                                             std::string private_key, std::string client_ca) {
  int certificates = 0;
  const Certificate leaf = FirstCertificate(cert_chain, &certificates);
  if (leaf == nullptr) {
    return FileError("tls_cert_file", files.tls_cert_file, "holds no PEM certificate");
  }
  Bio key_bio = ReadOnlyBio(private_key);
  // An encrypted key is refused: the callback gives no passphrase (OpenSSL's default would ask
  // on the terminal and block the server).
  pem_password_cb* const no_passphrase = [](char*, int, int, void*) { return 0; };
  const PrivateKey key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return FileError("tls_key_file", files.tls_key_file, "holds no PEM private key");
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return FileError("tls_key_file", files.tls_key_file,
                    absl::StrCat("the key does not belong to the certificate of --tls_cert_file=",
                                 files.tls_cert_file));
  }
  if (!files.tls_client_ca_file.empty() && FirstCertificate(client_ca, &certificates) == nullptr) {
    return FileError("tls_client_ca_file", files.tls_client_ca_file, "holds no PEM certificate");
  }
  return TlsIdentity{std::move(cert_chain), std::move(private_key), std::move(client_ca)};
}

absl::StatusOr<std::unique_ptr<Secrets>> Secrets::Load(const SecretFiles& files,
                                                       ReloadObserver observer) {
  if (files.tls_cert_file.empty() != files.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (files.tls_cert_file.empty() && !files.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file (mutual TLS is TLS)");
  }
  std::unique_ptr<Secrets> secrets(new Secrets(files, std::move(observer)));
  // The first load: any error stops the server (Reload's refusals keep what is in use).
  if (secrets->tls()) {
    ASSIGN_OR_RETURN(std::vector<std::string> pem,
                     ReadGroup({{&files.tls_cert_file, "tls_cert_file"},
                                {&files.tls_key_file, "tls_key_file"},
                                {&files.tls_client_ca_file, "tls_client_ca_file"}}));
    secrets->tls_state_.content = absl::StrCat(pem[0], pem[1], pem[2]);
    ASSIGN_OR_RETURN(TlsIdentity identity, CheckTlsIdentity(files, std::move(pem[0]),
                                                            std::move(pem[1]), std::move(pem[2])));
    secrets->tls_identity_ = std::make_shared<const TlsIdentity>(std::move(identity));
    secrets->tls_version_ = 1;
  }
  if (secrets->tokens_required()) {
    ASSIGN_OR_RETURN(std::string content, ReadFile(files.auth_token_file, "auth_token_file"));
    absl::StatusOr<std::vector<std::string>> tokens = ParseTokens(content);
    if (!tokens.ok()) {
      return FileError("auth_token_file", files.auth_token_file, tokens.status().message());
    }
    secrets->tokens_state_.content = std::move(content);
    secrets->tokens_ = std::make_shared<const std::vector<std::string>>(*std::move(tokens));
  }
  return secrets;
}

void Secrets::Reload() {
  std::lock_guard<std::mutex> lock(reload_mutex_);
  if (tls()) ReloadTls();
  if (tokens_required()) ReloadTokens();
}

void Secrets::ReloadTls() {
  absl::StatusOr<std::vector<std::string>> pem =
      ReadGroup({{&files_.tls_cert_file, "tls_cert_file"},
                 {&files_.tls_key_file, "tls_key_file"},
                 {&files_.tls_client_ca_file, "tls_client_ca_file"}});
  if (!pem.ok()) return Refused("tls", pem.status(), tls_state_, "");
  std::string content = absl::StrCat((*pem)[0], (*pem)[1], (*pem)[2]);
  if (content == tls_state_.content) return;
  absl::StatusOr<TlsIdentity> identity =
      CheckTlsIdentity(files_, std::move((*pem)[0]), std::move((*pem)[1]), std::move((*pem)[2]));
  if (!identity.ok()) return Refused("tls", identity.status(), tls_state_, content);
  tls_state_ = {std::move(content), ""};
  int64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tls_identity_ = std::make_shared<const TlsIdentity>(*std::move(identity));
    version = ++tls_version_;
  }
  spdlog::info("TLS certificate, key and CA reloaded (version {}); new connections use them",
               version);
  if (observer_) observer_("tls", true);
}

void Secrets::ReloadTokens() {
  absl::StatusOr<std::string> content = ReadFile(files_.auth_token_file, "auth_token_file");
  if (!content.ok()) return Refused("tokens", content.status(), tokens_state_, "");
  if (*content == tokens_state_.content) return;
  absl::StatusOr<std::vector<std::string>> tokens = ParseTokens(*content);
  if (!tokens.ok()) {
    return Refused("tokens",
                   FileError("auth_token_file", files_.auth_token_file, tokens.status().message()),
                   tokens_state_, *content);
  }
  const size_t count = tokens->size();
  tokens_state_ = {*std::move(content), ""};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tokens_ = std::make_shared<const std::vector<std::string>>(*std::move(tokens));
  }
  spdlog::info("bearer tokens reloaded from --auth_token_file: {} valid", count);
  if (observer_) observer_("tokens", true);
}

void Secrets::Refused(absl::string_view group, const absl::Status& status, GroupState& state,
                      const std::string& content) {
  // An unreadable file has no content: each such reload is logged and counted, as the file may
  // come back meanwhile. A content refused before is not counted again (the poll would repeat it).
  if (!content.empty() && content == state.refused_content) return;
  state.refused_content = content;
  spdlog::error("reloading the {} failed, the previous ones stay in use: {}", std::string(group),
                std::string(status.message()));
  if (observer_) observer_(group, false);
}

absl::Status Secrets::CheckToken(std::optional<absl::string_view> authorization) const {
  std::shared_ptr<const std::vector<std::string>> tokens;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tokens = tokens_;
  }
  if (tokens == nullptr) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "metadata authorization is missing; send \"authorization: Bearer <token>\"");
  }
  if (!absl::StartsWith(*authorization, kBearer)) {
    return absl::UnauthenticatedError("metadata authorization must be \"Bearer <token>\"");
  }
  const absl::string_view presented = authorization->substr(kBearer.size());
  bool valid = false;
  for (const std::string& token : *tokens) valid |= ConstantTimeEquals(presented, token);
  if (!valid) {
    return absl::UnauthenticatedError("metadata authorization: the bearer token is not valid");
  }
  return absl::OkStatus();
}

std::shared_ptr<const TlsIdentity> Secrets::tls_identity(int64_t* version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  *version = tls_version_;
  return tls_identity_;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of `a` is compared (against `b`, or against itself once `b` ends), so the time
  // depends on a's length only; the length difference is folded into the result.
  unsigned char differences = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char other = i < b.size() ? b[i] : a[i];
    differences |= static_cast<unsigned char>(a[i] ^ other);
  }
  volatile unsigned char result = differences;  // keep the loop from being cut short
  return result == 0;
}

}  // namespace attnserve
