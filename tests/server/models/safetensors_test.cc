#include "server/models/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

// A per-process path, so concurrent test processes never share files.
std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("attnserve_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// Writes a safetensors file: header JSON as given, then `data`.
std::string WriteFile(const std::string& name, const std::string& header, const std::string& data) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((size >> (8 * i)) & 0xff));
  out << header << data;
  return path;
}

std::string Bytes(const void* data, size_t size) {
  return std::string(static_cast<const char*>(data), size);
}

TEST(SafetensorsTest, ReadsF32Bf16AndF16AsFloat) {
  const float f32[3] = {1.5f, -2.0f, 0.25f};
  const uint16_t bf16[2] = {0x3fc0, 0xc000};  // 1.5, -2
  const uint16_t f16[2] = {0x3c00, 0xb800};   // 1, -0.5
  const std::string data = Bytes(f32, 12) + Bytes(bf16, 4) + Bytes(f16, 4);
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[12,16]},)"
      R"("c":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"__metadata__":{"format":"pt"}})";
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(WriteFile("ok.safetensors", header, data));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file->Read("a", {3}), (std::vector<float>{1.5f, -2.0f, 0.25f}));
  EXPECT_EQ(*file->Read("b", {1, 2}), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(*file->Read("c", {2}), (std::vector<float>{1.0f, -0.5f}));
  EXPECT_THAT(std::string(file->Read("a", {1, 3}).status().message()),
              HasSubstr("tensor \"a\" has shape [3]; expected [1, 3]"));
  EXPECT_EQ(file->Read("missing", {1}).status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, RejectsMalformedFilesNamingTheProblem) {
  const std::string four = Bytes("\0\0\0\0", 4);
  auto open_message = [](const std::string& path) {
    return std::string(SafetensorsFile::Open(path).status().message());
  };
  EXPECT_THAT(open_message(WriteFile("bad1.safetensors", "not json", "")),
              HasSubstr("header is not a JSON object"));
  EXPECT_THAT(open_message(WriteFile(
                  "bad2.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                  four)),
              HasSubstr("lie outside the 4-byte data section"));
  EXPECT_THAT(open_message(WriteFile(
                  "bad3.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                  four)),
              HasSubstr("needs 8"));
  EXPECT_THAT(open_message(WriteFile(
                  "bad4.safetensors", R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})",
                  four)),
              HasSubstr("unknown dtype Q4"));
  // Offsets of 2^63 or more must not wrap to negative positions before the data.
  EXPECT_THAT(open_message(WriteFile("bad6.safetensors",
                                     R"({"a":{"dtype":"F32","shape":[1],)"
                                     R"("data_offsets":[18446744073709551612,0]}})",
                                     four)),
              HasSubstr("lie outside the 4-byte data section"));
  // A header length past the end of the file.
  const std::string path = TempPath("bad5.safetensors");
  std::ofstream(path, std::ios::binary) << Bytes("\xff\xff\x00\x00\x00\x00\x00\x00", 8) << "{}";
  EXPECT_THAT(open_message(path), HasSubstr("exceeds the file"));
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/x.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, RejectsNonFiniteWeights) {
  const float values[2] = {1.0f, NAN};
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(WriteFile(
      "nan.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      Bytes(values, 8)));
  ASSERT_TRUE(file.ok());
  EXPECT_THAT(std::string(file->Read("w", {2}).status().message()),
              HasSubstr("element 1 is nan"));
}

// Found by safetensors_fuzzer (fuzz/corpus/safetensors/mixed.safetensors): reading an empty F32
// tensor passed a null pointer to memcpy, which UBSan reports (scripts/sanitize.sh address).
TEST(SafetensorsTest, ParsesFromMemoryAndReadsEmptyTensors) {
  std::string bytes(8, '\0');
  const std::string header =
      R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
      R"("h":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}})";
  bytes[0] = static_cast<char>(header.size());
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Parse(bytes + header, "mem.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->entries().size(), 2u);
  absl::StatusOr<std::vector<float>> empty = file->Read("e", {0, 4});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
  EXPECT_TRUE(file->Read("h", {0})->empty());
  EXPECT_THAT(std::string(SafetensorsFile::Parse("1234", "mem.safetensors").status().message()),
              HasSubstr("mem.safetensors: 4 bytes is too short"));
}

// A dimension of 2^63 or more became negative, and after a 0 dimension passed the size check:
// shape [0, 2^64−1] was accepted as [0, -1] (the safetensors fuzzer's invariant on dimensions).
TEST(SafetensorsTest, RejectsDimensionsThatDoNotFitInt64) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  EXPECT_THAT(std::string(SafetensorsFile::Parse(bytes + header, "mem.safetensors")
                              .status()
                              .message()),
              HasSubstr("tensor \"a\": shape must hold integers in [0, 2^63)"));
}

}  // namespace
}  // namespace attnserve
