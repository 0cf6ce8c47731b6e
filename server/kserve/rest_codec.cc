#include "server/kserve/rest_codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace attnserve {
namespace {

using Json = nlohmann::json;

// Builds an InferRequest from the JSON's SAX events, without a document in between: each
// number of an input's data goes straight into that input's values. The first problem stops the
// parse and is kept as `error`, with the JSON path where it was found.
class RequestReader final : public nlohmann::json_sax<Json> {
 public:
  explicit RequestReader(InferRequest* request) : request_(request) {}

  absl::Status error() const { return error_; }
  // Per input, the data read (numbers in order), to be typed once its datatype is known.
  std::vector<std::vector<double>>& data() { return data_; }

  bool null() override { return Fail("null is not a value here"); }
  bool boolean(bool value) override { return Scalar(InferParameter(value)); }
  bool number_integer(number_integer_t value) override {
    return Scalar(InferParameter(static_cast<int64_t>(value)));
  }
  bool number_unsigned(number_unsigned_t value) override {
    if (value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Scalar(InferParameter(static_cast<int64_t>(value)));
    }
    return Scalar(InferParameter(static_cast<uint64_t>(value)));
  }
  bool number_float(number_float_t value, const string_t&) override {
    return Scalar(InferParameter(static_cast<double>(value)));
  }
  bool string(string_t& value) override { return Scalar(InferParameter(std::move(value))); }
  bool binary(binary_t&) override { return Fail("binary values are not JSON"); }

  bool start_object(std::size_t) override {
    if (frames_.empty()) return Push(Frame::kRoot);
    const Frame& top = frames_.back();
    if (top.kind == Frame::kInputs) {
      if (request_->inputs.size() >= kMaxListed) {
        return Fail(absl::StrCat("is one input too many: at most ", kMaxListed));
      }
      request_->inputs.emplace_back();
      data_.emplace_back();
      return Push(Frame::kInput);
    }
    if (top.kind == Frame::kOutputs) {
      if (request_->outputs.size() >= kMaxListed) {
        return Fail(absl::StrCat("is one output too many: at most ", kMaxListed));
      }
      request_->outputs.emplace_back();
      return Push(Frame::kOutput);
    }
    if (top.key == "parameters" &&
        (top.kind == Frame::kRoot || top.kind == Frame::kInput || top.kind == Frame::kOutput)) {
      parameters_ = top.kind == Frame::kRoot    ? &request_->parameters
                    : top.kind == Frame::kInput ? &request_->inputs.back().parameters
                                                : &request_->outputs.back().parameters;
      return Push(Frame::kParameters);
    }
    return Fail("an object is not a value here");
  }

  bool key(string_t& key) override {
    Frame& top = frames_.back();
    top.key = std::move(key);
    const auto known = [&](std::initializer_list<absl::string_view> keys) {
      for (absl::string_view k : keys) {
        if (top.key == k) return true;
      }
      return false;
    };
    const bool ok = top.kind == Frame::kParameters ||
                    (top.kind == Frame::kRoot && known({"id", "parameters", "inputs", "outputs"})) ||
                    (top.kind == Frame::kInput &&
                     known({"name", "shape", "datatype", "parameters", "data"})) ||
                    (top.kind == Frame::kOutput && known({"name", "parameters"}));
    return ok || Fail("is not a field of the protocol's request");
  }

  bool end_object() override {
    frames_.pop_back();
    if (!frames_.empty()) ++frames_.back().index;
    return true;
  }

  bool start_array(std::size_t) override {
    if (frames_.empty()) return Fail("the request must be a JSON object");
    const Frame& top = frames_.back();
    if (top.kind == Frame::kRoot && top.key == "inputs") return Push(Frame::kInputs);
    if (top.kind == Frame::kRoot && top.key == "outputs") return Push(Frame::kOutputs);
    if (top.kind == Frame::kInput && top.key == "shape") return Push(Frame::kShape);
    if ((top.kind == Frame::kInput && top.key == "data") || top.kind == Frame::kData) {
      return Push(Frame::kData);
    }
    return Fail("an array is not a value here");
  }

  bool end_array() override {
    frames_.pop_back();
    if (!frames_.empty()) ++frames_.back().index;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& exception) override {
    if (error_.ok()) {
      error_ = absl::InvalidArgumentError(
          absl::StrCat("the request is not valid JSON at byte ", position, ": ",
                       JsonMessage(exception.what())));
    }
    return false;
  }

 private:
  struct Frame {
    enum Kind { kRoot, kParameters, kInputs, kInput, kShape, kData, kOutputs, kOutput } kind;
    std::string key;     // objects: the field being read
    int64_t index = 0;   // arrays: the element being read
  };

  // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 3: …".
  static std::string JsonMessage(absl::string_view what) {
    const size_t bracket = what.find("] ");
    return std::string(bracket == absl::string_view::npos ? what : what.substr(bracket + 2));
  }

  bool Push(Frame::Kind kind) {
    if (static_cast<int>(frames_.size()) >= kMaxJsonDepth) {
      return Fail(absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels"));
    }
    frames_.push_back(Frame{kind, "", 0});
    return true;
  }

  // The JSON path of the value being read: inputs[0].shape[2].
  std::string Path() const {
    std::string path;
    for (size_t i = 0; i < frames_.size(); ++i) {
      const Frame& frame = frames_[i];
      switch (frame.kind) {
        case Frame::kRoot:
        case Frame::kInput:
        case Frame::kOutput:
        case Frame::kParameters:
          if (!frame.key.empty()) absl::StrAppend(&path, path.empty() ? "" : ".", frame.key);
          break;
        case Frame::kInputs:
        case Frame::kOutputs:
        case Frame::kShape:
        case Frame::kData:
          absl::StrAppend(&path, "[", frame.index, "]");
          break;
      }
    }
    return path.empty() ? "the request" : path;
  }

  bool Fail(absl::string_view what) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat(Path(), " ", what));
    return false;
  }

  // A scalar at the current place: a field's value or an array's element.
  bool Scalar(InferParameter value) {
    if (frames_.empty()) return Fail("the request must be a JSON object");
    Frame& top = frames_.back();
    switch (top.kind) {
      case Frame::kParameters:
        if (parameters_->size() >= kMaxListed && parameters_->count(top.key) == 0) {
          return Fail(absl::StrCat("is one parameter too many: at most ", kMaxListed));
        }
        (*parameters_)[top.key] = std::move(value);
        return true;
      case Frame::kShape: {
        const int64_t* dim = std::get_if<int64_t>(&value);
        if (dim == nullptr) return Fail("must be an integer");
        if (top.index >= kMaxListed) {
          return Fail(absl::StrCat("is one dimension too many: at most ", kMaxListed));
        }
        request_->inputs.back().shape.push_back(*dim);
        ++top.index;
        return true;
      }
      case Frame::kData: {
        double number;
        if (const int64_t* integer = std::get_if<int64_t>(&value)) {
          number = static_cast<double>(*integer);
        } else if (const double* real = std::get_if<double>(&value)) {
          number = *real;
        } else {
          return Fail(absl::StrCat("is a ", ParameterKind(value), "; tensor data must be numbers"));
        }
        data_.back().push_back(number);
        ++top.index;
        return true;
      }
      case Frame::kRoot:
      case Frame::kInput:
      case Frame::kOutput:
        return Field(top, std::move(value));
      case Frame::kInputs:
      case Frame::kOutputs:
        return Fail("must be an object");
    }
    return false;
  }

  // The string fields: id, an input's name and datatype, an output's name.
  bool Field(const Frame& frame, InferParameter value) {
    std::string* target = nullptr;
    if (frame.kind == Frame::kRoot && frame.key == "id") target = &request_->id;
    if (frame.kind == Frame::kInput && frame.key == "name") target = &request_->inputs.back().name;
    if (frame.kind == Frame::kInput && frame.key == "datatype") {
      target = &request_->inputs.back().datatype;
    }
    if (frame.kind == Frame::kOutput && frame.key == "name") {
      target = &request_->outputs.back().name;
    }
    if (target == nullptr) return Fail("must be an array or an object");
    std::string* text = std::get_if<std::string>(&value);
    if (text == nullptr) return Fail(absl::StrCat("is a ", ParameterKind(value), "; must be a string"));
    *target = std::move(*text);
    return true;
  }

  InferRequest* const request_;
  std::vector<std::vector<double>> data_;
  std::vector<Frame> frames_;
  InferParameters* parameters_ = nullptr;  // the parameters object being read
  absl::Status error_;
};

// An input's JSON numbers as the typed values of its datatype.
absl::Status TypeData(std::vector<double>& numbers, size_t index, InferInput& input) {
  const std::string field = absl::StrCat("inputs[", index, "].data");
  if (IsFloatDatatype(input.datatype)) {
    input.typed_floats.reserve(numbers.size());
    for (double number : numbers) input.typed_floats.push_back(static_cast<float>(number));
  } else if (input.datatype == "INT32" || input.datatype == "INT64") {
    input.typed_ints.reserve(numbers.size());
    for (size_t i = 0; i < numbers.size(); ++i) {
      const double number = numbers[i];
      // Beyond 2^53 doubles skip integers: such ids are past any position anyway.
      if (number != std::trunc(number) || std::fabs(number) > 9007199254740992.0) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, "[", i, "]=", number, " is not an integer (datatype ", input.datatype, ")"));
      }
      input.typed_ints.push_back(static_cast<int64_t>(number));
    }
  } else if (!numbers.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs[", index, "].datatype=\"", input.datatype,
        "\" is not one this server reads (FP32, BF16, FP16, INT32, INT64)"));
  }
  std::vector<double>().swap(numbers);
  return absl::OkStatus();
}

// Takes the transport's parameters out of the request's.
absl::StatusOr<RestOptions> TakeRestOptions(InferParameters& parameters) {
  RestOptions options;
  if (auto it = parameters.find("binary_data_output"); it != parameters.end()) {
    const bool* value = std::get_if<bool>(&it->second);
    if (value == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("parameters.binary_data_output is a ",
                                                     ParameterKind(it->second),
                                                     "; must be a bool"));
    }
    options.binary_data_output = *value;
    parameters.erase(it);
  }
  if (auto it = parameters.find("timeout"); it != parameters.end()) {
    const int64_t* value = std::get_if<int64_t>(&it->second);
    if (value == nullptr || *value < 0 || *value > kMaxTimeoutMicros) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameters.timeout must be an integer in [0, ", kMaxTimeoutMicros, "] (microseconds)"));
    }
    options.timeout_micros = *value;
    parameters.erase(it);
  }
  return options;
}

// Points each binary input (its `binary_data_size` parameter, taken out) at its bytes, in input
// order; together they must be exactly `binary`.
absl::Status AttachBinaryData(absl::string_view binary, InferRequest& request,
                              const std::vector<std::vector<double>>& data) {
  size_t offset = 0;
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    InferInput& input = request.inputs[i];
    const auto it = input.parameters.find("binary_data_size");
    if (it == input.parameters.end()) continue;
    const int64_t* size = std::get_if<int64_t>(&it->second);
    if (size == nullptr || *size < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs[", i, "].parameters.binary_data_size must be a non-negative integer"));
    }
    if (!data[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs[", i, "] has both data and binary_data_size; the protocol allows one"));
    }
    if (static_cast<uint64_t>(*size) > binary.size() - offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs[", i, "].parameters.binary_data_size=", *size, " is past the ",
          binary.size() - offset, " bytes of binary data left in the body"));
    }
    input.raw = binary.substr(offset, *size);
    offset += *size;
    input.parameters.erase(it);
  }
  if (offset != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the body has ", binary.size(), " bytes after its JSON; the inputs' binary_data_size "
        "parameters account for ", offset));
  }
  return absl::OkStatus();
}

void AppendNumber(std::string& out, float value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char digits[32];
  const std::to_chars_result written = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, written.ptr);
}

// Whether `output` goes as binary data: its own request's `binary_data` parameter, else the
// request's binary_data_output.
bool SendsBinary(const InferOutput& output, const InferRequest& request,
                 const RestOptions& options) {
  for (const RequestedOutput& requested : request.outputs) {
    if (requested.name != output.name) continue;
    const auto it = requested.parameters.find("binary_data");
    if (it != requested.parameters.end()) {
      if (const bool* binary = std::get_if<bool>(&it->second)) return *binary;
    }
  }
  return options.binary_data_output;
}

std::string Quoted(absl::string_view text) {
  return Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The longest float written: "-1.17549435e-38," — 15 characters, and one to spare.
constexpr int64_t kJsonBytesPerValue = 16;
constexpr int64_t kJsonFramingBytes = 4096;

}  // namespace

int64_t ResponseHoldBytes(const InferResponse& response, const InferRequest& request,
                          const RestOptions& options) {
  int64_t bytes = kJsonFramingBytes;
  int64_t largest_copy = 0;
  for (const InferOutput& output : response.outputs) {
    const int64_t size = static_cast<int64_t>(output.raw.size());
    if (SendsBinary(output, request, options)) {
      bytes += size;
      continue;
    }
    const int64_t values = size / DatatypeSize(output.datatype);
    bytes += kJsonBytesPerValue * values;
    largest_copy = std::max<int64_t>(largest_copy, values * sizeof(float));
  }
  return bytes + largest_copy;
}

absl::StatusOr<RestInferRequest> ParseInferRequest(absl::string_view body,
                                                   std::optional<int64_t> json_length,
                                                   std::string model_name,
                                                   std::string model_version) {
  if (json_length.has_value() &&
      (*json_length < 0 || static_cast<uint64_t>(*json_length) > body.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("Inference-Header-Content-Length=", *json_length, " must be in [0, ",
                     body.size(), "], the body's length"));
  }
  const absl::string_view json = json_length.has_value() ? body.substr(0, *json_length) : body;
  RestInferRequest parsed;
  RequestReader reader(&parsed.request);
  const bool ok = Json::sax_parse(json.begin(), json.end(), &reader);
  if (!ok) {
    if (!reader.error().ok()) return reader.error();
    return absl::InvalidArgumentError("the request is not valid JSON");
  }
  InferRequest& request = parsed.request;
  request.model_name = std::move(model_name);
  request.model_version = std::move(model_version);
  // Without binary data, an empty view at the body's end (a binary_data_size of 0 views it).
  RETURN_IF_ERROR(AttachBinaryData(body.substr(json_length.value_or(body.size())), request,
                                   reader.data()));
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    RETURN_IF_ERROR(TypeData(reader.data()[i], i, request.inputs[i]));
  }
  ASSIGN_OR_RETURN(parsed.options, TakeRestOptions(request.parameters));
  return parsed;
}

RestBody WriteInferResponse(const InferResponse& response, const InferRequest& request,
                            const RestOptions& options) {
  RestBody body;
  std::string& out = body.bytes;
  absl::StrAppend(&out, "{\"model_name\":", Quoted(response.model_name),
                  ",\"model_version\":", Quoted(response.model_version));
  if (!response.id.empty()) absl::StrAppend(&out, ",\"id\":", Quoted(response.id));
  out += ",\"outputs\":[";
  std::vector<const InferOutput*> binary;
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const InferOutput& output = response.outputs[i];
    absl::StrAppend(&out, i == 0 ? "" : ",", "{\"name\":", Quoted(output.name),
                    ",\"datatype\":", Quoted(output.datatype), ",\"shape\":[");
    for (size_t d = 0; d < output.shape.size(); ++d) {
      absl::StrAppend(&out, d == 0 ? "" : ",", output.shape[d]);
    }
    out += "]";
    if (SendsBinary(output, request, options)) {
      absl::StrAppend(&out, ",\"parameters\":{\"binary_data_size\":", output.raw.size(), "}}");
      binary.push_back(&output);
      continue;
    }
    const std::vector<float> values = FloatValues(output);
    out.reserve(out.size() + values.size() * kJsonBytesPerValue);
    out += ",\"data\":[";
    for (size_t v = 0; v < values.size(); ++v) {
      if (v > 0) out += ',';
      AppendNumber(out, values[v]);
    }
    out += "]}";
  }
  out += "]}";
  if (!binary.empty()) {
    body.json_length = static_cast<int64_t>(out.size());
    for (const InferOutput* output : binary) out += output->raw;
  }
  return body;
}

std::string ServerMetadataJson(absl::string_view version) {
  return Json{{"name", "attnserve"},
              {"version", std::string(version)},
              {"extensions", {"binary_tensor_data"}}}
      .dump();
}

std::string ModelMetadataJson(const ModelMetadata& metadata) {
  const auto tensors = [](const std::vector<TensorMetadata>& list) {
    Json array = Json::array();
    for (const TensorMetadata& tensor : list) {
      array.push_back({{"name", tensor.name}, {"datatype", tensor.datatype}, {"shape", tensor.shape}});
    }
    return array;
  };
  return Json{{"name", metadata.name},
              {"versions", metadata.versions},
              {"platform", metadata.platform},
              {"inputs", tensors(metadata.inputs)},
              {"outputs", tensors(metadata.outputs)}}
      .dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ModelReadyJson(absl::string_view name) {
  return absl::StrCat("{\"name\":", Quoted(name), ",\"ready\":true}");
}

std::string ErrorJson(absl::string_view message) {
  return absl::StrCat("{\"error\":", Quoted(message), "}");
}

}  // namespace attnserve
