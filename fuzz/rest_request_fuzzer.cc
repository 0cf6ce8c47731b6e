// The KServe v2 REST door's request decoder and everything behind it: the first byte picks the
// model (low 4 bits: a demo model or an operation model, kRestModels) and whether the binary data
// extension is used (0x80: the next 4 bytes, little-endian, are Inference-Header-Content-Length);
// the rest is the body. ParseInferRequest decodes it, RunModelInfer runs it directly (no network,
// on the calling thread) over the demo models with small limits, and WriteInferResponse writes
// the answer.
// Findings: any sanitizer report or crash; a status a client cannot cause (UNKNOWN, INTERNAL); a
// decoded raw input outside the body, or binary inputs that do not add up to the body's binary
// part; an OK answer whose outputs' bytes do not match their shapes, or whose JSON does not parse
// or does not account for its binary part.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/encodings/position_table_cache.h"
#include "fuzz/fuzz_support.h"
#include "nlohmann/json.hpp"
#include "server/kserve/model_infer.h"
#include "server/kserve/rest_codec.h"
#include "server/models/model_registry.h"
#include "server/rpc/status_util.h"

namespace attnserve::fuzz {
namespace {

// Every raw input views the body, and together the binary inputs are exactly its binary part.
void CheckRawViews(const InferRequest& request, absl::string_view body,
                   std::optional<int64_t> json_length) {
  size_t binary = 0;
  for (const InferInput& input : request.inputs) {
    if (!input.raw.has_value()) continue;
    FUZZ_CHECK(input.raw->data() >= body.data() &&
                   input.raw->data() + input.raw->size() <= body.data() + body.size(),
               absl::StrCat("input ", input.name, " views outside the body"));
    binary += input.raw->size();
  }
  const size_t expected = json_length.has_value() ? body.size() - *json_length : 0;
  FUZZ_CHECK(binary == expected, absl::StrCat(binary, " binary bytes decoded of ", expected));
}

// An OK answer: outputs sized by their shapes; the JSON parses and accounts for the binary part.
void CheckAnswer(const InferResponse& response, const RestInferRequest& parsed) {
  for (const InferOutput& output : response.outputs) {
    int64_t elements = 1;
    for (int64_t dim : output.shape) elements *= dim;
    FUZZ_CHECK(elements * DatatypeSize(output.datatype) == static_cast<int64_t>(output.raw.size()),
               absl::StrCat(output.name, ": ", output.raw.size(), " bytes for ", output.datatype,
                            " [", absl::StrJoin(output.shape, ","), "]"));
  }
  const RestBody body = WriteInferResponse(response, parsed.request, parsed.options);
  const size_t json_length = body.json_length.value_or(static_cast<int64_t>(body.bytes.size()));
  const nlohmann::json answer =
      nlohmann::json::parse(body.bytes.begin(), body.bytes.begin() + json_length, nullptr, false);
  FUZZ_CHECK(!answer.is_discarded(), "the answer's JSON does not parse");
  size_t binary = 0;
  for (const nlohmann::json& output : answer["outputs"]) {
    if (output.contains("parameters")) binary += output["parameters"]["binary_data_size"].get<size_t>();
  }
  FUZZ_CHECK(json_length + binary == body.bytes.size(),
             absl::StrCat(json_length, " + ", binary, " != ", body.bytes.size()));
}

void FuzzOneBody(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const uint8_t selector = data[0];
  ++data;
  --size;
  std::optional<int64_t> json_length;
  if (selector & 0x80) {
    if (size < 4) return;
    uint32_t length;
    std::memcpy(&length, data, sizeof(length));
    json_length = length;
    data += 4;
    size -= 4;
  }
  const std::string model(kRestModels[(selector & 0x0f) % std::size(kRestModels)]);
  DemoService& service = TheDemoService();
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<RestInferRequest> parsed = ParseInferRequest(body, json_length, model, "");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    return;
  }
  CheckRawViews(parsed->request, body, json_length);
  const RequestContext context = service.Context();
  InferResponse response;
  const grpc::Status status = ServeRpc("ModelInfer", [&]() -> absl::Status {
    return RunModelInfer(context, *service.models, parsed->request, &response).status();
  });
  FUZZ_CHECK(status.error_code() != grpc::StatusCode::INTERNAL &&
                 status.error_code() != grpc::StatusCode::UNKNOWN,
             absl::StrCat("code ", status.error_code(), ": ", status.error_message()));
  if (status.ok()) CheckAnswer(response, *parsed);
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnserve::fuzz::FuzzOneBody(data, size);
  return 0;
}
