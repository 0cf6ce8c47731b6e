// The KServe v2 REST protocol's bodies ↔ the transport-neutral requests (infer_tensors.h): JSON,
// and JSON followed by binary tensor data (the protocol's binary data extension:
// Inference-Header-Content-Length gives the JSON's length, each binary input's
// `binary_data_size` parameter its bytes, in input order). No HTTP here.
#ifndef ATTNSERVE_SERVER_KSERVE_REST_CODEC_H_
#define ATTNSERVE_SERVER_KSERVE_REST_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/kserve/infer_tensors.h"
#include "server/kserve/model_infer.h"

namespace attnserve {

// What a REST request asks of the transport rather than of the model (its parameters of these
// names are taken out of the InferRequest).
struct RestOptions {
  // Outputs sent as binary data unless an output's own `binary_data` parameter says otherwise
  // (request parameter `binary_data_output`).
  bool binary_data_output = false;
  // The request's time limit (request parameter `timeout`, microseconds, as Triton's); absent:
  // none.
  std::optional<int64_t> timeout_micros;
};

struct RestInferRequest {
  InferRequest request;  // raw inputs view the body, which must outlive it
  RestOptions options;
};

// JSON documents nest at most this deep (a request's data arrays included).
inline constexpr int kMaxJsonDepth = 32;
// What one request may list, so that parsing holds memory in proportion to its tensors alone:
// inputs, outputs, parameters of one object, dimensions of one shape.
inline constexpr int kMaxListed = 64;
// The `timeout` parameter's largest value (microseconds): 30 days.
inline constexpr int64_t kMaxTimeoutMicros = int64_t{30} * 24 * 3600 * 1000000;

// Parses an inference request body for `model_name` (and `model_version`, from the URL).
// `json_length`: the Inference-Header-Content-Length header when sent (the JSON is then that many
// leading bytes, binary data after it), else the whole body is JSON. INVALID_ARGUMENT naming the
// JSON path and what is wrong (malformed JSON, an unknown field, a value of the wrong kind,
// nesting past kMaxJsonDepth, binary sizes that do not add up to the body).
absl::StatusOr<RestInferRequest> ParseInferRequest(absl::string_view body,
                                                   std::optional<int64_t> json_length,
                                                   std::string model_name,
                                                   std::string model_version);

// A response body: JSON, or JSON followed by the binary outputs (json_length set).
struct RestBody {
  std::string bytes;
  std::optional<int64_t> json_length;
};

// An upper bound of what WriteInferResponse holds for `response`: the body (16 bytes per value
// written as a JSON number, the binary outputs as they are, the framing) and a float copy of the
// output being written.
int64_t ResponseHoldBytes(const InferResponse& response, const InferRequest& request,
                          const RestOptions& options);

// Writes `response`: an output's values as JSON numbers (shortest round-trip form; non-finite
// values as null), or as binary data when `options` or the output's request asks for it.
RestBody WriteInferResponse(const InferResponse& response, const InferRequest& request,
                            const RestOptions& options);

// {"name": …, "version": …, "extensions": [...]}
std::string ServerMetadataJson(absl::string_view version);
// {"name": …, "versions": [...], "platform": …, "inputs": [...], "outputs": [...]}
std::string ModelMetadataJson(const ModelMetadata& metadata);
// {"name": …, "ready": true}
std::string ModelReadyJson(absl::string_view name);
// {"error": message}
std::string ErrorJson(absl::string_view message);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_REST_CODEC_H_
