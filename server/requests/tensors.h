// Dense tensors as the request path holds them once decoded from any wire format.
#ifndef ATTNSERVE_SERVER_REQUESTS_TENSORS_H_
#define ATTNSERVE_SERVER_REQUESTS_TENSORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace attnserve {

// A row-major tensor: product(shape) values.
template <class T>
struct DenseTensor {
  std::vector<int64_t> shape;
  std::vector<T> values;
};

using FloatTensor = DenseTensor<float>;
// bf16 values kept as their bits (little-endian like x86), never widened.
using Bfloat16Tensor = DenseTensor<uint16_t>;

// A shape for messages: "[2,3,4]"; past 8 dims only the first 8 are shown, then "…(N dims)",
// so a message never echoes an unbounded client list.
std::string FormatShape(absl::Span<const int64_t> shape);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_TENSORS_H_
