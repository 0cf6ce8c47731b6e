// All Prometheus metric families of the server, registered in a registry passed in.
#ifndef ATTNSERVE_SERVER_METRICS_H_
#define ATTNSERVE_SERVER_METRICS_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status_code_enum.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace attnserve {

// gRPC server metrics with the names and labels of go-grpc-prometheus, so existing dashboards
// and alerts apply:
//   grpc_server_started_total{grpc_service, grpc_method, grpc_type}
//   grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code}
//   grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type} (histogram)
class ServerMetrics {
 public:
  explicit ServerMetrics(prometheus::Registry& registry);

  // full_method: "/package.Service/Method".
  void RecordStarted(absl::string_view full_method, absl::string_view type);
  void RecordHandled(absl::string_view full_method, absl::string_view type, grpc::StatusCode code,
                     double seconds);

  // An interceptor factory that records every RPC of the server it is installed in.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CreateInterceptorFactory();

 private:
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
};

// "OK", "INVALID_ARGUMENT", … as in the grpc_code label.
absl::string_view StatusCodeName(grpc::StatusCode code);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_METRICS_H_
