// A console reporter that also keeps one counter of every run, so a benchmark's main() can print
// ratios between benchmarks measured in the same run (the machines are shared and noisy; only
// ratios within one run are meaningful). With --benchmark_repetitions=N a benchmark's value is
// the median of its N runs.
#ifndef ATTNSERVE_BENCH_COUNTER_REPORTER_H_
#define ATTNSERVE_BENCH_COUNTER_REPORTER_H_

#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"

namespace attnserve {

class CounterReporter : public benchmark::ConsoleReporter {
 public:
  // Coloured on a terminal only, so a report piped to a file reads as text.
  explicit CounterReporter(std::string counter)
      : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_Defaults : OO_Tabular),
        counter_(std::move(counter)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      auto it = run.counters.find(counter_);
      if (it == run.counters.end()) continue;
      if (run.run_type == Run::RT_Iteration) {
        runs_[run.benchmark_name()].push_back(it->second.value);
      } else if (run.aggregate_name == "median") {
        // With --benchmark_report_aggregates_only the runs themselves are not reported.
        reported_medians_[run.run_name.str()] = it->second.value;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // Counter value (median over repetitions) by benchmark name (e.g. "BM_Memcpy/real_time").
  std::map<std::string, double> values() const {
    std::map<std::string, double> medians = reported_medians_;
    for (auto [name, values] : runs_) {
      std::sort(values.begin(), values.end());
      const size_t n = values.size();
      medians[name] = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    }
    return medians;
  }

 private:
  std::string counter_;
  std::map<std::string, std::vector<double>> runs_;
  std::map<std::string, double> reported_medians_;  // by name without the "_median"
};

}  // namespace attnserve

#endif  // ATTNSERVE_BENCH_COUNTER_REPORTER_H_
