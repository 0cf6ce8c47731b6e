#include "server/observability/process_metrics.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

std::map<std::string, double> Values() {
  std::map<std::string, double> values;
  for (const prometheus::MetricFamily& family : ProcessMetrics().Collect()) {
    EXPECT_EQ(family.metric.size(), 1u) << family.name;
    values[family.name] = family.type == prometheus::MetricType::Counter
                              ? family.metric[0].counter.value
                              : family.metric[0].gauge.value;
  }
  return values;
}

TEST(ProcessMetricsTest, ReportsThisProcess) {
  // Burn a little CPU so the counter is measurably above zero.
  volatile double sink = 0;
  for (int i = 0; i < 20000000; ++i) sink = sink + i * 1e-9;
  std::vector<char> touched(32 << 20, 1);  // 32 MiB resident
  const std::map<std::string, double> values = Values();
  ASSERT_EQ(values.size(), 6u);
  EXPECT_GT(values.at("process_cpu_seconds_total"), 0.0);
  EXPECT_GT(values.at("process_resident_memory_bytes"), 32.0 * (1 << 20));
  EXPECT_GE(values.at("process_virtual_memory_bytes"),
            values.at("process_resident_memory_bytes"));
  EXPECT_GE(values.at("process_open_fds"), 3.0);  // stdin, stdout, stderr at least
  EXPECT_GE(values.at("process_max_fds"), values.at("process_open_fds"));
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  const double start = values.at("process_start_time_seconds");
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600);  // this test process started within the hour
  EXPECT_EQ(touched[touched.size() - 1], 1);
}

}  // namespace
}  // namespace attnserve
