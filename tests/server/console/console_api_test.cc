#include "server/console/console_api.h"

#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/console/console_files.h"
#include "tests/server/models/repository_fixture.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

TEST(ConsoleModelsJsonTest, ListsEveryDemoModelLoadedWithItsConfig) {
  absl::StatusOr<std::unique_ptr<ModelRegistry>> models = ModelRegistry::CreateWithDemoModels();
  ASSERT_TRUE(models.ok()) << models.status();
  const Json answer = Json::parse(ConsoleModelsJson(**models, "9.9.9", /*draining=*/true));

  EXPECT_EQ(answer["server"]["version"], "9.9.9");
  EXPECT_EQ(answer["server"]["draining"], true);
  const std::vector<const LoadedModel*> listed = (*models)->List();
  ASSERT_EQ(answer["models"].size(), listed.size());
  for (size_t i = 0; i < listed.size(); ++i) {
    const Json& model = answer["models"][i];
    const v1::ModelConfig& config = listed[i]->config;
    SCOPED_TRACE(config.name());
    EXPECT_EQ(model["name"], config.name());
    EXPECT_EQ(model["state"], "loaded");
    EXPECT_EQ(model["reason"], "");
    // The proto's own field names, every field present (zero values included); int64 fields are
    // strings, as proto3's JSON mapping has them.
    EXPECT_EQ(model["config"]["d_model"], std::to_string(config.d_model()));
    EXPECT_EQ(model["config"]["num_heads"], std::to_string(config.num_heads()));
    EXPECT_EQ(model["config"]["num_kv_heads"], std::to_string(config.num_kv_heads()));
    EXPECT_EQ(model["config"]["head_dim"], std::to_string(config.head_dim()));
    EXPECT_TRUE(model["config"].contains("encoding"));
  }
  // Sorted by name, as the pages list them.
  EXPECT_EQ(answer["models"][0]["name"], "demo-alibi");
}

// A repository with a model served stale (its new config broken) and a folder that never loaded.
class ConsoleRepositoryTest : public testing::RepositoryFixture {};

TEST_F(ConsoleRepositoryTest, GivesStaleAndFailedModelsWithTheirReasons) {
  WriteModel("good");
  WriteModel("later-broken");
  Write("never", "config.pbtxt", "d_model: 8 num_heads: 3");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> first =
      ModelRegistry::CreateFromRepository(root_.string());
  ASSERT_TRUE(first.ok()) << first.status();
  Write("later-broken", "config.pbtxt", "d_model: 8 num_heads: two");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> reloaded =
      ModelRegistry::Reload(**first, root_.string(), nullptr);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();

  const Json models = Json::parse(ConsoleModelsJson(**reloaded, "1", false))["models"];
  ASSERT_EQ(models.size(), 3u);
  EXPECT_EQ(models[0]["name"], "good");
  EXPECT_EQ(models[0]["state"], "loaded");
  EXPECT_EQ(models[1]["name"], "later-broken");
  EXPECT_EQ(models[1]["state"], "stale");
  EXPECT_THAT(models[1]["reason"].get<std::string>(), HasSubstr("later-broken/config.pbtxt:1"));
  EXPECT_EQ(models[1]["config"]["num_heads"], "2");  // the version still served
  EXPECT_EQ(models[2]["name"], "never");
  EXPECT_EQ(models[2]["state"], "failed");
  EXPECT_THAT(models[2]["reason"].get<std::string>(), HasSubstr("never"));
  EXPECT_FALSE(models[2].contains("config"));
}

TEST_F(ConsoleRepositoryTest, ShowsAConfigThatIsNotValidUtf8AsFailed) {
  // An overlong encoding of 'A' (C1 81), which protobuf's text parser takes and its JSON printer
  // copies through (nlohmann then threw on it, ending the process): the loader refuses it.
  WriteModel("odd");
  Write("odd", "config.pbtxt", "d_model: 8 num_heads: 2 description: \"\\301\\201\"");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> models =
      ModelRegistry::CreateFromRepository(root_.string());
  ASSERT_TRUE(models.ok()) << models.status();

  const Json answer = Json::parse(ConsoleModelsJson(**models, "1", false));
  ASSERT_EQ(answer["models"].size(), 1u);
  EXPECT_EQ(answer["models"][0]["name"], "odd");
  EXPECT_EQ(answer["models"][0]["state"], "failed");
  EXPECT_THAT(answer["models"][0]["reason"].get<std::string>(),
              HasSubstr("description is not valid UTF-8"));
}

TEST(MetricsJsonTest, GivesCountersGaugesAndCumulativeHistogramBuckets) {
  prometheus::Registry registry;
  prometheus::BuildCounter().Name("requests_total").Help("h1").Register(registry)
      .Add({{"model", "m"}, {"code", "OK"}}).Increment(3);
  prometheus::BuildGauge().Name("waiting").Help("h2").Register(registry).Add({}).Set(-2.5);
  prometheus::Histogram& histogram = prometheus::BuildHistogram()
                                         .Name("seconds")
                                         .Help("h3")
                                         .Register(registry)
                                         .Add({{"model", "m"}},
                                              prometheus::Histogram::BucketBoundaries{0.1, 1.0});
  for (double seconds : {0.05, 0.5, 0.7, 4.0}) histogram.Observe(seconds);

  const Json answer = Json::parse(MetricsJson(registry.Collect(), 1234.5, 7.25));
  EXPECT_EQ(answer["time_seconds"], 1234.5);
  EXPECT_EQ(answer["monotonic_seconds"], 7.25);
  std::map<std::string, Json> families;
  for (const Json& family : answer["families"]) families[family["name"]] = family;

  const Json& counter = families.at("requests_total");
  EXPECT_EQ(counter["type"], "counter");
  EXPECT_EQ(counter["help"], "h1");
  EXPECT_EQ(counter["samples"][0]["labels"], (Json{{"model", "m"}, {"code", "OK"}}));
  EXPECT_EQ(counter["samples"][0]["value"], 3.0);
  EXPECT_EQ(families.at("waiting")["samples"][0]["value"], -2.5);

  const Json& sample = families.at("seconds")["samples"][0];
  EXPECT_EQ(families.at("seconds")["type"], "histogram");
  EXPECT_EQ(sample["count"], 4);
  EXPECT_DOUBLE_EQ(sample["sum"].get<double>(), 5.25);
  // 0.05 ≤ 0.1; 0.5 and 0.7 ≤ 1; 4 only under +Inf, written as null.
  const Json expected_buckets = Json::parse(
      R"([{"le": 0.1, "count": 1}, {"le": 1.0, "count": 3}, {"le": null, "count": 4}])");
  EXPECT_EQ(sample["buckets"], expected_buckets);
}

TEST(MetricsJsonTest, WritesNonFiniteValuesAsNull) {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Gauge>& gauges =
      prometheus::BuildGauge().Name("g").Help("h").Register(registry);
  gauges.Add({{"k", "nan"}}).Set(std::numeric_limits<double>::quiet_NaN());
  gauges.Add({{"k", "inf"}}).Set(-std::numeric_limits<double>::infinity());
  gauges.Add({{"k", "one"}}).Set(1);

  const Json samples = Json::parse(MetricsJson(registry.Collect(), 0, 0))["families"][0]["samples"];
  std::map<std::string, Json> by_label;
  for (const Json& sample : samples) by_label[sample["labels"]["k"]] = sample["value"];
  EXPECT_TRUE(by_label.at("nan").is_null());
  EXPECT_TRUE(by_label.at("inf").is_null());
  EXPECT_EQ(by_label.at("one"), 1.0);
}

TEST(ConsoleFilesTest, MapsPathsToEmbeddedFilesOnly) {
  const ConsoleFile* index = FindConsoleFile("/");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->name, "index.html");
  EXPECT_THAT(std::string(index->bytes), HasSubstr("<html"));
  // Every embedded file is reachable under /console/, and its bytes are the file's.
  for (const ConsoleFile& file : ConsoleFiles()) {
    EXPECT_EQ(FindConsoleFile("/console/" + std::string(file.name)), &file);
    std::ifstream source(std::string(ATTNSERVE_CONSOLE_ASSETS) + "/" + std::string(file.name),
                         std::ios::binary);
    const std::string contents((std::istreambuf_iterator<char>(source)),
                               std::istreambuf_iterator<char>());
    // Not EXPECT_EQ: a mismatch would print both files whole.
    EXPECT_TRUE(file.bytes == contents) << file.name << " differs from its source file";
  }
  EXPECT_EQ(FindConsoleFile("/console/"), nullptr);
  EXPECT_EQ(FindConsoleFile("/console/../CMakeLists.txt"), nullptr);
  EXPECT_EQ(FindConsoleFile("/console/index.html/"), nullptr);
  EXPECT_EQ(FindConsoleFile("/index.html"), nullptr);
  EXPECT_EQ(FindConsoleFile("/v2"), nullptr);
}

TEST(ConsoleFilesTest, NamesContentTypesByExtension) {
  EXPECT_EQ(ContentTypeOf("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(ContentTypeOf("console.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(ContentTypeOf("console.css"), "text/css; charset=utf-8");
  EXPECT_EQ(ContentTypeOf("logo.svg"), "image/svg+xml");
  EXPECT_EQ(ContentTypeOf("notes.txt"), "application/octet-stream");
}

}  // namespace
}  // namespace attnserve
