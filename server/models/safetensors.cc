#include "server/models/safetensors.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/kernels/bfloat16.h"
#include "core/kernels/float16.h"
#include "nlohmann/json.hpp"

namespace attnserve {
namespace {

// Largest header accepted; real headers are a few kilobytes.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

}  // namespace

int64_t SafetensorsDtypeSize(absl::string_view dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return Parse(buffer.str(), path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(absl::string_view bytes,
                                                       const std::string& path) {
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes.size(),
                                                   " bytes is too short for a safetensors file"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<uint8_t>(bytes[i]);
  if (header_size > kMaxHeaderBytes || header_size > bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_size,
                                                   " exceeds the file (", bytes.size(), " bytes)"));
  }
  const nlohmann::json header =
      nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_size, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not a JSON object"));
  }
  SafetensorsFile file;
  file.path_ = path;
  file.data_ = std::string(bytes.substr(8 + header_size));
  const int64_t data_size = static_cast<int64_t>(file.data_.size());
  for (const auto& item : header.items()) {
    // Named variables, not a structured binding: lambdas cannot capture those in C++17 (clang).
    const std::string& name = item.key();
    const nlohmann::json& value = item.value();
    if (name == "__metadata__") continue;
    const auto invalid = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", name, "\": ", why));
    };
    if (!value.is_object() || !value.contains("dtype") || !value["dtype"].is_string() ||
        !value.contains("shape") || !value["shape"].is_array() ||
        !value.contains("data_offsets") || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2) {
      return invalid("needs dtype, shape and two data_offsets");
    }
    SafetensorsEntry entry;
    entry.dtype = value["dtype"].get<std::string>();
    const int64_t element_size = SafetensorsDtypeSize(entry.dtype);
    if (element_size == 0) return invalid(absl::StrCat("unknown dtype ", entry.dtype));
    int64_t count = 1;
    for (const auto& dim : value["shape"]) {
      // Checked as unsigned before the conversion: 2^63 or more would turn negative (and pass
      // the size check below when an earlier dimension is 0).
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return invalid("shape must hold integers in [0, 2^63)");
      }
      const int64_t d = dim.get<int64_t>();
      if (d != 0 && count > data_size / d) return invalid("shape is larger than the file");
      entry.shape.push_back(d);
      count *= d;
    }
    for (const auto& offset : value["data_offsets"]) {
      if (!offset.is_number_unsigned()) return invalid("data_offsets must be non-negative");
    }
    // Compared as unsigned before any conversion: offsets of 2^63 or more must not turn negative.
    const uint64_t begin = value["data_offsets"][0].get<uint64_t>();
    const uint64_t end = value["data_offsets"][1].get<uint64_t>();
    if (begin > end || end > static_cast<uint64_t>(data_size)) {
      return invalid(absl::StrCat("data_offsets [", begin, ", ", end, ") lie outside the ",
                                  data_size, "-byte data section"));
    }
    entry.begin = static_cast<int64_t>(begin);
    entry.end = static_cast<int64_t>(end);
    if (entry.end - entry.begin != count * element_size) {
      return invalid(absl::StrCat("data_offsets span ", entry.end - entry.begin, " bytes; shape ",
                                  ShapeString(entry.shape), " of ", entry.dtype, " needs ",
                                  count * element_size));
    }
    file.entries_.emplace(name, std::move(entry));
  }
  return file;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::Read(
    absl::string_view name, const std::vector<int64_t>& shape) const {
  auto it = entries_.find(std::string(name));
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\" (expected shape ",
                                            ShapeString(shape), ")"));
  }
  const SafetensorsEntry& entry = it->second;
  if (entry.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor \"", name, "\" has shape ",
                                                   ShapeString(entry.shape), "; expected ",
                                                   ShapeString(shape)));
  }
  const char* data = data_.data() + entry.begin;
  const int64_t count = (entry.end - entry.begin) / SafetensorsDtypeSize(entry.dtype);
  dtypes_read_.insert(entry.dtype);
  std::vector<float> values(count);
  if (entry.dtype == "F32") {
    // An empty tensor's vector has no buffer, and memcpy to null is undefined even for 0 bytes.
    if (count > 0) std::memcpy(values.data(), data, count * sizeof(float));
  } else if (entry.dtype == "BF16" || entry.dtype == "F16") {
    const bool bf16 = entry.dtype == "BF16";
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, data + 2 * i, sizeof(bits));
      values[i] = bf16 ? Bfloat16ToFloat(bits) : HalfToFloat(bits);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor \"", name, "\" is ",
                                                   entry.dtype, "; weights must be F32, BF16 or F16"));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor \"", name, "\" element ", i,
                                                     " is ", values[i], "; weights must be finite"));
    }
  }
  return values;
}

std::string SafetensorsFile::DtypesRead() const { return absl::StrJoin(dtypes_read_, "+"); }

}  // namespace attnserve
