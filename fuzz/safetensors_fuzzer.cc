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
#include "server/models/safetensors.h"

namespace attnserve::fuzz {
namespace {

void FuzzOneFile(const uint8_t* data, size_t size) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Parse(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return;
  // An accepted file has its 8-byte little-endian header length, the header, then the data.
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | data[i];
  FUZZ_CHECK(header_bytes <= size - 8, absl::StrCat("header of ", header_bytes, " bytes in a ",
                                                    size, "-byte file was accepted"));
  const int64_t data_bytes = static_cast<int64_t>(size - 8 - header_bytes);
  for (const auto& [name, entry] : file->entries()) {
    int64_t elements = 1;
    for (int64_t dim : entry.shape) {
      FUZZ_CHECK(dim >= 0, absl::StrCat("tensor \"", name, "\" has dimension ", dim));
      elements *= dim;  // bounded by the file's size when every dimension is non-negative
    }
    FUZZ_CHECK(0 <= entry.begin && entry.begin <= entry.end && entry.end <= data_bytes,
               absl::StrCat("tensor \"", name, "\" spans [", entry.begin, ", ", entry.end,
                            ") of a ", data_bytes, "-byte data section"));
    FUZZ_CHECK(entry.end - entry.begin == elements * SafetensorsDtypeSize(entry.dtype),
               absl::StrCat("tensor \"", name, "\" spans ", entry.end - entry.begin,
                            " bytes for ", elements, " elements of ", entry.dtype));
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
