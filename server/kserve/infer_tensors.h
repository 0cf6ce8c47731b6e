// The KServe v2 / Open Inference Protocol, transport-neutral: inference requests and responses as
// the gRPC and HTTP adapters hand them over (each converts its own wire format), the datatypes
// this server reads and writes, and their checks. No gRPC, no JSON here.
#ifndef ATTNSERVE_SERVER_KSERVE_INFER_TENSORS_H_
#define ATTNSERVE_SERVER_KSERVE_INFER_TENSORS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/requests/tensors.h"

namespace attnserve {

// A request, tensor or response parameter: one scalar.
using InferParameter = std::variant<bool, int64_t, uint64_t, double, std::string>;
using InferParameters = std::map<std::string, InferParameter>;

// "bool", "int64", "uint64", "double" or "string", for messages.
absl::string_view ParameterKind(const InferParameter& parameter);

// An input tensor as sent. Its values come either raw (little-endian bytes of the datatype,
// row-major: gRPC raw_input_contents, HTTP binary data) or typed (numbers: gRPC's typed contents,
// JSON), never both.
struct InferInput {
  std::string name;
  std::string datatype;  // as sent: "FP32", "BF16", "FP16", "INT32", "INT64", …
  std::vector<int64_t> shape;
  InferParameters parameters;
  std::optional<absl::string_view> raw;  // viewed in the request's message or body
  std::vector<float> typed_floats;       // typed values of a floating datatype
  std::vector<int64_t> typed_ints;       // typed values of an integer datatype
};

// An output the client asks for by name; none asked: the model's default outputs.
struct RequestedOutput {
  std::string name;
  InferParameters parameters;
};

struct InferRequest {
  std::string model_name;
  std::string model_version;  // empty: the server's choice
  std::string id;             // echoed in the response
  InferParameters parameters;
  std::vector<InferInput> inputs;
  std::vector<RequestedOutput> outputs;
};

// An output tensor: little-endian bytes of its datatype, row-major.
struct InferOutput {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
  std::string raw;
};

struct InferResponse {
  std::string model_name;
  std::string model_version;
  std::string id;
  std::vector<InferOutput> outputs;
};

// Bytes per element of a datatype this server reads or writes ("FP32" 4, "BF16" and "FP16" 2,
// "INT32" 4, "INT64" 8); 0 for any other (the protocol's BOOL, UINT8, FP64, BYTES, …).
int64_t DatatypeSize(absl::string_view datatype);
// Whether the datatype's values are floating ("FP32", "BF16", "FP16").
bool IsFloatDatatype(absl::string_view datatype);

// The elements of `input`'s shape once every dimension is >= 1, its rank is `rank` and the
// values it carries (raw bytes, or typed values) are exactly that many; INVALID_ARGUMENT naming
// `field` (e.g. "inputs[0] (input)") and the numbers otherwise. `dims` names the dimensions.
absl::StatusOr<int64_t> CheckedElementCount(const InferInput& input, absl::string_view field,
                                            int rank, absl::string_view dims);

// A floating input (FP32, BF16 or FP16) of the given rank, widened to float exactly. Typed
// values of BF16 or FP16 inputs are first rounded to the datatype (to nearest even), so a typed
// and a raw request compute the same numbers.
absl::StatusOr<FloatTensor> DecodeFloatInput(const InferInput& input, absl::string_view field,
                                             int rank, absl::string_view dims);

// A BF16 input of the given rank as its bits, never widened (typed values rounded to BF16).
absl::StatusOr<Bfloat16Tensor> DecodeBfloat16Input(const InferInput& input,
                                                   absl::string_view field, int rank,
                                                   absl::string_view dims);

// An integer input (INT32 or INT64) of the given rank.
absl::StatusOr<DenseTensor<int64_t>> DecodeIntInput(const InferInput& input,
                                                    absl::string_view field, int rank,
                                                    absl::string_view dims);

// An output of product(shape) floats written as `datatype` (FP32, BF16 or FP16; rounded to
// nearest even).
InferOutput EncodeFloatOutput(std::string name, std::vector<int64_t> shape, const float* values,
                              absl::string_view datatype);

// An output of product(shape) bf16 values, sent as they are.
InferOutput EncodeBfloat16Output(std::string name, std::vector<int64_t> shape,
                                 const uint16_t* bits);

// The values of a floating output as floats (exact), for transports that send numbers.
std::vector<float> FloatValues(const InferOutput& output);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_KSERVE_INFER_TENSORS_H_
