// Prometheus's standard process metrics for this process, read from /proc at scrape time:
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace attnserve {

class ProcessMetrics : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_
