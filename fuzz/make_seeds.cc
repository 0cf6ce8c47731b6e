// Writes the generated part of the seed corpora under
// <corpus>/{request,rest_request,safetensors,config}: valid inputs for every RPC and for every
// model of the REST door, safetensors files of F32, BF16 and F16 tensors, and a config for
// every encoding kind; and the dictionaries <corpus>/{config,rest_request,safetensors}.dict.
// Inputs saved from findings live beside the seeds under other names (regression-*).
//   make_seeds <corpus>            (re)writes the generated seeds
//   make_seeds --check <corpus>    fails unless every generated seed is on disk, byte for byte
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/v1/attention_service.pb.h"
#include "attnserve/v1/model_config.pb.h"
#include "core/kernels/bfloat16.h"
#include "fuzz/fuzz_support.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"

namespace attnserve::fuzz {
namespace {

using Seeds = std::map<std::string, std::string>;  // path under the corpus → bytes

// Values in [-1, 1) that differ from element to element, multiples of 1/32 so that F32, BF16
// and F16 hold them exactly (and every build writes the same bytes).
float Value(int64_t i) { return static_cast<float>((i * 37) % 61 - 30) / 32; }

// IEEE binary16 bits of a value that binary16 holds exactly (zero or a normal number).
uint16_t ExactHalf(float value) {
  if (value == 0) return 0;
  int exponent;
  const float mantissa = std::frexp(std::fabs(value), &exponent);  // in [0.5, 1)
  const auto fraction = static_cast<uint16_t>((2 * mantissa - 1) * 1024);
  return static_cast<uint16_t>((value < 0 ? 0x8000 : 0) | (exponent + 14) << 10 | fraction);
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t elements = 1;
  for (int64_t dim : shape) elements *= dim;
  return elements;
}

v1::Tensor FloatTensor(std::vector<int64_t> shape, v1::DataType dtype = v1::FLOAT32) {
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  for (int64_t dim : shape) tensor.add_shape(dim);
  std::string* data = tensor.mutable_data();
  for (int64_t i = 0; i < Elements(shape); ++i) {
    const float value = Value(i);
    if (dtype == v1::BFLOAT16) {
      const uint16_t bits = FloatToBfloat16(value);
      data->append(reinterpret_cast<const char*>(&bits), sizeof(bits));
    } else {
      data->append(reinterpret_cast<const char*>(&value), sizeof(value));
    }
  }
  return tensor;
}

// A request seed: the RPC's number (request_fuzzer.cc) then the message.
void AddRequest(Seeds& seeds, uint8_t rpc, const std::string& name,
                const google::protobuf::Message& request) {
  std::string bytes(1, static_cast<char>(rpc));
  request.AppendToString(&bytes);
  seeds["request/" + std::to_string(rpc) + "-" + name] = bytes;
}

void AddRequestSeeds(Seeds& seeds) {
  enum : uint8_t { kEncode, kAttend, kSdpa, kPositionBias, kGetModel, kListModels };
  {
    v1::EncodeRequest request;
    *request.mutable_input() = FloatTensor({1, 4, 16});
    request.mutable_encoding()->mutable_sinusoidal()->set_variant(v1::VASWANI);
    AddRequest(seeds, kEncode, "sinusoidal", request);
    request.mutable_encoding()->mutable_rope()->set_theta(10000);
    request.set_num_heads(2);
    request.set_position_offset(5);
    *request.mutable_input() = FloatTensor({2, 3, 16}, v1::BFLOAT16);
    AddRequest(seeds, kEncode, "rope-bf16", request);
  }
  {
    v1::EncodeRequest request;
    request.set_model("demo-learned");
    *request.mutable_input() = FloatTensor({1, 2, 256}, v1::BFLOAT16);
    v1::Tensor* ids = request.mutable_position_ids();
    ids->set_dtype(v1::INT64);
    ids->add_shape(2);
    for (int64_t id : {int64_t{7}, int64_t{3}}) {
      ids->mutable_data()->append(reinterpret_cast<const char*>(&id), sizeof(id));
    }
    AddRequest(seeds, kEncode, "model-learned-ids", request);
  }
  // One Attend per demo model family, small queries in bfloat16 to keep the seeds short.
  for (const auto& [model, d_model] : std::vector<std::pair<std::string, int64_t>>{
           {"demo-nope-gqa", 256}, {"demo-rope", 256}, {"demo-t5", 256}, {"demo-cope", 256}}) {
    v1::AttendRequest request;
    request.set_model(model);
    *request.mutable_query() = FloatTensor({1, 3, d_model}, v1::BFLOAT16);
    request.set_causal(true);
    request.set_return_attention(true);
    AddRequest(seeds, kAttend, model, request);
  }
  {
    v1::AttendRequest request;
    request.set_model("demo-alibi");
    *request.mutable_query() = FloatTensor({2, 1, 384}, v1::BFLOAT16);
    *request.mutable_context() = FloatTensor({2, 2, 384}, v1::BFLOAT16);
    request.add_key_lengths(2);
    request.add_key_lengths(1);
    request.set_compute_dtype(v1::BFLOAT16);
    AddRequest(seeds, kAttend, "demo-alibi-cross", request);
  }
  {
    v1::SdpaRequest request;
    *request.mutable_q() = FloatTensor({1, 2, 3, 8});
    *request.mutable_k() = FloatTensor({1, 1, 4, 8});
    *request.mutable_v() = FloatTensor({1, 1, 4, 8});
    request.set_causal(true);
    request.set_return_attention(true);
    AddRequest(seeds, kSdpa, "plain", request);
    request.mutable_encoding()->mutable_rope()->set_theta(10000);
    request.set_position_offset(2);
    AddRequest(seeds, kSdpa, "rope", request);
    request.mutable_encoding()->mutable_alibi()->set_max_bias(8);
    request.set_scale(0.5);
    AddRequest(seeds, kSdpa, "alibi", request);
    request.mutable_encoding()->mutable_t5()->set_num_buckets(8);
    request.mutable_encoding()->mutable_t5()->set_max_distance(16);
    *request.mutable_t5_table() = FloatTensor({8, 2});
    AddRequest(seeds, kSdpa, "t5", request);
    request.clear_t5_table();
    request.mutable_encoding()->mutable_cope()->set_npos_max(4);
    *request.mutable_cope_pos_emb() = FloatTensor({4, 8});
    request.add_key_lengths(3);
    request.set_compute_dtype(v1::BFLOAT16);
    AddRequest(seeds, kSdpa, "cope-bf16", request);
  }
  {
    v1::PositionBiasRequest request;
    request.mutable_encoding()->mutable_alibi()->set_max_bias(8);
    request.set_num_heads(3);
    request.set_q_len(4);
    request.set_causal(true);
    AddRequest(seeds, kPositionBias, "alibi", request);
    request.mutable_encoding()->mutable_t5()->set_num_buckets(8);
    request.mutable_encoding()->mutable_t5()->set_max_distance(16);
    *request.mutable_t5_table() = FloatTensor({8, 3});
    request.set_kv_len(6);
    AddRequest(seeds, kPositionBias, "t5", request);
  }
  {
    v1::PositionBiasRequest request;
    request.set_model("demo-t5");
    request.set_q_len(3);
    request.set_kv_len(5);
    AddRequest(seeds, kPositionBias, "model-t5", request);
  }
  {
    v1::GetModelRequest request;
    request.set_name("demo-rope");
    AddRequest(seeds, kGetModel, "demo-rope", request);
  }
  AddRequest(seeds, kListModels, "all", v1::ListModelsRequest());
}

StoredTensor Stored(const std::string& name, const std::string& dtype,
                    std::vector<int64_t> shape) {
  StoredTensor tensor{name, dtype, shape, ""};
  for (int64_t i = 0; i < Elements(shape); ++i) {
    const float value = Value(i);
    if (dtype == "F32") {
      tensor.data.append(reinterpret_cast<const char*>(&value), sizeof(value));
      continue;
    }
    const uint16_t bits = dtype == "BF16" ? FloatToBfloat16(value) : ExactHalf(value);
    tensor.data.append(reinterpret_cast<const char*>(&bits), sizeof(bits));
  }
  return tensor;
}

void AddSafetensorsSeeds(Seeds& seeds) {
  seeds["safetensors/f32.safetensors"] = SafetensorsBytes(
      {Stored("q_proj.weight", "F32", {4, 4}), Stored("q_proj.bias", "F32", {4})});
  seeds["safetensors/bf16.safetensors"] = SafetensorsBytes(
      {Stored("o_proj.weight", "BF16", {2, 3}), Stored("scalar", "BF16", {})});
  seeds["safetensors/mixed.safetensors"] = SafetensorsBytes(
      {Stored("a", "F16", {3, 2}), Stored("b", "BF16", {2}), Stored("c", "F32", {1, 1, 2}),
       Stored("empty", "F32", {0, 4})});
}

void AddConfig(Seeds& seeds, const std::string& name, const v1::ModelConfig& config) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  seeds["config/" + name + ".pbtxt"] = text;
}

void AddConfigSeeds(Seeds& seeds) {
  v1::ModelConfig base;
  base.set_d_model(16);
  base.set_num_heads(4);
  base.set_num_kv_heads(2);
  base.set_qkv_bias(true);
  base.set_max_positions(32);

  v1::ModelConfig config = base;
  config.mutable_encoding()->mutable_none();
  config.set_o_bias(true);
  config.set_scale(0.25);
  AddConfig(seeds, "none", config);
  for (const auto& [name, variant] :
       {std::pair<const char*, v1::SinusoidalVariant>{"sinusoidal-vaswani", v1::VASWANI},
        {"sinusoidal-t2t", v1::TENSOR2TENSOR},
        {"sinusoidal-fairseq", v1::FAIRSEQ}}) {
    config = base;
    config.mutable_encoding()->mutable_sinusoidal()->set_variant(variant);
    if (variant == v1::FAIRSEQ) config.mutable_encoding()->mutable_sinusoidal()->set_padding_idx(1);
    AddConfig(seeds, name, config);
  }
  config = base;
  config.mutable_encoding()->mutable_learned();
  config.mutable_tensor_names()->set_position_embeddings("wpe.weight");
  config.set_weights_file("model.safetensors");
  AddConfig(seeds, "learned", config);

  v1::ModelConfig rope = base;
  rope.set_head_dim(8);
  rope.mutable_encoding()->mutable_rope()->set_theta(10000);
  AddConfig(seeds, "rope", rope);
  config = rope;
  config.mutable_encoding()->mutable_rope()->set_layout(v1::INTERLEAVED);
  config.mutable_encoding()->mutable_rope()->set_rotary_dim(4);
  config.mutable_encoding()->mutable_rope()->mutable_linear()->set_factor(2);
  AddConfig(seeds, "rope-linear", config);
  config = rope;
  auto* ntk = config.mutable_encoding()->mutable_rope()->mutable_dynamic_ntk();
  ntk->set_factor(2);
  ntk->set_original_max_positions(16);
  AddConfig(seeds, "rope-dynamic-ntk", config);
  config = rope;
  auto* yarn = config.mutable_encoding()->mutable_rope()->mutable_yarn();
  yarn->set_factor(4);
  yarn->set_original_max_positions(8);
  AddConfig(seeds, "rope-yarn", config);
  config = rope;
  auto* llama3 = config.mutable_encoding()->mutable_rope()->mutable_llama3();
  llama3->set_factor(8);
  llama3->set_low_freq_factor(1);
  llama3->set_high_freq_factor(4);
  llama3->set_original_max_positions(16);
  AddConfig(seeds, "rope-llama3", config);
  config = rope;
  auto* longrope = config.mutable_encoding()->mutable_rope()->mutable_longrope();
  for (double factor : {1.0, 1.5, 2.0, 3.0}) {
    longrope->add_short_factor(factor);
    longrope->add_long_factor(2 * factor);
  }
  longrope->set_original_max_positions(8);
  longrope->set_max_positions(32);
  AddConfig(seeds, "rope-longrope", config);

  config = base;
  config.mutable_encoding()->mutable_alibi()->set_max_bias(8);
  AddConfig(seeds, "alibi", config);
  config = base;
  config.mutable_encoding()->mutable_t5()->set_num_buckets(8);
  config.mutable_encoding()->mutable_t5()->set_max_distance(16);
  config.set_scale(1);
  AddConfig(seeds, "t5", config);
  config = base;
  config.mutable_encoding()->mutable_cope()->set_npos_max(8);
  AddConfig(seeds, "cope", config);
}

// JSON numbers for `count` values.
std::string JsonValues(int64_t count) {
  std::string values;
  for (int64_t i = 0; i < count; ++i) absl::StrAppend(&values, i == 0 ? "" : ",", Value(i));
  return values;
}

// rest_request seeds: the selector byte (model index, 0x80 for binary data with its JSON length)
// and the body.
void AddRest(Seeds& seeds, int model, const std::string& name, const std::string& json,
             const std::string& binary = "") {
  std::string input(1, static_cast<char>(model | (binary.empty() ? 0 : 0x80)));
  if (!binary.empty()) {
    const auto length = static_cast<uint32_t>(json.size());
    input.append(reinterpret_cast<const char*>(&length), sizeof(length));
  }
  seeds[absl::StrCat("rest_request/", kRestModels[model], "-", name)] = input + json + binary;
}

void AddRestSeeds(Seeds& seeds) {
  const int64_t d_model[] = {512, 256, 256, 256, 384, 256, 256};
  for (int model = 0; model < 7; ++model) {
    const int64_t d = d_model[model];
    AddRest(seeds, model, "json",
            absl::StrCat(R"({"id":"s","parameters":{"causal":true,"position_offset":1},)",
                         R"("inputs":[{"name":"input","datatype":"FP32","shape":[1,2,)", d,
                         R"(],"data":[)", JsonValues(2 * d), "]}]}"));
  }
  // demo-rope: binary FP16 input, cross-attention, key lengths, ids, attention asked for as binary.
  std::string binary;
  for (int64_t i = 0; i < 256; ++i) {
    const uint16_t bits = ExactHalf(Value(i));
    binary.append(reinterpret_cast<const char*>(&bits), sizeof(bits));
  }
  for (int64_t i = 0; i < 3 * 256; ++i) {
    const float value = Value(i);
    binary.append(reinterpret_cast<const char*>(&value), sizeof(value));
  }
  AddRest(seeds, 3, "binary-cross",
          R"({"parameters":{"binary_data_output":true,"return_attention":true},"inputs":[)"
          R"({"name":"input","datatype":"FP16","shape":[1,1,256],"parameters":{"binary_data_size":512}},)"
          R"({"name":"context","datatype":"FP32","shape":[1,3,256],"parameters":{"binary_data_size":3072}},)"
          R"({"name":"key_lengths","datatype":"INT32","shape":[1],"data":[2]},)"
          R"({"name":"position_ids","datatype":"INT64","shape":[1,1],"data":[[4]]}],)"
          R"("outputs":[{"name":"output"},{"name":"attention","parameters":{"binary_data":false}}]})",
          binary);
  AddRest(seeds, 7, "rope",
          R"({"parameters":{"encoding":"{\"rope\":{\"theta\":100}}","head_dim":4},"inputs":[)"
          R"({"name":"input","datatype":"FP32","shape":[1,2,8],"data":[[)" + JsonValues(8) +
              "],[" + JsonValues(8) + "]]}]}");
  AddRest(seeds, 8, "t5",
          R"({"parameters":{"encoding":"{\"t5\":{\"num_buckets\":4}}","causal":true},"inputs":[)"
          R"({"name":"q","datatype":"FP32","shape":[1,2,2,4],"data":[)" + JsonValues(16) + "]},"
          R"({"name":"k","datatype":"FP32","shape":[1,1,3,4],"data":[)" + JsonValues(12) + "]},"
          R"({"name":"v","datatype":"FP32","shape":[1,1,3,4],"data":[)" + JsonValues(12) + "]},"
          R"({"name":"t5_table","datatype":"FP32","shape":[4,2],"data":[)" + JsonValues(8) + "]}]}");
  AddRest(seeds, 9, "alibi",
          R"({"parameters":{"encoding":"{\"alibi\":{}}","num_heads":3,"q_len":2,"kv_len":4}})");
  AddRest(seeds, 9, "model-t5", R"({"parameters":{"model":"demo-t5","q_len":3}})");
}

// libFuzzer dictionary lines for each quoted token.
std::string Dictionary(const std::set<std::string>& tokens) {
  std::string dict;
  for (const std::string& token : tokens) dict += "\"" + token + "\"\n";
  return dict;
}

// Every field name and enum value name reachable from `message`, so that the config dictionary
// follows the proto as it grows.
void CollectNames(const google::protobuf::Descriptor* message, std::set<std::string>& names) {
  if (!names.insert(message->full_name()).second) return;  // visited (full names never clash)
  for (int i = 0; i < message->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = message->field(i);
    names.insert(field->name());
    if (field->message_type() != nullptr) CollectNames(field->message_type(), names);
    if (field->enum_type() != nullptr) {
      for (int j = 0; j < field->enum_type()->value_count(); ++j) {
        names.insert(field->enum_type()->value(j)->name());
      }
    }
  }
}

void AddDictionaries(Seeds& seeds) {
  std::set<std::string> config;
  CollectNames(v1::ModelConfig::descriptor(), config);
  for (auto it = config.begin(); it != config.end();) {
    it = it->find('.') != std::string::npos ? config.erase(it) : std::next(it);  // message names
  }
  for (const char* token : {"{", "}", ":", "true", "false", "inf", "-inf", "nan", "-1", "0x",
                            "1e308", "9223372036854775807", "1048576", "1048577"}) {
    config.insert(token);
  }
  seeds["config.dict"] = Dictionary(config);
  seeds["rest_request.dict"] = Dictionary(
      {"inputs", "outputs", "parameters", "name", "shape", "datatype", "data", "id", "input",
       "context", "key_lengths", "position_ids", "q", "k", "v", "t5_table", "cope_pos_emb",
       "output", "attention", "bias", "FP32", "BF16", "FP16", "INT32", "INT64", "causal",
       "position_offset", "compute_dtype", "return_attention", "binary_data_size",
       "binary_data", "binary_data_output", "timeout", "encoding", "model", "num_heads",
       "head_dim", "input_scale", "q_len", "kv_len", "scale", "rope", "alibi", "t5", "cope",
       "true", "false", "null", "[", "]", "{", "}", ":", ",", "-1", "1e308", "-0",
       "9223372036854775807", "18446744073709551615"});
  seeds["safetensors.dict"] = Dictionary(
      {"dtype", "shape", "data_offsets", "__metadata__", "F32", "BF16", "F16", "F64", "I64",
       "U8", "BOOL", "18446744073709551615", "9223372036854775808", "[", "]", "{", "}", ":",
       "-1", "1e3", "null"});
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int Run(int argc, char** argv) {
  const bool check = argc == 3 && std::strcmp(argv[1], "--check") == 0;
  if (argc != 2 && !check) {
    std::fprintf(stderr, "usage: %s [--check] <corpus folder>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path corpus = argv[argc - 1];
  Seeds seeds;
  AddRequestSeeds(seeds);
  AddRestSeeds(seeds);
  AddSafetensorsSeeds(seeds);
  AddConfigSeeds(seeds);
  AddDictionaries(seeds);
  int stale = 0;
  for (const auto& [name, bytes] : seeds) {
    const std::filesystem::path path = corpus / name;
    if (check) {
      if (ReadFile(path) != bytes) {
        std::fprintf(stderr, "%s is missing or differs from what make_seeds generates\n",
                     path.c_str());
        ++stale;
      }
      continue;
    }
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
  }
  if (stale > 0) {
    std::fprintf(stderr, "%d stale seeds: regenerate with `make_seeds %s`\n", stale,
                 corpus.c_str());
    return 1;
  }
  std::fprintf(stderr, "%zu seeds %s\n", seeds.size(), check ? "up to date" : "written");
  return 0;
}

}  // namespace
}  // namespace attnserve::fuzz

int main(int argc, char** argv) { return attnserve::fuzz::Run(argc, argv); }
