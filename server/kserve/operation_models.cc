#include "server/kserve/operation_models.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/v1/positional_encoding.pb.h"
#include "core/base/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "server/kserve/infer_fields.h"
#include "server/models/encoding_proto.h"
#include "server/requests/encode.h"
#include "server/requests/position_bias.h"
#include "server/requests/sdpa.h"

namespace attnserve {
namespace {

using Inputs = std::map<std::string, const InferInput*>;

const InferInput* Find(const Inputs& inputs, const std::string& name) {
  const auto it = inputs.find(name);
  return it == inputs.end() ? nullptr : it->second;
}

// parameters.encoding: an attnserve.v1.PositionalEncoding in proto3 JSON, e.g.
// {"rope": {"theta": 10000}}; unset: none.
absl::StatusOr<PositionalEncoding> EncodingParameter(const InferParameters& parameters) {
  ASSIGN_OR_RETURN(const std::string json, StringParameter(parameters, "encoding", "{}"));
  v1::PositionalEncoding proto;
  const auto parsed = google::protobuf::util::JsonStringToMessage(json, &proto);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameters.encoding is not an attnserve.v1.PositionalEncoding in JSON: ",
                     parsed.message().ToString()));
  }
  return EncodingFromProto(proto, "parameters.encoding");
}

// The inline table an encoding takes from the request's inputs (T5's t5_table, CoPE's
// cope_pos_emb), as RequestTableFromProto does for attnserve.v1.
absl::StatusOr<RequestTable> InputTable(const PositionalEncoding& encoding, const Inputs& inputs) {
  RequestTable table;
  if (std::holds_alternative<T5BiasParams>(encoding)) table.field = "t5_table";
  if (std::holds_alternative<CopeParams>(encoding)) table.field = "cope_pos_emb";
  const InferInput* input = table.field.empty() ? nullptr : Find(inputs, table.field);
  if (input == nullptr) return table;
  ASSIGN_OR_RETURN(table.tensor,
                   DecodeFloatInput(*input, InputField(table.field), 2,
                                    EncodingTable(encoding, TableLayerShape())->dims));
  return table;
}

absl::StatusOr<WorkDone> RunEncodeModel(const RequestContext& context, const ModelRegistry& models,
                                        const InferRequest& request, InferResponse* response) {
  static constexpr absl::string_view kInputs[] = {"input", "position_ids"};
  static constexpr absl::string_view kRequired[] = {"input"};
  static constexpr absl::string_view kParameters[] = {
      "model", "encoding", "num_heads", "head_dim", "position_offset", "input_scale"};
  static constexpr absl::string_view kOutputs[] = {"output"};
  const InferParameters& parameters = request.parameters;
  RETURN_IF_ERROR(CheckParameterNames(parameters, kParameters, kEncodeModel));
  ASSIGN_OR_RETURN(const Inputs inputs,
                   InputsByName(request.inputs, kInputs, kRequired, kEncodeModel));
  ASSIGN_OR_RETURN(const std::vector<std::string> outputs,
                   OutputsToReturn(request, kOutputs, {"output"}));
  EncodeCall call;
  const InferInput& input = *Find(inputs, "input");
  ASSIGN_OR_RETURN(call.input,
                   DecodeFloatInput(input, InputField("input"), 3, "[batch, seq, d_model]"));
  ASSIGN_OR_RETURN(call.num_heads, IntParameter(parameters, "num_heads", 0));
  ASSIGN_OR_RETURN(call.head_dim, IntParameter(parameters, "head_dim", 0));
  // An empty model is none, as in attnserve.v1: the inline encoding.
  ASSIGN_OR_RETURN(const std::string model, StringParameter(parameters, "model", ""));
  if (!model.empty()) {
    call.model = models.Find(model);
  } else {
    call.encoding = EncodingParameter(parameters);
  }
  ASSIGN_OR_RETURN(const int64_t position_offset, IntParameter(parameters, "position_offset", 0));
  call.positions = InputPositions(Find(inputs, "position_ids"), position_offset,
                                  call.input.shape[0], call.input.shape[1]);
  ASSIGN_OR_RETURN(const double input_scale, DoubleParameter(parameters, "input_scale", 1.0));
  call.input_scale = static_cast<float>(input_scale);
  ASSIGN_OR_RETURN(const WorkDone work, RunEncode(context, call));
  response->outputs.push_back(
      EncodeFloatOutput(outputs.front(), call.input.shape, call.input.values.data(),
                        input.datatype));
  return work;
}

// q, k and v: kept bf16 when all three are BF16 and no probabilities are wanted (the core reads
// and writes bf16 then), else widened to f32.
absl::Status DecodeQkv(const Inputs& inputs, bool return_attention, SdpaCall& call) {
  const InferInput& q = *Find(inputs, "q");
  const InferInput& k = *Find(inputs, "k");
  const InferInput& v = *Find(inputs, "v");
  if (q.datatype == "BF16" && k.datatype == "BF16" && v.datatype == "BF16" && !return_attention) {
    QkvTensors<uint16_t>& qkv = call.qkv.emplace<QkvTensors<uint16_t>>();
    ASSIGN_OR_RETURN(qkv.q, DecodeBfloat16Input(q, InputField("q"), 4, "[B, H, Sq, hd]"));
    ASSIGN_OR_RETURN(qkv.k, DecodeBfloat16Input(k, InputField("k"), 4, "[B, Hkv, Sk, hd]"));
    ASSIGN_OR_RETURN(qkv.v, DecodeBfloat16Input(v, InputField("v"), 4, "[B, Hkv, Sk, hd]"));
    return absl::OkStatus();
  }
  QkvTensors<float>& qkv = call.qkv.emplace<QkvTensors<float>>();
  ASSIGN_OR_RETURN(qkv.q, DecodeFloatInput(q, InputField("q"), 4, "[B, H, Sq, hd]"));
  ASSIGN_OR_RETURN(qkv.k, DecodeFloatInput(k, InputField("k"), 4, "[B, Hkv, Sk, hd]"));
  ASSIGN_OR_RETURN(qkv.v, DecodeFloatInput(v, InputField("v"), 4, "[B, Hkv, Sk, hd]"));
  return absl::OkStatus();
}

absl::StatusOr<WorkDone> RunSdpaModel(const RequestContext& context, const InferRequest& request,
                                      InferResponse* response) {
  static constexpr absl::string_view kInputs[] = {"q",        "k",        "v",
                                                  "key_lengths", "t5_table", "cope_pos_emb"};
  static constexpr absl::string_view kRequired[] = {"q", "k", "v"};
  static constexpr absl::string_view kParameters[] = {"encoding",        "causal",
                                                      "scale",           "position_offset",
                                                      "compute_dtype",   "return_attention"};
  static constexpr absl::string_view kOutputs[] = {"output", "attention"};
  const InferParameters& parameters = request.parameters;
  RETURN_IF_ERROR(CheckParameterNames(parameters, kParameters, kSdpaModel));
  ASSIGN_OR_RETURN(const Inputs inputs, InputsByName(request.inputs, kInputs, kRequired, kSdpaModel));
  ASSIGN_OR_RETURN(const bool return_attention,
                   BoolParameter(parameters, "return_attention", false));
  std::vector<std::string> defaults = {"output"};
  if (return_attention) defaults.push_back("attention");
  ASSIGN_OR_RETURN(const std::vector<std::string> outputs,
                   OutputsToReturn(request, kOutputs, std::move(defaults)));
  SdpaCall call;
  for (const std::string& output : outputs) call.return_attention |= output == "attention";
  // Asking for the probabilities widens bf16 q, k and v to f32, as attnserve.v1 does, whether or
  // not the outputs named then include them.
  RETURN_IF_ERROR(DecodeQkv(inputs, call.return_attention || return_attention, call));
  call.compute = ComputeTypeParameter(parameters);
  if (HasParameter(parameters, "encoding")) {
    call.encoding = EncodingParameter(parameters);
    if (call.encoding.ok()) call.table = InputTable(*call.encoding, inputs);
  }
  ASSIGN_OR_RETURN(call.causal, BoolParameter(parameters, "causal", false));
  if (const InferInput* lengths = Find(inputs, "key_lengths")) {
    ASSIGN_OR_RETURN(DenseTensor<int64_t> key_lengths,
                     DecodeIntInput(*lengths, InputField("key_lengths"), 1, "[B]"));
    call.key_lengths = std::move(key_lengths.values);
  }
  if (HasParameter(parameters, "scale")) {
    ASSIGN_OR_RETURN(call.scale, DoubleParameter(parameters, "scale", 0));
  }
  ASSIGN_OR_RETURN(call.position_offset, IntParameter(parameters, "position_offset", 0));
  const InferInput& q = *Find(inputs, "q");
  int64_t q_elements = 1;
  for (int64_t dim : q.shape) q_elements *= dim;  // checked by DecodeQkv
  call.output_bytes = q_elements * DatatypeSize(q.datatype);

  SdpaResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunSdpa(context, call, &result));
  for (const std::string& output : outputs) {
    if (output == "attention") {
      response->outputs.push_back(EncodeFloatOutput(output, result.attention.shape,
                                                    result.attention.values.data(), "FP32"));
    } else if (const auto* bits = std::get_if<std::vector<uint16_t>>(&result.output)) {
      response->outputs.push_back(EncodeBfloat16Output(output, result.output_shape, bits->data()));
    } else {
      response->outputs.push_back(EncodeFloatOutput(
          output, result.output_shape, std::get<std::vector<float>>(result.output).data(),
          q.datatype));
    }
  }
  return work;
}

absl::StatusOr<WorkDone> RunPositionBiasModel(const RequestContext& context,
                                              const ModelRegistry& models,
                                              const InferRequest& request,
                                              InferResponse* response) {
  static constexpr absl::string_view kInputs[] = {"t5_table"};
  static constexpr absl::string_view kParameters[] = {"model", "encoding", "num_heads",
                                                      "q_len", "kv_len",   "causal"};
  static constexpr absl::string_view kOutputs[] = {"bias"};
  const InferParameters& parameters = request.parameters;
  RETURN_IF_ERROR(CheckParameterNames(parameters, kParameters, kPositionBiasModel));
  ASSIGN_OR_RETURN(const Inputs inputs, InputsByName(request.inputs, kInputs, {}, kPositionBiasModel));
  ASSIGN_OR_RETURN(const std::vector<std::string> outputs,
                   OutputsToReturn(request, kOutputs, {"bias"}));
  PositionBiasCall call;
  ASSIGN_OR_RETURN(const std::string model, StringParameter(parameters, "model", ""));
  if (!model.empty()) {
    ASSIGN_OR_RETURN(call.model, models.Find(model));
  } else if (HasParameter(parameters, "encoding")) {
    call.encoding = EncodingParameter(parameters);
    if (call.encoding.ok()) call.table = InputTable(*call.encoding, inputs);
  } else {
    return absl::InvalidArgumentError(
        "parameters.model or parameters.encoding must be set: the bias of which encoding?");
  }
  ASSIGN_OR_RETURN(call.num_heads, IntParameter(parameters, "num_heads", 0));
  ASSIGN_OR_RETURN(call.q_len, IntParameter(parameters, "q_len", 0));
  ASSIGN_OR_RETURN(call.kv_len, IntParameter(parameters, "kv_len", 0));
  ASSIGN_OR_RETURN(call.causal, BoolParameter(parameters, "causal", false));

  PositionBiasResult result;
  WorkDone work;
  // The whole map on a compute worker, joining no batch (as attnserve.v1's PositionBias).
  RETURN_IF_ERROR(ComputeAlone(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(work, RunPositionBias(context, call, &result));
    return absl::OkStatus();
  }));
  response->outputs.push_back(
      EncodeFloatOutput(outputs.front(), result.shape, result.bias.data(), "FP32"));
  return work;
}

}  // namespace

bool IsOperationModel(absl::string_view name) {
  return name == kEncodeModel || name == kSdpaModel || name == kPositionBiasModel;
}

ModelMetadata OperationMetadata(absl::string_view name) {
  ModelMetadata metadata{std::string(name), {std::string(kModelVersion)}, "attnserve", {}, {}};
  if (name == kEncodeModel) {
    metadata.inputs = {{"input", "FP32", {-1, -1, -1}}, {"position_ids", "INT64", {-1, -1}}};
    metadata.outputs = {{"output", "FP32", {-1, -1, -1}}};
  } else if (name == kSdpaModel) {
    metadata.inputs = {{"q", "FP32", {-1, -1, -1, -1}},      {"k", "FP32", {-1, -1, -1, -1}},
                       {"v", "FP32", {-1, -1, -1, -1}},      {"key_lengths", "INT64", {-1}},
                       {"t5_table", "FP32", {-1, -1}},       {"cope_pos_emb", "FP32", {-1, -1}}};
    metadata.outputs = {{"output", "FP32", {-1, -1, -1, -1}},
                        {"attention", "FP32", {-1, -1, -1, -1}}};
  } else {
    metadata.inputs = {{"t5_table", "FP32", {-1, -1}}};
    metadata.outputs = {{"bias", "FP32", {-1, -1, -1}}};
  }
  return metadata;
}

absl::StatusOr<WorkDone> RunOperationModel(const RequestContext& context,
                                           const ModelRegistry& models,
                                           const InferRequest& request, InferResponse* response) {
  if (request.model_name == kEncodeModel) {
    return RunEncodeModel(context, models, request, response);
  }
  if (request.model_name == kSdpaModel) return RunSdpaModel(context, request, response);
  return RunPositionBiasModel(context, models, request, response);
}

}  // namespace attnserve
