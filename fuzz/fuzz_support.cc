#include "fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>
#include <limits>

#include "google/protobuf/stubs/logging.h"
#include "nlohmann/json.hpp"

namespace attnserve::fuzz {

void CheckFailed(const char* condition, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n  %s\n", file, line, condition,
               detail.c_str());
  std::abort();
}

void QuietProtobufLogs() { google::protobuf::SetLogHandler(nullptr); }

DemoService& TheDemoService() {
  static DemoService* service = [] {
    QuietProtobufLogs();
    absl::StatusOr<std::unique_ptr<ModelRegistry>> demo = ModelRegistry::CreateWithDemoModels();
    FUZZ_CHECK(demo.ok(), demo.status().ToString());
    auto* service = new DemoService{*std::move(demo), {}, {}};
    service->limits.max_batch = 4;
    service->limits.max_sequence_length = 64;
    service->limits.max_attention_elements = 8192;
    service->limits.max_response_bytes = 1 << 20;
    service->limits.max_kv_cache_bytes = 1 << 20;
    return service;
  }();
  return *service;
}

std::string SafetensorsBytes(const std::vector<StoredTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::string data;
  for (const StoredTensor& tensor : tensors) {
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {data.size(), data.size() + tensor.data.size()}}};
    data += tensor.data;
  }
  // Names that are not UTF-8 are written with U+FFFD in place of the invalid bytes.
  const std::string json =
      header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  return bytes + json + data;
}

int64_t TensorBytes(v1::DataType dtype, const std::vector<int64_t>& shape) {
  int64_t bytes;
  switch (dtype) {
    case v1::FLOAT32:
    case v1::INT32:
      bytes = 4;
      break;
    case v1::BFLOAT16:
      bytes = 2;
      break;
    case v1::INT64:
      bytes = 8;
      break;
    default:
      return -1;
  }
  for (int64_t dim : shape) {
    if (dim < 0 || (dim > 0 && bytes > std::numeric_limits<int64_t>::max() / dim)) return -1;
    bytes *= dim;
  }
  return bytes;
}

}  // namespace attnserve::fuzz
