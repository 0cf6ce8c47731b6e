// The safetensors reader: the input is a whole weights file. Every tensor the header accepts is
// then read back with its own shape, as a model load would read it. Findings: any sanitizer report
// or crash, and an accepted header whose entries break what readers rely on (offsets inside the
// data section, non-negative dimensions, a span matching shape × dtype size).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_support.h"
#include "server/safetensors.h"

namespace attnserve::fuzz {
namespace {

void FuzzOneFile(const uint8_t* data, size_t size) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Parse(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return;
  for (const auto& [name, entry] : file->entries()) {
    int64_t elements = 1;
    for (int64_t dim : entry.shape) {
      FUZZ_CHECK(dim >= 0, absl::StrCat("tensor \"", name, "\" has dimension ", dim));
      elements *= dim;  // bounded by the file's size when every dimension is non-negative
    }
    FUZZ_CHECK(0 <= entry.begin && entry.begin <= entry.end &&
                   entry.end <= static_cast<int64_t>(size),
               absl::StrCat("tensor \"", name, "\" spans [", entry.begin, ", ", entry.end, ")"));
    absl::StatusOr<std::vector<float>> values = file->Read(name, entry.shape);
    if (values.ok()) {
      FUZZ_CHECK(static_cast<int64_t>(values->size()) == elements,
                 absl::StrCat("tensor \"", name, "\": ", values->size(), " values for ",
                              elements, " elements"));
    }
  }
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnserve::fuzz::FuzzOneFile(data, size);
  return 0;
}
