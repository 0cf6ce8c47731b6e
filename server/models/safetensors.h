// Reads tensors from a safetensors file (8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}}, then the data), converting F32, BF16 and F16 to float.
#ifndef ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_
#define ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnserve {

struct SafetensorsEntry {
  std::string dtype;           // "F32", "BF16", "F16", … as written in the header
  std::vector<int64_t> shape;
  int64_t begin = 0;           // byte offsets into the data section
  int64_t end = 0;
};

class SafetensorsFile {
 public:
  // Reads the whole file and checks the header: every entry's offsets lie in the data section
  // and match its shape × dtype size. Messages name the file (and the tensor).
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  // The same checks on a file's contents already in memory; `path` names it in messages. Open
  // reads the file and calls this.
  static absl::StatusOr<SafetensorsFile> Parse(absl::string_view bytes, const std::string& path);

  // The tensor as float, checked to have exactly `shape`. NOT_FOUND when absent; INVALID_ARGUMENT
  // naming file, tensor, actual and expected shape otherwise. Supported dtypes: F32, BF16, F16.
  absl::StatusOr<std::vector<float>> Read(absl::string_view name,
                                          const std::vector<int64_t>& shape) const;

  bool Contains(absl::string_view name) const { return entries_.count(std::string(name)) > 0; }

  // Every tensor of the header (not __metadata__), by name.
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }

  // The stored dtypes of the tensors read so far, sorted and joined by "+" (e.g. "BF16+F16").
  std::string DtypesRead() const;

 private:
  mutable std::set<std::string> dtypes_read_;
  std::string path_;
  std::string data_;  // the data section
  std::map<std::string, SafetensorsEntry> entries_;
};

// Bytes per element of a safetensors dtype ("F32" → 4, "BF16" → 2, …); 0 for one it does not know.
int64_t SafetensorsDtypeSize(absl::string_view dtype);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_
