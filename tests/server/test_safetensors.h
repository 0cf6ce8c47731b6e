// Safetensors files written by the tests (F32 tensors), independent of the loader under test.
#ifndef ATTNSERVE_TESTS_SERVER_TEST_SAFETENSORS_H_
#define ATTNSERVE_TESTS_SERVER_TEST_SAFETENSORS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace attnserve::testing {

struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // product(shape) values, row-major
};

// The bytes of a safetensors file: an 8-byte little-endian header length, the JSON header, the
// tensors' data back to back in order.
inline std::string SafetensorsBytes(const std::vector<F32Tensor>& tensors) {
  std::string header = "{", data;
  for (const F32Tensor& tensor : tensors) {
    std::string dims;
    for (int64_t dim : tensor.shape) dims += (dims.empty() ? "" : ",") + std::to_string(dim);
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(tensor.values.data()), 4 * tensor.values.size());
    header += (header.size() > 1 ? "," : "") +
              ("\"" + tensor.name + "\":{\"dtype\":\"F32\",\"shape\":[") + dims +
              "],\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(data.size()) + "]}";
  }
  header += "}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return bytes + header + data;
}

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_SERVER_TEST_SAFETENSORS_H_
