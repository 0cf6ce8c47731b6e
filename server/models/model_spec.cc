#include "server/models/model_spec.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/encodings/encoding_tables.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "nlohmann/json.hpp"
#include "server/models/encoding_proto.h"

namespace attnserve {
namespace {

// Collects text-format parse errors as one message naming the file, line and column.
class TextFormatErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit TextFormatErrors(std::string path) : path_(std::move(path)) {}
  void AddError(int line, int column, const std::string& message) override {
    if (message_.empty()) {
      message_ = absl::StrCat(path_, ":", line + 1, ":", column + 1, ": ", message);
    }
  }
  std::string message() const { return message_.empty() ? path_ + ": parse error" : message_; }

 private:
  std::string path_;
  std::string message_;
};

bool IsUtf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();  // strict: throws on anything that is not UTF-8
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// The path ("tensor_names.q_proj_weight") of the first string set in `message` that is not
// UTF-8, or empty. proto3 strings must be UTF-8 and protobuf's text parser does not check: a
// client's parser refuses a message that breaks it (Python's failed the whole ListModels).
std::string FirstNonUtf8String(const google::protobuf::Message& message) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const int count = field->is_repeated() ? reflection.FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      if (field->type() == FieldDescriptor::TYPE_STRING) {
        const std::string value = field->is_repeated()
                                      ? reflection.GetRepeatedString(message, field, i)
                                      : reflection.GetString(message, field);
        if (!IsUtf8(value)) return field->name();
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const std::string inner = FirstNonUtf8String(
            field->is_repeated() ? reflection.GetRepeatedMessage(message, field, i)
                                 : reflection.GetMessage(message, field));
        if (!inner.empty()) return absl::StrCat(field->name(), ".", inner);
      }
    }
  }
  return "";
}

// "<path>: <message>" for a non-OK status, keeping its code.
absl::Status InFile(const std::string& path, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}

// The layer dimensions the encoding's table follows.
TableLayerShape LayerShape(const ModelSpec& spec) {
  return TableLayerShape{spec.d_model, spec.num_heads, spec.head_dim,
                         spec.config.max_positions()};
}

}  // namespace

absl::StatusOr<ModelSpec> ParseModelConfig(absl::string_view text, const std::string& config_path,
                                           const std::string& folder_name) {
  ModelSpec spec;
  spec.config_path = config_path;
  v1::ModelConfig& config = spec.config;
  TextFormatErrors errors(config_path);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(errors.message());
  }
  if (config.name().empty()) config.set_name(folder_name);
  if (const std::string field = FirstNonUtf8String(config); !field.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": ", field, " is not valid UTF-8 (a proto3 string must be)"));
  }
  if (config.name() != folder_name) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": name \"", config.name(),
                                                   "\" must equal its folder's name \"",
                                                   folder_name, "\""));
  }
  // The layer's shape with defaults resolved, for the tensor shapes to expect. Each dimension is
  // bounded first so that the expected shapes' products cannot overflow.
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"d_model", config.d_model()},
                                    {"num_heads", config.num_heads()},
                                    {"num_kv_heads", config.num_kv_heads()},
                                    {"head_dim", config.head_dim()},
                                    {"max_positions", config.max_positions()}}) {
    if (value < 0 || value > kMaxDim) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": ", name, "=", value, " must be in [0, ", kMaxDim, "]"));
    }
  }
  const int64_t d = config.d_model(), heads = config.num_heads();
  if (d < 1 || heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": d_model=", d, " and num_heads=",
                                                   heads, " must be >= 1"));
  }
  const int64_t kv_heads = config.num_kv_heads() != 0 ? config.num_kv_heads() : heads;
  if (config.head_dim() == 0 && d % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": num_heads=", heads,
                                                   " must divide d_model=", d,
                                                   " when head_dim is not given"));
  }
  const int64_t hd = config.head_dim() != 0 ? config.head_dim() : d / heads;
  if (hd < 1 || kv_heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": head_dim=", hd,
                                                   " and num_kv_heads=", kv_heads,
                                                   " must be >= 1"));
  }
  spec.d_model = d;
  spec.num_heads = heads;
  spec.num_kv_heads = kv_heads;
  spec.head_dim = hd;

  // An unset encoding means none (ModelConfig's documented default).
  absl::StatusOr<PositionalEncoding> encoding =
      config.has_encoding() ? EncodingFromProto(config.encoding(), "encoding")
                            : absl::StatusOr<PositionalEncoding>(NoPositionalEncoding{});
  if (!encoding.ok()) return InFile(config_path, encoding.status());
  spec.encoding = *std::move(encoding);
  // The rows of the table the encoding reads from the weights file, bounded like the dimensions
  // above (the encoding's own rules are checked when the layer is built).
  if (const std::optional<EncodingTableSpec> table = EncodingTable(spec.encoding, LayerShape(spec));
      table.has_value() && (table->rows < 1 || table->rows > kMaxDim)) {
    if (std::holds_alternative<LearnedParams>(spec.encoding)) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": max_positions=", table->rows,
                                                     " must give the learned table's rows (>= 1)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": encoding.", table->rows_field,
                                                   "=", table->rows, " must be in [1, ", kMaxDim,
                                                   "]"));
  }
  return spec;
}

std::vector<RequiredTensor> RequiredTensors(const ModelSpec& spec) {
  const v1::ModelConfig& config = spec.config;
  const v1::TensorNames& names = config.tensor_names();
  const int64_t d = spec.d_model, q_width = spec.num_heads * spec.head_dim,
                kv_width = spec.num_kv_heads * spec.head_dim;
  std::vector<RequiredTensor> tensors;
  auto add = [&tensors](const char* role, const std::string& override_name,
                        std::vector<int64_t> shape) {
    tensors.push_back(
        {role, override_name.empty() ? std::string(role) : override_name, std::move(shape)});
  };
  add("q_proj.weight", names.q_proj_weight(), {q_width, d});
  add("k_proj.weight", names.k_proj_weight(), {kv_width, d});
  add("v_proj.weight", names.v_proj_weight(), {kv_width, d});
  add("o_proj.weight", names.o_proj_weight(), {d, q_width});
  if (config.qkv_bias()) {
    add("q_proj.bias", names.q_proj_bias(), {q_width});
    add("k_proj.bias", names.k_proj_bias(), {kv_width});
    add("v_proj.bias", names.v_proj_bias(), {kv_width});
  }
  if (config.o_bias()) add("o_proj.bias", names.o_proj_bias(), {d});
  if (const auto table = EncodingTable(spec.encoding, LayerShape(spec))) {
    add(table->tensor_name, TableNameOverride(names, spec.encoding), {table->rows, table->cols});
  }
  return tensors;
}

absl::StatusOr<LoadedModel> LoadModel(ModelSpec spec, const SafetensorsFile& weights_file) {
  std::map<std::string, std::vector<float>> by_role;
  for (const RequiredTensor& tensor : RequiredTensors(spec)) {
    ASSIGN_OR_RETURN(by_role[tensor.role], weights_file.Read(tensor.name, tensor.shape));
  }
  // Absent roles (biases the config leaves out, tables of other encodings) stay empty.
  auto take = [&by_role](const char* role) { return std::move(by_role[role]); };
  AttentionWeights weights;
  weights.q_proj_weight = take("q_proj.weight");
  weights.k_proj_weight = take("k_proj.weight");
  weights.v_proj_weight = take("v_proj.weight");
  weights.o_proj_weight = take("o_proj.weight");
  weights.q_proj_bias = take("q_proj.bias");
  weights.k_proj_bias = take("k_proj.bias");
  weights.v_proj_bias = take("v_proj.bias");
  weights.o_proj_bias = take("o_proj.bias");
  if (const auto table = EncodingTable(spec.encoding, LayerShape(spec))) {
    AttachTable(std::make_shared<const std::vector<float>>(take(table->tensor_name)),
                spec.encoding);
  }
  absl::StatusOr<LoadedModel> model =
      BuildModel(std::move(spec.config), std::move(weights), std::move(spec.encoding),
                 weights_file.DtypesRead());
  if (!model.ok()) return InFile(spec.config_path, model.status());
  return model;
}

}  // namespace attnserve
