// A model repository in a fresh temporary folder for a test, removed at the end, its files
// written as a deployment writes them.
#ifndef ATTNSERVE_TESTS_SERVER_MODELS_REPOSITORY_FIXTURE_H_
#define ATTNSERVE_TESTS_SERVER_MODELS_REPOSITORY_FIXTURE_H_

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/test_safetensors.h"

namespace attnserve::testing {

class RepositoryFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::UnitTest& test = *::testing::UnitTest::GetInstance();
    root_ = std::filesystem::temp_directory_path() /
            ("attnserve_repository_" + std::to_string(test.random_seed()) + "_" +
             test.current_test_info()->test_suite_name() + "_" +
             test.current_test_info()->name());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // Writes `contents` to folder/name through a rename, as a deployment would (a new inode).
  void Write(const std::string& folder, const std::string& name, const std::string& contents) {
    std::filesystem::create_directories(root_ / folder);
    const std::filesystem::path path = root_ / folder / name;
    std::ofstream(path.string() + ".tmp", std::ios::binary) << contents;
    std::filesystem::rename(path.string() + ".tmp", path);
  }
  // A d_model 8, 2-head model (no encoding, no biases) whose weights are all `value`.
  void WriteModel(const std::string& folder, float value = 0.125f) {
    Write(folder, "config.pbtxt", "d_model: 8 num_heads: 2");
    std::vector<F32Tensor> tensors;
    for (const char* name : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"}) {
      tensors.push_back({name, {8, 8}, std::vector<float>(64, value)});
    }
    Write(folder, "weights.safetensors", SafetensorsBytes(tensors));
  }

  std::filesystem::path root_;
};

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_SERVER_MODELS_REPOSITORY_FIXTURE_H_
