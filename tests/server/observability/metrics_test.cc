#include "server/observability/metrics.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/server/observability/metric_sample.h"

namespace attnserve {
namespace {

using testing::Sample;

const std::vector<std::string> kServed = {"/attnserve.v1.AttentionService/Encode",
                                          "/grpc.health.v1.Health/Check"};

TEST(ServerMetricsTest, CountsByServiceMethodAndCode) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry, kServed);
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

TEST(ServerMetricsTest, MethodsNotServedShareTheUnknownLabels) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry, kServed);
  // Client-chosen paths: none may become a label value of its own.
  for (int i = 0; i < 100; ++i) {
    const std::string method = "/x" + std::to_string(i) + "/y";
    metrics.RecordStarted(method, "bidi_stream");
    metrics.RecordHandled(method, "bidi_stream", grpc::StatusCode::UNIMPLEMENTED, 0.0001);
  }
  metrics.RecordStarted("no slash at all", "unary");
  metrics.RecordStarted("/attnserve.v1.AttentionService/Encode/extra", "unary");
  metrics.RecordStarted("/grpc.health.v1.Health/Check", "unary");

  const std::map<std::string, std::string> unknown = {{"grpc_service", "unknown"},
                                                      {"grpc_method", "unknown"}};
  EXPECT_EQ(Sample(registry, "grpc_server_started_total",
                   {{"grpc_service", "unknown"}, {"grpc_method", "unknown"},
                    {"grpc_type", "bidi_stream"}}),
            100);
  EXPECT_EQ(Sample(registry, "grpc_server_started_total",
                   {{"grpc_service", "unknown"}, {"grpc_method", "unknown"},
                    {"grpc_type", "unary"}}),
            2);
  auto handled = unknown;
  handled["grpc_code"] = "UNIMPLEMENTED";
  EXPECT_EQ(Sample(registry, "grpc_server_handled_total", handled), 100);
  EXPECT_EQ(Sample(registry, "grpc_server_started_total",
                   {{"grpc_service", "grpc.health.v1.Health"}, {"grpc_method", "Check"}}),
            1);
  // Exactly three series in the started family: unknown×2 types and Health/Check.
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name == "grpc_server_started_total") {
      EXPECT_EQ(family.metric.size(), 3u);
    }
  }
}

TEST(ServerMetricsTest, SetModelsReplacesTheSeriesOfRemovedModels) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry, kServed);
  metrics.SetModels({{"a", "rope", 8, 8, 64, 512, "F32"}, {"b", "alibi", 4, 4, 32, 128, "F32"}},
                    {});
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "a"}}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "b"}}), 1);
  // A reload: b removed, c added, a's weights now stored as BF16 and a stale one kept.
  metrics.SetModels({{"a", "rope", 8, 8, 64, 512, "BF16"}, {"c", "none", 2, 2, 8, 16, "F16"}},
                    {"c"});
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "b"}}), -1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "a"}, {"dtype", "F32"}}), -1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "a"}, {"dtype", "BF16"}}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "c"}}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_model_stale", {{"model", "c"}}), 1);
  metrics.SetModels({{"c", "none", 2, 2, 8, 16, "F16"}}, {});
  EXPECT_EQ(Sample(registry, "attnserve_model_stale", {{"model", "c"}}), -1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "a"}}), -1);
  EXPECT_EQ(Sample(registry, "attnserve_model_info", {{"model", "c"}}), 1);

  metrics.RecordReload(true, {});
  metrics.RecordReload(false, {"c"});
  metrics.RecordReload(false, {"c", "d"});
  EXPECT_EQ(Sample(registry, "attnserve_model_reloads_total", {{"result", "ok"}}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_model_reloads_total", {{"result", "failed"}}), 2);
  EXPECT_EQ(Sample(registry, "attnserve_model_load_failures_total", {{"model", "c"}}), 2);
  EXPECT_EQ(Sample(registry, "attnserve_model_load_failures_total", {{"model", "d"}}), 1);
}

TEST(ServerMetricsTest, InfoAndComputeGauges) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry, kServed);
  metrics.SetBuildInfo("1.2.3", "2.6.3", "avx512_core_amx");
  metrics.SetModels({{"demo-rope", "rope", 8, 4, 32, 256, "BF16+F16"}}, {});
  metrics.ObserveCompute(1, 3);
  metrics.SetComputeCapacity(2, 64);
  EXPECT_EQ(Sample(registry, "attnserve_build_info", {{"version", "1.2.3"},
                                                      {"onednn_version", "2.6.3"},
                                                      {"cpu_isa", "avx512_core_amx"}}),
            1);
  EXPECT_EQ(Sample(registry, "attnserve_compute_workers", {}), 2);
  EXPECT_EQ(Sample(registry, "attnserve_compute_queue_capacity", {}), 64);
  EXPECT_EQ(Sample(registry, "attnserve_model_info",
                   {{"model", "demo-rope"}, {"encoding", "rope"}, {"kv_heads", "4"},
                    {"dtype", "BF16+F16"}}),
            1);
  EXPECT_EQ(Sample(registry, "attnserve_compute_busy_workers", {}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_compute_waiting_requests", {}), 3);

  metrics.RecordCompute("Attend", "demo-rope", 0.001, 0.02);
  metrics.RecordCompute("Attend", "demo-rope", 0.002, 0.03);
  metrics.RecordCompute("Attend", "unknown", 0.002, 0.03);
  EXPECT_EQ(Sample(registry, "attnserve_queue_wait_seconds",
                   {{"rpc", "Attend"}, {"model", "demo-rope"}}),
            2);
  EXPECT_EQ(Sample(registry, "attnserve_compute_seconds",
                   {{"rpc", "Attend"}, {"model", "unknown"}}),
            1);
  metrics.RecordRequest("Attend", "demo-rope", "OK", 0.02);
  metrics.RecordRequest("Attend", "demo-rope", "OK", 0.03);
  metrics.RecordRequest("Attend", "demo-rope", "INVALID_ARGUMENT", 0.0001);
  EXPECT_EQ(Sample(registry, "attnserve_requests_total",
                   {{"rpc", "Attend"}, {"model", "demo-rope"}, {"code", "OK"}}),
            2);
  EXPECT_EQ(Sample(registry, "attnserve_requests_total", {{"code", "INVALID_ARGUMENT"}}), 1);
  EXPECT_EQ(Sample(registry, "attnserve_request_seconds",
                   {{"rpc", "Attend"}, {"model", "demo-rope"}}),
            3);
  metrics.RecordMessage("/attnserve.v1.AttentionService/Encode", "unary", true);
  metrics.RecordMessage("/attnserve.v1.AttentionService/Encode", "unary", true);
  metrics.RecordMessage("/attnserve.v1.AttentionService/Encode", "unary", false);
  EXPECT_EQ(Sample(registry, "grpc_server_msg_received_total", {{"grpc_method", "Encode"}}), 2);
  EXPECT_EQ(Sample(registry, "grpc_server_msg_sent_total", {{"grpc_method", "Encode"}}), 1);

  metrics.RecordWork("Attend", "demo-rope", 128, 1e9);
  metrics.RecordWork("Attend", "demo-rope", 1, 5e6);
  EXPECT_EQ(Sample(registry, "attnserve_tokens_total", {{"rpc", "Attend"}, {"model", "demo-rope"}}),
            129);
  EXPECT_EQ(Sample(registry, "attnserve_flops_total", {{"model", "demo-rope"}}), 1.005e9);
  metrics.RecordRejected("queue_full");
  metrics.RecordRejected("queue_full");
  metrics.RecordRejected("draining");
  EXPECT_EQ(Sample(registry, "attnserve_rejected_requests_total", {{"reason", "queue_full"}}), 2);
  EXPECT_EQ(Sample(registry, "attnserve_rejected_requests_total", {{"reason", "draining"}}), 1);
  metrics.ObserveDecode(3, 4096);
  EXPECT_EQ(Sample(registry, "attnserve_decode_streams", {}), 3);
  EXPECT_EQ(Sample(registry, "attnserve_kv_cache_bytes", {}), 4096);
}

TEST(ServerMetricsTest, InFlightCountsStartedUntilFinished) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry, kServed);
  metrics.RecordStarted("/attnserve.v1.AttentionService/Encode", "unary");
  metrics.RecordStarted("/attnserve.v1.AttentionService/Attend", "unary");
  // Streams that idle between messages are not load: not counted.
  metrics.RecordStarted("/attnserve.v1.AttentionService/Decode", "bidi_stream");
  metrics.RecordStarted("/grpc.health.v1.Health/Watch", "server_stream");
  EXPECT_EQ(Sample(registry, "attnserve_inflight_requests", {}), 2);
  metrics.RecordFinished("/attnserve.v1.AttentionService/Encode");
  metrics.RecordFinished("/attnserve.v1.AttentionService/Decode");
  metrics.RecordFinished("/grpc.health.v1.Health/Watch");
  EXPECT_EQ(Sample(registry, "attnserve_inflight_requests", {}), 1);
}

TEST(ServerMetricsTest, StatusCodeNamesMatchGrpc) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
}

}  // namespace
}  // namespace attnserve
