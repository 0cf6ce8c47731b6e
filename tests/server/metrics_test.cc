#include "server/metrics.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace attnserve {
namespace {

// The value of the sample of `family_name` whose labels include all of `labels`, or -1.
double Sample(prometheus::Registry& registry, const std::string& family_name,
              const std::map<std::string, std::string>& labels) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != family_name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      size_t matched = 0;
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        auto it = labels.find(label.name);
        if (it != labels.end() && it->second == label.value) ++matched;
      }
      if (matched != labels.size()) continue;
      if (family.type == prometheus::MetricType::Histogram) {
        return static_cast<double>(metric.histogram.sample_count);
      }
      return metric.counter.value;
    }
  }
  return -1;
}

TEST(ServerMetricsTest, CountsByServiceMethodAndCode) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  const std::string method = "/attnserve.v1.AttentionService/Encode";
  metrics.RecordStarted(method, "unary");
  metrics.RecordStarted(method, "unary");
  metrics.RecordHandled(method, "unary", grpc::StatusCode::OK, 0.002);
  metrics.RecordHandled(method, "unary", grpc::StatusCode::INVALID_ARGUMENT, 0.0001);

  const std::map<std::string, std::string> encode = {
      {"grpc_service", "attnserve.v1.AttentionService"}, {"grpc_method", "Encode"}};
  EXPECT_EQ(Sample(registry, "grpc_server_started_total", encode), 2);
  auto with_code = [&](const char* code) {
    auto labels = encode;
    labels["grpc_code"] = code;
    return labels;
  };
  EXPECT_EQ(Sample(registry, "grpc_server_handled_total", with_code("OK")), 1);
  EXPECT_EQ(Sample(registry, "grpc_server_handled_total", with_code("INVALID_ARGUMENT")), 1);
  EXPECT_EQ(Sample(registry, "grpc_server_handled_total", with_code("NOT_FOUND")), -1);
  EXPECT_EQ(Sample(registry, "grpc_server_handling_seconds", encode), 2);
}

TEST(ServerMetricsTest, StatusCodeNamesMatchGrpc) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
}

}  // namespace
}  // namespace attnserve
