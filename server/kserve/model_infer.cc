#include "server/kserve/model_infer.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "server/requests/attend.h"
#include "server/requests/positions.h"

namespace attnserve {
namespace {

constexpr absl::string_view kPlatform = "attnserve";
constexpr absl::string_view kInputs[] = {"input", "context", "key_lengths", "position_ids"};
constexpr absl::string_view kParameters[] = {"causal", "position_offset", "compute_dtype",
                                             "return_attention"};
constexpr absl::string_view kOutputs[] = {"output", "attention"};

template <size_t N>
bool OneOf(absl::string_view name, const absl::string_view (&names)[N]) {
  for (absl::string_view known : names) {
    if (name == known) return true;
  }
  return false;
}

std::string InputField(absl::string_view name) { return absl::StrCat("inputs[\"", name, "\"]"); }

// A parameter's value when sent, else `fallback`; INVALID_ARGUMENT naming it when it is of
// another kind.
absl::StatusOr<bool> BoolParameter(const InferParameters& parameters, absl::string_view key,
                                   bool fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const bool* value = std::get_if<bool>(&it->second)) return *value;
  return absl::InvalidArgumentError(absl::StrCat("parameters.", key, " is a ",
                                                 ParameterKind(it->second), "; must be a bool"));
}

absl::StatusOr<int64_t> IntParameter(const InferParameters& parameters, absl::string_view key,
                                     int64_t fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const int64_t* value = std::get_if<int64_t>(&it->second)) return *value;
  if (const uint64_t* value = std::get_if<uint64_t>(&it->second)) {
    if (*value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*value);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("parameters.", key, "=", *value, " is past the int64 range"));
  }
  return absl::InvalidArgumentError(absl::StrCat("parameters.", key, " is a ",
                                                 ParameterKind(it->second), "; must be an int64"));
}

absl::StatusOr<std::string> StringParameter(const InferParameters& parameters,
                                            absl::string_view key, std::string fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const std::string* value = std::get_if<std::string>(&it->second)) return *value;
  return absl::InvalidArgumentError(absl::StrCat("parameters.", key, " is a ",
                                                 ParameterKind(it->second), "; must be a string"));
}

absl::Status CheckParameterNames(const InferParameters& parameters, absl::string_view model) {
  for (const auto& [key, value] : parameters) {
    if (!OneOf(key, kParameters)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameters.", key, " is not a parameter of model ", model, " (",
                       absl::StrJoin(kParameters, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

// The request's inputs by name: each a known one at most once, `input` present.
struct Inputs {
  const InferInput* input = nullptr;
  const InferInput* context = nullptr;
  const InferInput* key_lengths = nullptr;
  const InferInput* position_ids = nullptr;
};

absl::StatusOr<Inputs> FindInputs(const std::vector<InferInput>& inputs, absl::string_view model) {
  Inputs found;
  for (const InferInput& input : inputs) {
    const InferInput** slot = input.name == "input"         ? &found.input
                              : input.name == "context"     ? &found.context
                              : input.name == "key_lengths" ? &found.key_lengths
                              : input.name == "position_ids" ? &found.position_ids
                                                             : nullptr;
    if (slot == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(InputField(input.name), " is not an input of model ", model, " (",
                       absl::StrJoin(kInputs, ", "), ")"));
    }
    if (*slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(InputField(input.name), " is sent twice"));
    }
    *slot = &input;
  }
  if (found.input == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("inputs has no \"input\" tensor; model ", model, " needs it"));
  }
  return found;
}

// The outputs to return, in order: those the client names (each known, at most once), else
// `output` and, when return_attention is set, `attention`.
absl::StatusOr<std::vector<std::string>> OutputsToReturn(const InferRequest& request,
                                                         bool return_attention) {
  std::vector<std::string> names;
  for (const RequestedOutput& output : request.outputs) {
    if (!OneOf(output.name, kOutputs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "outputs[\"", output.name, "\"] is not an output of model ", request.model_name, " (",
          absl::StrJoin(kOutputs, ", "), ")"));
    }
    for (const std::string& name : names) {
      if (name == output.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("outputs[\"", output.name, "\"] is asked for twice"));
      }
    }
    names.push_back(output.name);
  }
  if (names.empty()) {
    names.push_back("output");
    if (return_attention) names.push_back("attention");
  }
  return names;
}

absl::StatusOr<ComputeType> ComputeTypeFromName(absl::string_view name) {
  if (name == "FP32") return ComputeType::kFloat32;
  if (name == "BF16") return ComputeType::kBfloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("parameters.compute_dtype=\"", name, "\" must be \"FP32\" or \"BF16\""));
}

// Positions from position_ids when sent, else from position_offset.
absl::StatusOr<std::vector<int64_t>> InputPositions(const InferInput* ids, int64_t position_offset,
                                                    int64_t batch, int64_t seq) {
  if (ids == nullptr) return ResolvePositions(nullptr, "position_offset", position_offset, batch, seq);
  const std::string field = InputField("position_ids");
  const int rank = ids->shape.size() == 1 ? 1 : 2;
  ASSIGN_OR_RETURN(const DenseTensor<int64_t> decoded,
                   DecodeIntInput(*ids, field, rank, rank == 1 ? "[seq]" : "[batch, seq]"));
  return ResolvePositions(&decoded, field, position_offset, batch, seq);
}

}  // namespace

absl::StatusOr<const LoadedModel*> FindVersion(const ModelRegistry& models,
                                               absl::string_view name,
                                               absl::string_view version) {
  ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(name));
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("model ", name, " has no version \"", version,
                                            "\"; its only version is \"", kModelVersion, "\""));
  }
  return model;
}

absl::StatusOr<ModelMetadata> FindModelMetadata(const ModelRegistry& models,
                                                absl::string_view name,
                                                absl::string_view version) {
  ASSIGN_OR_RETURN(const LoadedModel* model, FindVersion(models, name, version));
  const int64_t d_model = model->config.d_model();
  ModelMetadata metadata;
  metadata.name = model->config.name();
  metadata.versions = {std::string(kModelVersion)};
  metadata.platform = std::string(kPlatform);
  metadata.inputs = {{"input", "FP32", {-1, -1, d_model}},
                     {"context", "FP32", {-1, -1, d_model}},
                     {"key_lengths", "INT64", {-1}},
                     {"position_ids", "INT64", {-1, -1}}};
  metadata.outputs = {{"output", "FP32", {-1, -1, d_model}},
                      {"attention", "FP32", {-1, model->config.num_heads(), -1, -1}}};
  return metadata;
}

absl::StatusOr<WorkDone> RunModelInfer(const RequestContext& context, const ModelRegistry& models,
                                       const InferRequest& request, InferResponse* response) {
  AttendCall call;
  call.query_field = InputField("input");
  call.context_field = InputField("context");
  ASSIGN_OR_RETURN(call.model, FindVersion(models, request.model_name, request.model_version));
  const std::string& model = call.model->config.name();
  RETURN_IF_ERROR(CheckParameterNames(request.parameters, model));
  ASSIGN_OR_RETURN(const Inputs inputs, FindInputs(request.inputs, model));
  ASSIGN_OR_RETURN(call.query, DecodeFloatInput(*inputs.input, InputField("input"), 3,
                                                "[batch, seq, d_model]"));
  if (inputs.context != nullptr) {
    call.context = DecodeFloatInput(*inputs.context, InputField("context"), 3,
                                    "[batch, kv_len, d_model]");
  }
  ASSIGN_OR_RETURN(call.causal, BoolParameter(request.parameters, "causal", false));
  ASSIGN_OR_RETURN(const int64_t position_offset,
                   IntParameter(request.parameters, "position_offset", 0));
  call.positions = InputPositions(inputs.position_ids, position_offset, call.query.shape[0],
                                  call.query.shape[1]);
  if (inputs.key_lengths != nullptr) {
    ASSIGN_OR_RETURN(DenseTensor<int64_t> key_lengths,
                     DecodeIntInput(*inputs.key_lengths, InputField("key_lengths"), 1, "[batch]"));
    call.key_lengths = std::move(key_lengths.values);
  }
  ASSIGN_OR_RETURN(const std::string compute_dtype,
                   StringParameter(request.parameters, "compute_dtype", "FP32"));
  call.compute = ComputeTypeFromName(compute_dtype);
  ASSIGN_OR_RETURN(const bool return_attention,
                   BoolParameter(request.parameters, "return_attention", false));
  ASSIGN_OR_RETURN(const std::vector<std::string> outputs,
                   OutputsToReturn(request, return_attention));
  call.return_attention = false;
  for (const std::string& name : outputs) call.return_attention |= name == "attention";
  const std::string& datatype = inputs.input->datatype;
  call.output_bytes =
      static_cast<int64_t>(call.query.values.size()) * DatatypeSize(datatype);

  AttendResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunAttend(context, call, &result));
  response->model_name = model;
  response->model_version = std::string(kModelVersion);
  response->id = request.id;
  for (const std::string& name : outputs) {
    if (name == "output") {
      response->outputs.push_back(
          EncodeFloatOutput(name, call.query.shape, result.output.data(), datatype));
    } else {
      response->outputs.push_back(EncodeFloatOutput(name, result.attention.shape,
                                                    result.attention.values.data(), "FP32"));
    }
  }
  return work;
}

}  // namespace attnserve
