// Reading one sample back from a prometheus-cpp registry, for the tests.
#ifndef ATTNSERVE_TESTS_SERVER_OBSERVABILITY_METRIC_SAMPLE_H_
#define ATTNSERVE_TESTS_SERVER_OBSERVABILITY_METRIC_SAMPLE_H_

#include <map>
#include <string>

#include "prometheus/registry.h"

namespace attnserve::testing {

// The value of the sample of `family_name` whose labels include all of `labels`, or -1.
inline double Sample(prometheus::Registry& registry, const std::string& family_name,
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
      if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
      return metric.counter.value;
    }
  }
  return -1;
}

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_SERVER_OBSERVABILITY_METRIC_SAMPLE_H_
