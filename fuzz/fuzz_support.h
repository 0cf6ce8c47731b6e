// Helpers shared by the fuzz targets and the seed generator (fuzz/make_seeds.cc).
#ifndef ATTNSERVE_FUZZ_FUZZ_SUPPORT_H_
#define ATTNSERVE_FUZZ_FUZZ_SUPPORT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnserve/v1/tensor.pb.h"
#include "core/encodings/position_table_cache.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"
#include "server/requests/service_limits.h"

// An invariant of the code under test: when it fails, the input is a finding. Prints the
// condition and aborts, which libFuzzer reports as a crash and saves the input for.
#define FUZZ_CHECK(condition, detail)                                                  \
  do {                                                                                 \
    if (!(condition)) ::attnserve::fuzz::CheckFailed(#condition, __FILE__, __LINE__, (detail)); \
  } while (false)

namespace attnserve::fuzz {

[[noreturn]] void CheckFailed(const char* condition, const char* file, int line,
                              const std::string& detail);

// Drops protobuf's log messages. Parsing logs every string field that is not UTF-8 and goes on;
// mutated inputs do that all the time, and the log would slow the fuzzer and bury its report.
void QuietProtobufLogs();

// One tensor of a safetensors file: raw little-endian `data` of `dtype` ("F32", "BF16", …).
struct StoredTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};

// The bytes of a safetensors file holding `tensors` back to back, in order. Bytes of a name that
// are not UTF-8 become U+FFFD (JSON cannot hold them).
std::string SafetensorsBytes(const std::vector<StoredTensor>& tensors);

// The product of `shape`'s dimensions times the byte size of `dtype` (FLOAT32 4, BFLOAT16 2,
// INT32 4, INT64 8); -1 for other dtypes or a negative or overflowing product.
int64_t TensorBytes(v1::DataType dtype, const std::vector<int64_t>& shape);

// What the request fuzzers run handlers with: the demo models and small limits, so that every
// accepted request is cheap.
struct DemoService {
  std::unique_ptr<ModelRegistry> models;
  ServiceLimits limits;
  PositionTableCache tables;
  // A context computing on the calling thread, nothing counted.
  RequestContext Context() { return RequestContext{limits, tables, nullptr, nullptr}; }
};
// The one DemoService of the process (made on first use; protobuf logs quieted first).
DemoService& TheDemoService();

// The models the REST fuzzer's first byte picks from (its low 4 bits, modulo the count); the
// seed generator names its seeds by them.
inline constexpr const char* kRestModels[] = {
    "demo-sinusoidal", "demo-nope-gqa", "demo-learned", "demo-rope", "demo-alibi", "demo-t5",
    "demo-cope", "attnserve.encode", "attnserve.sdpa", "attnserve.position_bias"};

}  // namespace attnserve::fuzz

#endif  // ATTNSERVE_FUZZ_FUZZ_SUPPORT_H_
