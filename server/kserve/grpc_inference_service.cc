#include "server/kserve/grpc_inference_service.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "server/kserve/model_infer.h"
#include "server/rpc/status_util.h"

namespace attnserve {
namespace {

using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

absl::StatusOr<InferParameter> ParameterFromProto(const inference::InferParameter& parameter,
                                                  absl::string_view field) {
  using Choice = inference::InferParameter::ParameterChoiceCase;
  switch (parameter.parameter_choice_case()) {
    case Choice::kBoolParam:
      return InferParameter(parameter.bool_param());
    case Choice::kInt64Param:
      return InferParameter(parameter.int64_param());
    case Choice::kUint64Param:
      return InferParameter(parameter.uint64_param());
    case Choice::kDoubleParam:
      return InferParameter(parameter.double_param());
    case Choice::kStringParam:
      return InferParameter(parameter.string_param());
    case Choice::PARAMETER_CHOICE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " has no value"));
}

absl::StatusOr<InferParameters> ParametersFromProto(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    absl::string_view field) {
  InferParameters converted;
  for (const auto& [key, value] : parameters) {
    ASSIGN_OR_RETURN(converted[key], ParameterFromProto(value, absl::StrCat(field, ".", key)));
  }
  return converted;
}

// The typed field a datatype's values travel in; null for BF16 and FP16, which have none.
const char* TypedFieldOf(absl::string_view datatype) {
  if (datatype == "FP32") return "fp32_contents";
  if (datatype == "INT32") return "int_contents";
  if (datatype == "INT64") return "int64_contents";
  return nullptr;
}

// Copies the typed values of `contents` into `input`, once only the field of its datatype is set.
absl::Status TypedValuesFromProto(const InferTensorContents& contents, absl::string_view field,
                                  InferInput& input) {
  const char* expected = TypedFieldOf(input.datatype);
  const google::protobuf::Reflection* reflection = contents.GetReflection();
  const google::protobuf::Descriptor* descriptor = contents.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* typed = descriptor->field(i);
    if (reflection->FieldSize(contents, typed) == 0 ||
        (expected != nullptr && typed->name() == expected)) {
      continue;
    }
    return absl::InvalidArgumentError(
        expected == nullptr
            ? absl::StrCat(field, ".contents.", typed->name(), " is set; ", input.datatype,
                           " has no typed contents: send it in raw_input_contents")
            : absl::StrCat(field, ".contents.", typed->name(), " is set; datatype ",
                           input.datatype, " takes ", expected));
  }
  input.typed_floats.assign(contents.fp32_contents().begin(), contents.fp32_contents().end());
  if (input.datatype == "INT32") {
    input.typed_ints.assign(contents.int_contents().begin(), contents.int_contents().end());
  } else {
    input.typed_ints.assign(contents.int64_contents().begin(), contents.int64_contents().end());
  }
  return absl::OkStatus();
}

bool HasTypedValues(const ModelInferRequest::InferInputTensor& tensor) {
  return tensor.has_contents() && tensor.contents().ByteSizeLong() > 0;
}

// The request, its raw contents viewed in `request` (which must outlive the result).
absl::StatusOr<InferRequest> RequestFromProto(const ModelInferRequest& request) {
  InferRequest converted;
  converted.model_name = request.model_name();
  converted.model_version = request.model_version();
  converted.id = request.id();
  ASSIGN_OR_RETURN(converted.parameters, ParametersFromProto(request.parameters(), "parameters"));
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                     " entries for ", request.inputs_size(), " inputs; it needs one per input"));
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& tensor = request.inputs(i);
    const std::string field = absl::StrCat("inputs[", i, "]");
    InferInput& input = converted.inputs.emplace_back();
    input.name = tensor.name();
    input.datatype = tensor.datatype();
    input.shape.assign(tensor.shape().begin(), tensor.shape().end());
    ASSIGN_OR_RETURN(input.parameters,
                     ParametersFromProto(tensor.parameters(), absl::StrCat(field, ".parameters")));
    if (raw) {
      if (HasTypedValues(tensor)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, " (", tensor.name(),
            ") has typed contents beside raw_input_contents; the protocol allows one or the other"));
      }
      input.raw = request.raw_input_contents(i);
    } else {
      RETURN_IF_ERROR(TypedValuesFromProto(tensor.contents(), field, input));
    }
  }
  for (const ModelInferRequest::InferRequestedOutputTensor& output : request.outputs()) {
    RequestedOutput& requested = converted.outputs.emplace_back();
    requested.name = output.name();
    ASSIGN_OR_RETURN(requested.parameters,
                     ParametersFromProto(output.parameters(),
                                         absl::StrCat("outputs[\"", output.name(), "\"].parameters")));
  }
  return converted;
}

void ResponseToProto(InferResponse& response, bool raw, ModelInferResponse* proto) {
  proto->set_model_name(response.model_name);
  proto->set_model_version(response.model_version);
  proto->set_id(response.id);
  for (const InferOutput& output : response.outputs) raw |= output.datatype != "FP32";
  for (InferOutput& output : response.outputs) {
    ModelInferResponse::InferOutputTensor* tensor = proto->add_outputs();
    tensor->set_name(output.name);
    tensor->set_datatype(output.datatype);
    tensor->mutable_shape()->Assign(output.shape.begin(), output.shape.end());
    if (raw) {
      *proto->add_raw_output_contents() = std::move(output.raw);
    } else {
      const std::vector<float> values = FloatValues(output);
      tensor->mutable_contents()->mutable_fp32_contents()->Assign(values.begin(), values.end());
    }
  }
}

// A map entry's node, its key's and InferParameter's objects (their strings counted apart).
constexpr int64_t kMapEntryBytes = 256;
// A string's object with its heap block's bookkeeping.
constexpr int64_t kStringBytes = 48;

int64_t StringBytes(const std::string& text) {
  return kStringBytes + static_cast<int64_t>(text.capacity());
}

int64_t ParametersBytes(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters) {
  int64_t bytes = 0;
  for (const auto& [key, value] : parameters) {
    bytes += kMapEntryBytes + StringBytes(key) + StringBytes(value.string_param());
  }
  return bytes;
}

}  // namespace

int64_t ModelInferRequestHeldBytes(const ModelInferRequest& request) {
  int64_t bytes = sizeof(ModelInferRequest) + StringBytes(request.model_name()) +
                  StringBytes(request.model_version()) + StringBytes(request.id()) +
                  ParametersBytes(request.parameters());
  for (const std::string& raw : request.raw_input_contents()) bytes += StringBytes(raw);
  for (const ModelInferRequest::InferInputTensor& input : request.inputs()) {
    bytes += sizeof(input) + StringBytes(input.name()) + StringBytes(input.datatype()) +
             static_cast<int64_t>(input.shape_size()) * sizeof(int64_t) +
             ParametersBytes(input.parameters()) +
             // No map in InferTensorContents: reflection is right there.
             static_cast<int64_t>(input.contents().SpaceUsedLong());
  }
  for (const ModelInferRequest::InferRequestedOutputTensor& output : request.outputs()) {
    bytes += sizeof(output) + StringBytes(output.name()) + ParametersBytes(output.parameters());
  }
  return bytes;
}

absl::StatusOr<WorkDone> HandleModelInfer(const RequestContext& context,
                                          const ModelRegistry& models,
                                          const ModelInferRequest& request,
                                          ModelInferResponse* response) {
  ASSIGN_OR_RETURN(const InferRequest converted, RequestFromProto(request));
  InferResponse result;
  ASSIGN_OR_RETURN(const WorkDone work, RunModelInfer(context, models, converted, &result));
  ResponseToProto(result, request.raw_input_contents_size() > 0, response);
  return work;
}

GrpcInferenceService::GrpcInferenceService(const ModelStore* models, Options options)
    : models_(models), options_(std::move(options)) {
  MarkMethodGeneric(inference::ModelInferRequest::descriptor()
                        ->file()
                        ->FindServiceByName("GRPCInferenceService")
                        ->FindMethodByName("ModelInfer")
                        ->index());
}

grpc::ServerUnaryReactor* GrpcInferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                           const inference::ServerLiveRequest*,
                                                           inference::ServerLiveResponse* response) {
  response->set_live(true);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GrpcInferenceService::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
    inference::ServerReadyResponse* response) {
  response->set_ready(!options_.draining());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GrpcInferenceService::ModelReady(
    grpc::CallbackServerContext* context, const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ServeRpc("ModelReady", [&] {
    // An unknown model is not ready (the protocol's answer), not an error.
    response->set_ready(!options_.draining() &&
                        FindVersion(*models_->Current(), request->name(), request->version()).ok());
    return absl::OkStatus();
  }));
  return reactor;
}

grpc::ServerUnaryReactor* GrpcInferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("attnserve");
  response->set_version(options_.server_version);
  response->add_extensions("binary_tensor_data");
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GrpcInferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ServeRpc("ModelMetadata", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(
        const attnserve::ModelMetadata metadata,
        FindModelMetadata(*models_->Current(), request->name(), request->version()));
    response->set_name(metadata.name);
    for (const std::string& version : metadata.versions) response->add_versions(version);
    response->set_platform(metadata.platform);
    const auto add = [](const TensorMetadata& tensor,
                        inference::ModelMetadataResponse::TensorMetadata* proto) {
      proto->set_name(tensor.name);
      proto->set_datatype(tensor.datatype);
      proto->mutable_shape()->Assign(tensor.shape.begin(), tensor.shape.end());
    };
    for (const TensorMetadata& input : metadata.inputs) add(input, response->add_inputs());
    for (const TensorMetadata& output : metadata.outputs) add(output, response->add_outputs());
    return absl::OkStatus();
  }));
  return reactor;
}

}  // namespace attnserve
