#include "server/models/model_registry.h"
#include "server/models/model_spec.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/model_store.h"
#include "server/models/safetensors.h"
#include "tests/server/models/repository_fixture.h"
#include "tests/server/test_safetensors.h"

namespace attnserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A safetensors file in memory holding F32 tensors of `shapes`, every element `value`.
std::string Weights(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                    float value = 0.125f) {
  std::vector<testing::F32Tensor> tensors;
  for (const auto& [name, shape] : shapes) {
    int64_t elements = 1;
    for (int64_t dim : shape) elements *= dim;
    tensors.push_back({name, shape, std::vector<float>(elements, value)});
  }
  return testing::SafetensorsBytes(tensors);
}

TEST(ParseModelConfigTest, ResolvesDefaultsAndNamesTheFolder) {
  absl::StatusOr<ModelSpec> spec =
      ParseModelConfig("d_model: 16 num_heads: 4 encoding { rope {} }", "m/config.pbtxt", "m");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->config.name(), "m");
  EXPECT_EQ(spec->num_kv_heads, 4);
  EXPECT_EQ(spec->head_dim, 4);
  EXPECT_TRUE(std::holds_alternative<RopeParams>(spec->encoding));
}

TEST(ParseModelConfigTest, RejectsBadConfigsNamingFileAndField) {
  auto message = [](const std::string& text) {
    return std::string(ParseModelConfig(text, "m/config.pbtxt", "m").status().message());
  };
  EXPECT_THAT(message("d_model: 16\nnum_heads: x"), HasSubstr("m/config.pbtxt:2:12:"));
  EXPECT_THAT(message("name: \"other\" d_model: 16 num_heads: 4"),
              HasSubstr("must equal its folder's name \"m\""));
  EXPECT_THAT(message("d_model: 2000000 num_heads: 4"),
              HasSubstr("d_model=2000000 must be in [0, 1048576]"));
  EXPECT_THAT(message("d_model: 10 num_heads: 4"), HasSubstr("must divide d_model=10"));
  EXPECT_THAT(message("d_model: 16 num_heads: 4 encoding { learned {} }"),
              HasSubstr("max_positions=0 must give the learned table's rows"));
  // Found by config_fuzzer (fuzz/corpus/config/regression-cope-negative-npos-max.pbtxt): table
  // rows became expected tensor shapes unchecked (cope.npos_max=-1 → shape [-1, 4]); they are
  // bounded like the dimensions.
  EXPECT_THAT(message("d_model: 16 num_heads: 4 encoding { t5 { num_buckets: -3 } }"),
              HasSubstr("encoding.t5.num_buckets=-3 must be in [1, 1048576]"));
  EXPECT_THAT(message("d_model: 16 num_heads: 4 encoding { cope { npos_max: -1 } }"),
              HasSubstr("encoding.cope.npos_max=-1 must be in [1, 1048576]"));
  EXPECT_THAT(message("d_model: 16 num_heads: 4 encoding { cope { npos_max: 2000000 } }"),
              HasSubstr("encoding.cope.npos_max=2000000 must be in [1, 1048576]"));
  // Strings that are not UTF-8 (an overlong 'A', a stray byte), which the text parser takes.
  EXPECT_THAT(message("d_model: 16 num_heads: 4 description: \"\\301\\201\""),
              HasSubstr("m/config.pbtxt: description is not valid UTF-8"));
  EXPECT_THAT(message("d_model: 16 num_heads: 4 tensor_names { q_proj_weight: \"q\\377\" }"),
              HasSubstr("m/config.pbtxt: tensor_names.q_proj_weight is not valid UTF-8"));
  EXPECT_THAT(std::string(ParseModelConfig("d_model: 16 num_heads: 4", "\xC1/config.pbtxt",
                                           "\xC1").status().message()),
              HasSubstr("name is not valid UTF-8"));  // the folder's name
  EXPECT_TRUE(ParseModelConfig("d_model: 16 num_heads: 4 description: \"café 注意\"",
                               "m/config.pbtxt", "m").ok());
}

TEST(RequiredTensorsTest, ListsWeightsBiasesAndTablesWithOverrides) {
  absl::StatusOr<ModelSpec> spec = ParseModelConfig(
      "d_model: 8 num_heads: 2 num_kv_heads: 1 o_bias: true max_positions: 5 "
      "encoding { learned {} } tensor_names { position_embeddings: \"wpe.weight\" }",
      "m/config.pbtxt", "m");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<std::string> listed;
  for (const RequiredTensor& tensor : RequiredTensors(*spec)) {
    std::string shape;
    for (int64_t dim : tensor.shape) shape += "," + std::to_string(dim);
    listed.push_back(tensor.name + shape);
  }
  EXPECT_THAT(listed, ElementsAre("q_proj.weight,8,8", "k_proj.weight,4,8", "v_proj.weight,4,8",
                                  "o_proj.weight,8,8", "o_proj.bias,8", "wpe.weight,5,8"));
}

TEST(LoadModelTest, LoadsFromAWeightsFileInMemory) {
  absl::StatusOr<ModelSpec> spec = ParseModelConfig(
      "d_model: 8 num_heads: 2 encoding { t5 { num_buckets: 4 max_distance: 8 } }",
      "m/config.pbtxt", "m");
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<SafetensorsFile> weights = SafetensorsFile::Parse(
      Weights({{"q_proj.weight", {8, 8}},
               {"k_proj.weight", {8, 8}},
               {"v_proj.weight", {8, 8}},
               {"o_proj.weight", {8, 8}},
               {"relative_attention_bias.weight", {4, 2}}}),
      "m/weights.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  absl::StatusOr<LoadedModel> model = LoadModel(*spec, *weights);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config.head_dim(), 4);
  EXPECT_EQ(model->weights_dtype, "F32");
  const auto* t5 = std::get_if<T5BiasParams>(&model->layer->config().encoding);
  ASSERT_NE(t5, nullptr);
  ASSERT_NE(t5->table, nullptr);
  EXPECT_EQ(t5->table->size(), 8u);

  // Without the table the load names it.
  weights = SafetensorsFile::Parse(Weights({{"q_proj.weight", {8, 8}},
                                            {"k_proj.weight", {8, 8}},
                                            {"v_proj.weight", {8, 8}},
                                            {"o_proj.weight", {8, 8}}}),
                                   "m/weights.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  model = LoadModel(*spec, *weights);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("m/weights.safetensors: no tensor \"relative_attention_bias.weight\""));
}

class RepositoryTest : public testing::RepositoryFixture {};

TEST_F(RepositoryTest, ReloadKeepsUnchangedAndPreviousVersionsAndDropsRemovedFolders) {
  WriteModel("a", 0.125f);
  WriteModel("b", 0.25f);
  absl::StatusOr<std::unique_ptr<ModelRegistry>> first =
      ModelRegistry::CreateFromRepository(root_.string());
  ASSERT_TRUE(first.ok()) << first.status();
  const LoadedModel* a1 = *(*first)->Find("a");

  // Nothing changed: the same loaded models.
  ReloadReport report;
  absl::StatusOr<std::unique_ptr<ModelRegistry>> second =
      ModelRegistry::Reload(**first, root_.string(), &report);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(report.unchanged, ElementsAre("a", "b"));
  EXPECT_TRUE(report.added.empty() && report.updated.empty() && report.removed.empty());
  EXPECT_EQ(*(*second)->Find("a"), a1);

  // A broken config: a's previous version goes on, stale; b removed; c new and broken.
  Write("a", "config.pbtxt", "d_model: 8 num_heads: two");
  std::filesystem::remove_all(root_ / "b");
  Write("c", "config.pbtxt", "d_model: 8 num_heads: 2");
  absl::StatusOr<std::unique_ptr<ModelRegistry>> third =
      ModelRegistry::Reload(**second, root_.string(), &report);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_THAT(report.kept_previous, ElementsAre("a"));
  EXPECT_EQ(report.failed.size(), 2u);
  EXPECT_THAT(std::string(report.failed.at("a").message()), HasSubstr("a/config.pbtxt:1"));
  EXPECT_THAT(report.removed, ElementsAre("b"));
  EXPECT_EQ(*(*third)->Find("a"), a1);
  EXPECT_EQ((*third)->stale().count("a"), 1u);
  EXPECT_EQ((*third)->Find("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string((*third)->Find("c").status().message()), HasSubstr("failed to load"));

  // The same broken files are not tried again; a stays stale.
  absl::StatusOr<std::unique_ptr<ModelRegistry>> fourth =
      ModelRegistry::Reload(**third, root_.string(), &report);
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  EXPECT_TRUE(report.failed.empty());
  EXPECT_EQ((*fourth)->stale().count("a"), 1u);
  EXPECT_EQ((*fourth)->Find("c").status().code(), absl::StatusCode::kNotFound);

  // Fixed: a new version, no longer stale.
  WriteModel("a", 0.5f);
  absl::StatusOr<std::unique_ptr<ModelRegistry>> fifth =
      ModelRegistry::Reload(**fourth, root_.string(), &report);
  ASSERT_TRUE(fifth.ok()) << fifth.status();
  EXPECT_THAT(report.updated, ElementsAre("a"));
  EXPECT_NE(*(*fifth)->Find("a"), a1);
  EXPECT_TRUE((*fifth)->stale().empty());

  // An unreadable repository is an error (the caller keeps what it serves).
  EXPECT_EQ(ModelRegistry::Reload(**fifth, (root_ / "missing").string(), &report).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RepositoryTest, StoreSnapshotsOutliveAReplacement) {
  WriteModel("a", 0.125f);
  absl::StatusOr<std::unique_ptr<ModelRegistry>> first =
      ModelRegistry::CreateFromRepository(root_.string());
  ASSERT_TRUE(first.ok()) << first.status();
  ModelStore store(*std::move(first));
  const std::shared_ptr<const ModelRegistry> snapshot = store.Current();
  const LoadedModel* old_model = *snapshot->Find("a");

  std::filesystem::remove_all(root_ / "a");
  WriteModel("b", 0.25f);
  absl::StatusOr<std::unique_ptr<ModelRegistry>> next =
      ModelRegistry::Reload(*store.Current(), root_.string(), nullptr);
  ASSERT_TRUE(next.ok()) << next.status();
  store.Replace(*std::move(next));

  EXPECT_EQ(store.Current()->Find("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Current()->Find("b").ok());
  // The snapshot taken before still serves a, with the same loaded model.
  EXPECT_EQ(*snapshot->Find("a"), old_model);
  EXPECT_EQ(old_model->config.d_model(), 8);
}

}  // namespace
}  // namespace attnserve
