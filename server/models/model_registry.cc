#include "server/models/model_registry.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "server/rpc/encoding_proto.h"
#include "server/models/safetensors.h"
#include "core/base/field_status.h"
#include "core/base/status_macros.h"
#include "server/rpc/status_util.h"

namespace attnserve {
namespace {

// `count` values uniform in ±1/sqrt(fan_in), torch.nn.Linear's default initialisation range
// for both weight and bias.
std::vector<float> SeededUniform(std::mt19937& rng, int64_t count, int64_t fan_in) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  std::vector<float> values(count);
  for (float& value : values) value = uniform(rng);
  return values;
}

v1::ModelConfig DemoConfig(const char* name, const char* description, int64_t d_model,
                           int64_t num_heads, int64_t num_kv_heads, bool biases) {
  v1::ModelConfig config;
  config.set_name(name);
  config.set_description(description);
  config.set_d_model(d_model);
  config.set_num_heads(num_heads);
  config.set_num_kv_heads(num_kv_heads);
  config.set_qkv_bias(biases);
  config.set_o_bias(biases);
  return config;
}

// Seeded weights matching `config` (defaults resolved).
AttentionWeights DemoWeights(const v1::ModelConfig& config, std::mt19937& rng) {
  const int64_t d = config.d_model();
  const int64_t q_width = config.num_heads() * config.head_dim();
  const int64_t kv_width = config.num_kv_heads() * config.head_dim();
  AttentionWeights weights;
  weights.q_proj_weight = SeededUniform(rng, q_width * d, d);
  weights.k_proj_weight = SeededUniform(rng, kv_width * d, d);
  weights.v_proj_weight = SeededUniform(rng, kv_width * d, d);
  weights.o_proj_weight = SeededUniform(rng, d * q_width, q_width);
  if (config.qkv_bias()) {
    weights.q_proj_bias = SeededUniform(rng, q_width, d);
    weights.k_proj_bias = SeededUniform(rng, kv_width, d);
    weights.v_proj_bias = SeededUniform(rng, kv_width, d);
  }
  if (config.o_bias()) weights.o_proj_bias = SeededUniform(rng, d, q_width);
  return weights;
}

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

// "<path>: <message>" for a non-OK status, keeping its code.
absl::Status InFile(const std::string& path, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}

// Seeded tables for the encodings that carry learned weights, shaped as the layer needs them.
absl::Status AttachDemoTables(const v1::ModelConfig& config, std::mt19937& rng,
                              PositionalEncoding& encoding) {
  auto normal_table = [&rng](int64_t count, float stddev) {
    std::normal_distribution<float> normal(0.0f, stddev);
    auto table = std::make_shared<std::vector<float>>(count);
    for (float& value : *table) value = normal(rng);
    return table;
  };
  if (auto* learned = std::get_if<LearnedParams>(&encoding)) {
    // GPT-2 initialises wpe with N(0, 0.02).
    learned->table = normal_table(config.max_positions() * config.d_model(), 0.02f);
  } else if (auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    t5->table = normal_table(t5->num_buckets * config.num_heads(), 1.0f);
  } else if (auto* cope = std::get_if<CopeParams>(&encoding)) {
    cope->pos_emb = normal_table(cope->npos_max * config.head_dim(), 1.0f);
  }
  return absl::OkStatus();
}

// The entries of `folder`, sorted; an entry that cannot be read ends the listing early, and
// `error` (when not null) says why. Never throws: reloads run on the server's signal thread.
std::vector<std::filesystem::path> ListFolder(const std::filesystem::path& folder,
                                              std::error_code* error = nullptr) {
  std::error_code ignored;
  std::error_code& status = error != nullptr ? *error : ignored;
  std::vector<std::filesystem::path> entries;
  for (std::filesystem::directory_iterator it(folder, status), end; !status && it != end;
       it.increment(status)) {
    entries.push_back(it->path());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Identifies the version of a model folder's files without reading the weights: config.pbtxt's
// bytes, and each regular file's name, size, inode and modification time (a file replaced by
// rename gets a new inode even within the file system's timestamp granularity).
std::string FolderFingerprint(const std::filesystem::path& folder) {
  std::vector<std::string> files;
  for (const std::filesystem::path& path : ListFolder(folder)) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) continue;
    files.push_back(absl::StrCat(path.filename().string(), ":", info.st_size, ":", info.st_ino,
                                 ":", info.st_mtim.tv_sec, ".", info.st_mtim.tv_nsec));
  }
  std::sort(files.begin(), files.end());
  std::ifstream config(folder / "config.pbtxt", std::ios::binary);
  const std::string config_text((std::istreambuf_iterator<char>(config)),
                                std::istreambuf_iterator<char>());
  return absl::StrCat(absl::StrJoin(files, "|"), "\n", config_text);
}

// The layer of `config` over `weights`; the config lists the resolved defaults.
absl::StatusOr<LoadedModel> BuildModel(v1::ModelConfig config, AttentionWeights weights,
                                       PositionalEncoding encoding, std::string weights_dtype) {
  AttentionConfig core_config;
  core_config.d_model = config.d_model();
  core_config.num_heads = config.num_heads();
  core_config.num_kv_heads = config.num_kv_heads();
  core_config.head_dim = config.head_dim();
  if (config.has_scale()) core_config.scale = static_cast<float>(config.scale());
  core_config.encoding = std::move(encoding);
  absl::StatusOr<std::unique_ptr<MultiHeadAttention>> layer =
      MultiHeadAttention::Create(core_config, std::move(weights));
  if (!layer.ok()) return WithFieldPrefix(layer.status(), config.name());
  // List the resolved defaults so clients see the shapes the layer really uses.
  config.set_num_kv_heads((*layer)->config().num_kv_heads);
  config.set_head_dim((*layer)->config().head_dim);
  return LoadedModel{std::move(config), *std::move(layer), std::move(weights_dtype)};
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::CreateWithDemoModels() {
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry());
  std::vector<v1::ModelConfig> configs;

  configs.push_back(DemoConfig("demo-sinusoidal",
                               "Demo: d_model 512, 8 heads, q/k/v/o biases, Vaswani sinusoidal "
                               "encoding added to the input",
                               512, 8, 8, true));
  configs.back().mutable_encoding()->mutable_sinusoidal()->set_variant(v1::VASWANI);

  configs.push_back(DemoConfig("demo-nope-gqa",
                               "Demo: d_model 256, 8 query heads sharing 2 key/value heads (GQA), "
                               "no biases, no positional encoding",
                               256, 8, 2, false));
  configs.back().mutable_encoding()->mutable_none();

  configs.push_back(DemoConfig("demo-learned",
                               "Demo: d_model 256, 4 heads, biases, learned absolute positions "
                               "(512-row table, GPT-2 style) added to the input",
                               256, 4, 4, true));
  configs.back().mutable_encoding()->mutable_learned();
  configs.back().set_max_positions(512);

  configs.push_back(DemoConfig("demo-rope",
                               "Demo: LLaMA-style d_model 256, 8 query heads, 4 key/value heads, "
                               "no biases, RoPE half-split theta 10000",
                               256, 8, 4, false));
  configs.back().mutable_encoding()->mutable_rope()->set_theta(10000);

  configs.push_back(DemoConfig("demo-alibi",
                               "Demo: BLOOM-style d_model 384, 12 heads (non-power-of-two ALiBi "
                               "slopes), biases, ALiBi max_bias 8",
                               384, 12, 12, true));
  configs.back().mutable_encoding()->mutable_alibi()->set_max_bias(8);

  configs.push_back(DemoConfig("demo-t5",
                               "Demo: T5-style d_model 256, 8 heads, no biases, no score scaling, "
                               "bidirectional relative bias (32 buckets, max distance 128)",
                               256, 8, 8, false));
  configs.back().mutable_encoding()->mutable_t5();
  configs.back().set_scale(1.0);

  configs.push_back(DemoConfig("demo-cope",
                               "Demo: d_model 256, 4 heads, no biases, CoPE with 64 position "
                               "embeddings (use with causal=true, as trained)",
                               256, 4, 4, false));
  configs.back().mutable_encoding()->mutable_cope()->set_npos_max(64);

  uint32_t seed = 20240601;
  for (v1::ModelConfig& config : configs) {
    config.set_description(absl::StrCat(config.description(), "; seeded random weights"));
    config.set_head_dim(config.d_model() / config.num_heads());
    std::mt19937 rng(seed++);
    AttentionWeights weights = DemoWeights(config, rng);
    absl::StatusOr<PositionalEncoding> encoding = EncodingFromProto(config.encoding(), "encoding");
    if (!encoding.ok()) return encoding.status();
    if (absl::Status status = AttachDemoTables(config, rng, *encoding); !status.ok()) {
      return status;
    }
    if (absl::Status status =
            registry->Add(std::move(config), std::move(weights), *std::move(encoding), "F32");
        !status.ok()) {
      return status;
    }
  }
  return registry;
}

absl::Status ModelRegistry::Add(v1::ModelConfig config, AttentionWeights weights,
                                PositionalEncoding encoding, std::string weights_dtype) {
  ASSIGN_OR_RETURN(LoadedModel model, BuildModel(std::move(config), std::move(weights),
                                                 std::move(encoding), std::move(weights_dtype)));
  Insert(std::move(model));
  return absl::OkStatus();
}

void ModelRegistry::Insert(LoadedModel model) {
  std::string name = model.config.name();
  models_[name] = std::make_shared<const LoadedModel>(std::move(model));
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::CreateFromRepository(
    const std::string& path) {
  return Reload(ModelRegistry(), path, nullptr);
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Reload(const ModelRegistry& serving,
                                                                     const std::string& path,
                                                                     ReloadReport* report) {
  std::error_code error;
  std::vector<std::filesystem::path> folders;
  for (const std::filesystem::path& entry : ListFolder(path, &error)) {
    std::error_code type_error;
    if (std::filesystem::is_directory(entry, type_error)) folders.push_back(entry);
  }
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("--model_repository=", path, " cannot be read: ", error.message()));
  }
  ReloadReport changes;
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry());
  for (const std::filesystem::path& folder : folders) {
    const std::string name = folder.filename().string();
    const std::string fingerprint = FolderFingerprint(folder);
    registry->fingerprints_[name] = fingerprint;
    const auto previous = serving.models_.find(name);
    const bool was_served = previous != serving.models_.end();
    if (const auto tried = serving.fingerprints_.find(name);
        tried != serving.fingerprints_.end() && tried->second == fingerprint) {
      // The files this registry was built from (or last failed on): nothing new to load.
      if (was_served) {
        registry->models_.insert(*previous);
        changes.unchanged.push_back(name);
        if (const auto stale = serving.stale_.find(name); stale != serving.stale_.end()) {
          registry->stale_.insert(*stale);
        }
      } else if (const auto failure = serving.failures_.find(name);
                 failure != serving.failures_.end()) {
        registry->failures_.insert(*failure);
      }
      continue;
    }
    if (absl::Status status = registry->LoadModelFolder(folder.string(), name); !status.ok()) {
      changes.failed.emplace(name, status);
      if (was_served) {
        registry->models_.insert(*previous);
        registry->stale_.emplace(name, status);
        changes.kept_previous.push_back(name);
      } else {
        registry->failures_.emplace(name, std::move(status));
      }
      continue;
    }
    (was_served ? changes.updated : changes.added).push_back(name);
  }
  for (const auto& [name, model] : serving.models_) {
    if (!registry->models_.count(name)) changes.removed.push_back(name);
  }
  if (report != nullptr) *report = std::move(changes);
  return registry;
}

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
  // The rows of the table a T5 or CoPE encoding reads from the weights file, bounded like the
  // dimensions above (the encoding's own rules are checked when the layer is built).
  const char* rows_field = nullptr;
  int64_t rows = 0;
  if (const auto* t5 = std::get_if<T5BiasParams>(&*encoding)) {
    rows_field = "t5.num_buckets";
    rows = t5->num_buckets;
  } else if (const auto* cope = std::get_if<CopeParams>(&*encoding)) {
    rows_field = "cope.npos_max";
    rows = cope->npos_max;
  }
  if (rows_field != nullptr && (rows < 1 || rows > kMaxDim)) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": encoding.", rows_field, "=",
                                                   rows, " must be in [1, ", kMaxDim, "]"));
  }
  if (std::holds_alternative<LearnedParams>(*encoding) && config.max_positions() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": max_positions=", config.max_positions(),
        " must give the learned table's rows (>= 1)"));
  }
  spec.encoding = *std::move(encoding);
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
  if (std::holds_alternative<LearnedParams>(spec.encoding)) {
    add("position_embeddings.weight", names.position_embeddings(), {config.max_positions(), d});
  } else if (const auto* t5 = std::get_if<T5BiasParams>(&spec.encoding)) {
    add("relative_attention_bias.weight", names.relative_attention_bias(),
        {t5->num_buckets, spec.num_heads});
  } else if (const auto* cope = std::get_if<CopeParams>(&spec.encoding)) {
    add("cope.pos_emb", names.cope_position_embeddings(), {cope->npos_max, spec.head_dim});
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
  auto table = [&take](const char* role) {
    return std::make_shared<const std::vector<float>>(take(role));
  };
  AttentionWeights weights;
  weights.q_proj_weight = take("q_proj.weight");
  weights.k_proj_weight = take("k_proj.weight");
  weights.v_proj_weight = take("v_proj.weight");
  weights.o_proj_weight = take("o_proj.weight");
  weights.q_proj_bias = take("q_proj.bias");
  weights.k_proj_bias = take("k_proj.bias");
  weights.v_proj_bias = take("v_proj.bias");
  weights.o_proj_bias = take("o_proj.bias");
  if (auto* learned = std::get_if<LearnedParams>(&spec.encoding)) {
    learned->table = table("position_embeddings.weight");
  } else if (auto* t5 = std::get_if<T5BiasParams>(&spec.encoding)) {
    t5->table = table("relative_attention_bias.weight");
  } else if (auto* cope = std::get_if<CopeParams>(&spec.encoding)) {
    cope->pos_emb = table("cope.pos_emb");
  }
  absl::StatusOr<LoadedModel> model =
      BuildModel(std::move(spec.config), std::move(weights), std::move(spec.encoding),
                 weights_file.DtypesRead());
  if (!model.ok()) return InFile(spec.config_path, model.status());
  return model;
}

absl::Status ModelRegistry::LoadModelFolder(const std::string& folder,
                                            const std::string& folder_name) {
  const std::string config_path = folder + "/config.pbtxt";
  std::ifstream config_file(config_path);
  if (!config_file) return absl::NotFoundError(absl::StrCat(config_path, ": cannot open"));
  const std::string text((std::istreambuf_iterator<char>(config_file)),
                         std::istreambuf_iterator<char>());
  ASSIGN_OR_RETURN(ModelSpec spec, ParseModelConfig(text, config_path, folder_name));
  const std::string& weights_name = spec.config.weights_file();
  const std::string weights_path =
      folder + "/" + (weights_name.empty() ? "weights.safetensors" : weights_name);
  ASSIGN_OR_RETURN(SafetensorsFile weights_file, SafetensorsFile::Open(weights_path));
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(std::move(spec), weights_file));
  Insert(std::move(model));
  return absl::OkStatus();
}

absl::StatusOr<const LoadedModel*> ModelRegistry::Find(absl::string_view name) const {
  auto it = models_.find(name);
  if (it != models_.end()) return it->second.get();
  if (auto failed = failures_.find(std::string(name)); failed != failures_.end()) {
    return absl::NotFoundError(absl::StrCat("model=\"", name, "\" failed to load: ",
                                            failed->second.message()));
  }
  std::vector<absl::string_view> names;
  for (const auto& [model_name, model] : models_) names.push_back(model_name);
  if (name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model name is empty; loaded models: ", absl::StrJoin(names, ", ")));
  }
  // The name is the client's: echo at most 128 bytes of it, cut at a UTF-8 character boundary.
  std::string shown(name);
  if (constexpr size_t kMaxEchoed = 128; name.size() > kMaxEchoed) {
    size_t cut = kMaxEchoed;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
    shown = absl::StrCat(name.substr(0, cut), "…(", name.size(), " bytes)");
  }
  return absl::NotFoundError(absl::StrCat("model=\"", shown, "\" is not loaded; loaded models: ",
                                          absl::StrJoin(names, ", ")));
}

std::vector<const LoadedModel*> ModelRegistry::List() const {
  std::vector<const LoadedModel*> models;
  for (const auto& [name, model] : models_) models.push_back(model.get());
  return models;
}

}  // namespace attnserve
