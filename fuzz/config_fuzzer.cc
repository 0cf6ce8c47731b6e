// The model config reader: the input is a config.pbtxt. It goes through the registry's own parse
// and checks (ParseModelConfig); a config they accept, when its layer is small, is then loaded
// over an in-memory weights file holding every tensor it asks for (RequiredTensors) and run once
// on a three-token causal request. Nothing touches the disk. Findings: any sanitizer report or
// crash, a complete weights file refused for a missing tensor, and an INTERNAL or UNKNOWN status
// from a layer that loaded.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_support.h"
#include "server/models/model_registry.h"
#include "server/models/model_spec.h"
#include "server/models/safetensors.h"

namespace attnserve::fuzz {
namespace {

// Larger layers are only parsed: building their weights would slow every execution down.
constexpr int64_t kMaxWeightElements = int64_t{1} << 16;
constexpr int64_t kTokens = 3;

bool IsBug(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInternal ||
         status.code() == absl::StatusCode::kUnknown;
}

// Small finite values, different per element so that no projection is degenerate.
std::string F32Data(int64_t elements) {
  std::vector<float> values(elements);
  for (int64_t i = 0; i < elements; ++i) values[i] = static_cast<float>(i % 7 - 3) / 16;
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

void FuzzOneConfig(const uint8_t* data, size_t size) {
  static const bool quiet = (QuietProtobufLogs(), true);
  (void)quiet;
  absl::StatusOr<ModelSpec> spec = ParseModelConfig(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.pbtxt", "fuzz");
  if (!spec.ok()) {
    FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument,
               spec.status().ToString());
    return;
  }
  // The dimensions are at most 2^20 each (checked above), so these products cannot overflow.
  std::vector<StoredTensor> tensors;
  int64_t total = 0;
  for (const RequiredTensor& required : RequiredTensors(*spec)) {
    int64_t elements = 1;
    for (int64_t dim : required.shape) elements *= dim;
    total += elements;
    if (total > kMaxWeightElements) return;
    tensors.push_back({required.name, "F32", required.shape, F32Data(elements)});
  }
  absl::StatusOr<SafetensorsFile> weights =
      SafetensorsFile::Parse(SafetensorsBytes(tensors), "fuzz/weights.safetensors");
  FUZZ_CHECK(weights.ok(), weights.status().ToString());
  for (const StoredTensor& tensor : tensors) {
    // JSON holds only UTF-8 names: an override that is not cannot name a tensor of any weights
    // file (SafetensorsBytes wrote it altered), so such a model never loads.
    if (!weights->Contains(tensor.name)) return;
  }
  absl::StatusOr<LoadedModel> model = LoadModel(*std::move(spec), *weights);
  // Refusals are the config's fault, e.g. two tensor_names overrides naming one stored tensor
  // with different shapes, or encoding parameters the layer rejects.
  if (!model.ok()) {
    FUZZ_CHECK(model.status().code() == absl::StatusCode::kInvalidArgument ||
                   model.status().code() == absl::StatusCode::kOutOfRange,
               model.status().ToString());
    return;
  }
  const AttentionConfig& config = model->layer->config();
  std::vector<float> query(kTokens * config.d_model, 0.25f);
  std::vector<int64_t> positions = {0, 1, 2};
  AttendInputs inputs;
  inputs.query = query.data();
  inputs.batch = 1;
  inputs.q_len = kTokens;
  inputs.positions = positions.data();
  inputs.causal = true;
  std::vector<float> out(query.size());
  const absl::Status status = model->layer->Forward(inputs, out.data(), nullptr);
  FUZZ_CHECK(!IsBug(status), status.ToString());
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnserve::fuzz::FuzzOneConfig(data, size);
  return 0;
}
