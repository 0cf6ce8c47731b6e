// The binary's --health_probe mode: one grpc.health.v1.Health/Check call, for container
// HEALTHCHECKs and exec probes in images without a gRPC client.
#ifndef ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_
#define ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_

#include <string>

#include "absl/time/time.h"

namespace attnserve {

// Asks the server at `address` for the health of `service` ("" = the server as a whole).
// A wildcard host (0.0.0.0, [::]) is probed on loopback, so the serving flags can be reused.
// Returns 0 when it answers SERVING, 1 otherwise (not serving, unknown service, unreachable, or
// no answer within `timeout`), and prints one line saying which.
int ProbeHealth(const std::string& address, const std::string& service, absl::Duration timeout);

// The address to dial for a listening address: wildcard hosts become loopback.
std::string DialAddress(const std::string& listen_address);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_APP_HEALTH_PROBE_H_
