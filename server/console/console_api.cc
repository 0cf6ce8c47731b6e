#include "server/console/console_api.h"

#include <map>

#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace attnserve {
namespace {

using Json = nlohmann::json;

Json ConfigJson(const v1::ModelConfig& config) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  // A ModelConfig always prints (it has no Any fields), and the loader refuses strings that are
  // not UTF-8, which protobuf would print as they are and nlohmann refuse. Should one get
  // through, the config is left out (an empty object) rather than thrown on: an exception on
  // the door's I/O thread would end the process.
  if (!google::protobuf::util::MessageToJsonString(config, &json, options).ok()) {
    return Json::object();
  }
  Json parsed = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? Json::object() : parsed;
}

Json ModelJson(const std::string& name, absl::string_view state, const absl::Status& reason) {
  return Json{{"name", name}, {"state", state}, {"reason", std::string(reason.message())}};
}

const char* TypeName(prometheus::MetricType type) {
  switch (type) {
    case prometheus::MetricType::Counter: return "counter";
    case prometheus::MetricType::Gauge: return "gauge";
    case prometheus::MetricType::Histogram: return "histogram";
    case prometheus::MetricType::Summary: return "summary";
    default: return "untyped";
  }
}

Json SampleJson(prometheus::MetricType type, const prometheus::ClientMetric& metric) {
  Json labels = Json::object();
  for (const prometheus::ClientMetric::Label& label : metric.label) {
    labels[label.name] = label.value;
  }
  Json sample{{"labels", std::move(labels)}};
  switch (type) {
    case prometheus::MetricType::Counter:
      sample["value"] = metric.counter.value;
      break;
    case prometheus::MetricType::Gauge:
      sample["value"] = metric.gauge.value;
      break;
    case prometheus::MetricType::Histogram: {
      sample["count"] = metric.histogram.sample_count;
      sample["sum"] = metric.histogram.sample_sum;
      Json buckets = Json::array();
      for (const prometheus::ClientMetric::Bucket& bucket : metric.histogram.bucket) {
        // nlohmann writes the +Inf bound as null.
        buckets.push_back({{"le", bucket.upper_bound}, {"count", bucket.cumulative_count}});
      }
      sample["buckets"] = std::move(buckets);
      break;
    }
    case prometheus::MetricType::Summary: {
      sample["count"] = metric.summary.sample_count;
      sample["sum"] = metric.summary.sample_sum;
      Json quantiles = Json::array();
      for (const prometheus::ClientMetric::Quantile& quantile : metric.summary.quantile) {
        quantiles.push_back({{"quantile", quantile.quantile}, {"value", quantile.value}});
      }
      sample["quantiles"] = std::move(quantiles);
      break;
    }
    default:
      sample["value"] = metric.untyped.value;
  }
  return sample;
}

}  // namespace

std::string ConsoleModelsJson(const ModelRegistry& models, const std::string& server_version,
                              bool draining) {
  // By name: the served models and the folders that never loaded are disjoint sets.
  std::map<std::string, Json> by_name;
  for (const LoadedModel* model : models.List()) {
    const auto stale = models.stale().find(model->config.name());
    Json entry = stale == models.stale().end()
                     ? ModelJson(model->config.name(), "loaded", absl::OkStatus())
                     : ModelJson(model->config.name(), "stale", stale->second);
    entry["config"] = ConfigJson(model->config);
    by_name.emplace(model->config.name(), std::move(entry));
  }
  for (const auto& [name, reason] : models.failures()) {
    by_name.emplace(name, ModelJson(name, "failed", reason));
  }
  Json list = Json::array();
  for (auto& [name, entry] : by_name) list.push_back(std::move(entry));
  const Json answer{{"server", {{"version", server_version}, {"draining", draining}}},
                    {"models", std::move(list)}};
  // Failure reasons quote file contents and names: invalid UTF-8 is replaced, not thrown on.
  return answer.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string MetricsJson(const std::vector<prometheus::MetricFamily>& families,
                        double time_seconds, double monotonic_seconds) {
  Json list = Json::array();
  for (const prometheus::MetricFamily& family : families) {
    Json samples = Json::array();
    for (const prometheus::ClientMetric& metric : family.metric) {
      samples.push_back(SampleJson(family.type, metric));
    }
    list.push_back({{"name", family.name},
                    {"help", family.help},
                    {"type", TypeName(family.type)},
                    {"samples", std::move(samples)}});
  }
  const Json answer{{"time_seconds", time_seconds},
                    {"monotonic_seconds", monotonic_seconds},
                    {"families", std::move(list)}};
  // Label values come from outside (model names are folder names): invalid UTF-8 is replaced
  // rather than thrown on.
  return answer.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace attnserve
