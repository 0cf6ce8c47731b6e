// The binary's --health_probe mode: one grpc.health.v1.Health/Check call, for container
// HEALTHCHECKs and exec probes in images without a gRPC client, plaintext or TLS.
#ifndef ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_
#define ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_

#include <string>

#include "absl/time/time.h"

namespace attnserve {

// How the probe reaches the server: plaintext, or TLS with the server's own files.
struct ProbeTls {
  std::string cert_file;  // the server's --tls_cert_file; empty: plaintext
  std::string key_file;   // --tls_key_file: with client_ca, presented as the probe's certificate
  bool client_ca = false;  // the server requires client certificates (mutual TLS)
};

// Asks the server at `address` for the health of `service` ("" = the server as a whole).
// A wildcard host (0.0.0.0, [::]) is probed on loopback, so the serving flags can be reused.
// Over TLS the probe does not check the server's certificate (it asks whether something
// answers, on this host, not whom to trust), and under mutual TLS it presents the server's own
// certificate, which works where the client CA signed it for client use too; otherwise probe a
// --health_address. Returns 0 when it answers SERVING, 1 otherwise (not serving, unknown
// service, unreachable, no answer within `timeout`, unreadable files), and prints one line
// saying which.
int ProbeHealth(const std::string& address, const std::string& service, absl::Duration timeout,
                const ProbeTls& tls = {});

// The address to dial for a listening address: wildcard hosts become loopback.
std::string DialAddress(const std::string& listen_address);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_
