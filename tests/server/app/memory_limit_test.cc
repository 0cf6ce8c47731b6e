// DetectMemoryLimit: the cgroup v2 and v1 limits when set, the machine's memory otherwise (and
// for cgroup v1's "no limit" value), from a cgroup tree made in a temporary folder.
#include "server/app/memory_limit.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

class MemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("attnserve_cgroup_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(root_ / "memory");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& file, const std::string& content) {
    std::ofstream(root_ / file) << content;
  }

  static int64_t Physical() {
    return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  }

  std::filesystem::path root_;
};

TEST_F(MemoryLimitTest, CgroupV2Limit) {
  Write("memory.max", "4294967296\n");
  const MemoryLimit limit = DetectMemoryLimit(root_.string());
  EXPECT_EQ(limit.bytes, std::min<int64_t>(4294967296, Physical()));
  if (Physical() > 4294967296) {
    EXPECT_EQ(limit.source, "the container's memory limit");
  }
}

TEST_F(MemoryLimitTest, CgroupV2WithoutALimitIsTheMachine) {
  Write("memory.max", "max\n");
  const MemoryLimit limit = DetectMemoryLimit(root_.string());
  EXPECT_EQ(limit.bytes, Physical());
  EXPECT_EQ(limit.source, "the machine's memory");
}

TEST_F(MemoryLimitTest, CgroupV1LimitAndItsNoLimitValue) {
  Write("memory/memory.limit_in_bytes", "536870912\n");
  EXPECT_EQ(DetectMemoryLimit(root_.string()).bytes, std::min<int64_t>(536870912, Physical()));
  Write("memory/memory.limit_in_bytes", "9223372036854771712\n");  // v1: unlimited
  EXPECT_EQ(DetectMemoryLimit(root_.string()).bytes, Physical());
}

TEST_F(MemoryLimitTest, NoCgroupFilesIsTheMachine) {
  EXPECT_EQ(DetectMemoryLimit((root_ / "absent").string()).bytes, Physical());
}

}  // namespace
}  // namespace attnserve
