// The gRPC server credentials that decide who may call: plaintext or TLS (mutual when a client CA
// is set) with the identity current at each connection's handshake, so rotated certificates are
// used without a restart; and, when tokens are required, the bearer token of every call checked
// as its headers arrive — before its message is read or parsed — by gRPC's auth metadata
// processor.
#ifndef ATTNSERVE_SERVER_RPC_CALLER_CREDENTIALS_H_
#define ATTNSERVE_SERVER_RPC_CALLER_CREDENTIALS_H_

#include <functional>
#include <memory>

#include "grpcpp/security/server_credentials.h"
#include "server/rpc/secrets.h"

namespace attnserve {

// Credentials over `secrets`, which must outlive every server using them. Calls of the health
// service (grpc.health.v1.Health, for load balancers and probes) need no token; any other call
// without a valid one ends UNAUTHENTICATED (Secrets::CheckToken's message) and `refused` is
// called. The token is removed from the metadata the application sees.
std::shared_ptr<grpc::ServerCredentials> CreateCallerCredentials(const Secrets* secrets,
                                                                 std::function<void()> refused);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_CALLER_CREDENTIALS_H_
