#include "server/kserve/model_infer.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "server/kserve/infer_fields.h"
#include "server/kserve/operation_models.h"
#include "server/requests/attend.h"
#include "server/requests/positions.h"

namespace attnserve {
namespace {

constexpr absl::string_view kInputs[] = {"input", "context", "key_lengths", "position_ids"};
constexpr absl::string_view kRequired[] = {"input"};
constexpr absl::string_view kParameters[] = {"causal", "position_offset", "compute_dtype",
                                             "return_attention"};
constexpr absl::string_view kOutputs[] = {"output", "attention"};

const InferInput* Find(const std::map<std::string, const InferInput*>& inputs,
                       const std::string& name) {
  const auto it = inputs.find(name);
  return it == inputs.end() ? nullptr : it->second;
}

// A served model's inference: its Attend.
absl::StatusOr<WorkDone> RunLayer(const RequestContext& context, const LoadedModel* model,
                                  const InferRequest& request, InferResponse* response) {
  AttendCall call;
  call.model = model;
  call.query_field = InputField("input");
  call.context_field = InputField("context");
  const std::string& name = model->config.name();
  RETURN_IF_ERROR(CheckParameterNames(request.parameters, kParameters, name));
  ASSIGN_OR_RETURN(const auto inputs, InputsByName(request.inputs, kInputs, kRequired, name));
  const InferInput& input = *Find(inputs, "input");
  ASSIGN_OR_RETURN(call.query,
                   DecodeFloatInput(input, InputField("input"), 3, "[batch, seq, d_model]"));
  if (const InferInput* context_input = Find(inputs, "context")) {
    call.context = DecodeFloatInput(*context_input, InputField("context"), 3,
                                    "[batch, kv_len, d_model]");
  }
  ASSIGN_OR_RETURN(call.causal, BoolParameter(request.parameters, "causal", false));
  ASSIGN_OR_RETURN(const int64_t position_offset,
                   IntParameter(request.parameters, "position_offset", 0));
  call.positions = InputPositions(Find(inputs, "position_ids"), position_offset,
                                  call.query.shape[0], call.query.shape[1]);
  if (const InferInput* lengths = Find(inputs, "key_lengths")) {
    ASSIGN_OR_RETURN(DenseTensor<int64_t> key_lengths,
                     DecodeIntInput(*lengths, InputField("key_lengths"), 1, "[batch]"));
    call.key_lengths = std::move(key_lengths.values);
  }
  call.compute = ComputeTypeParameter(request.parameters);
  ASSIGN_OR_RETURN(const bool return_attention,
                   BoolParameter(request.parameters, "return_attention", false));
  std::vector<std::string> defaults = {"output"};
  if (return_attention) defaults.push_back("attention");
  ASSIGN_OR_RETURN(const std::vector<std::string> outputs,
                   OutputsToReturn(request, kOutputs, std::move(defaults)));
  call.return_attention = false;
  for (const std::string& output : outputs) call.return_attention |= output == "attention";
  call.output_bytes =
      static_cast<int64_t>(call.query.values.size()) * DatatypeSize(input.datatype);

  AttendResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunAttend(context, call, &result));
  for (const std::string& output : outputs) {
    if (output == "output") {
      response->outputs.push_back(
          EncodeFloatOutput(output, call.query.shape, result.output.data(), input.datatype));
    } else {
      response->outputs.push_back(EncodeFloatOutput(output, result.attention.shape,
                                                    result.attention.values.data(), "FP32"));
    }
  }
  return work;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> InputPositions(const InferInput* ids, int64_t position_offset,
                                                    int64_t batch, int64_t seq) {
  if (ids == nullptr) {
    return ResolvePositions(nullptr, "position_offset", position_offset, batch, seq);
  }
  const std::string field = InputField(ids->name);
  const int rank = ids->shape.size() == 1 ? 1 : 2;
  ASSIGN_OR_RETURN(const DenseTensor<int64_t> decoded,
                   DecodeIntInput(*ids, field, rank, rank == 1 ? "[seq]" : "[batch, seq]"));
  return ResolvePositions(&decoded, field, position_offset, batch, seq);
}

absl::StatusOr<ComputeType> ComputeTypeParameter(const InferParameters& parameters) {
  ASSIGN_OR_RETURN(const std::string name, StringParameter(parameters, "compute_dtype", "FP32"));
  if (name == "FP32") return ComputeType::kFloat32;
  if (name == "BF16") return ComputeType::kBfloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("parameters.compute_dtype=\"", name, "\" must be \"FP32\" or \"BF16\""));
}

absl::StatusOr<const LoadedModel*> FindVersion(const ModelRegistry& models,
                                               absl::string_view name,
                                               absl::string_view version) {
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("model ", name, " has no version \"", version,
                                            "\"; its only version is \"", kModelVersion, "\""));
  }
  if (IsOperationModel(name)) return nullptr;
  return models.Find(name);
}

absl::StatusOr<ModelMetadata> FindModelMetadata(const ModelRegistry& models,
                                                absl::string_view name,
                                                absl::string_view version) {
  ASSIGN_OR_RETURN(const LoadedModel* model, FindVersion(models, name, version));
  if (model == nullptr) return OperationMetadata(name);
  const int64_t d_model = model->config.d_model();
  ModelMetadata metadata{model->config.name(), {std::string(kModelVersion)}, "attnserve", {}, {}};
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
  ASSIGN_OR_RETURN(const LoadedModel* model,
                   FindVersion(models, request.model_name, request.model_version));
  response->model_name = request.model_name;
  response->model_version = std::string(kModelVersion);
  response->id = request.id;
  if (model == nullptr) return RunOperationModel(context, models, request, response);
  return RunLayer(context, model, request, response);
}

}  // namespace attnserve
