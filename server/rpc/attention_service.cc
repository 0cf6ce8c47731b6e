#include "server/rpc/attention_service.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/attention/scaled_dot_product_attention.h"
#include "server/rpc/encoding_proto.h"
#include "core/base/field_status.h"
#include "core/base/status_macros.h"
#include "server/rpc/status_util.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {
namespace {

// FLOAT32 (or unspecified) computes in f32; BFLOAT16 uses bf16 operands, f32 accumulation.
absl::StatusOr<ComputeType> ComputeTypeFromProto(int dtype) {
  if (dtype == v1::DATA_TYPE_UNSPECIFIED || dtype == v1::FLOAT32) return ComputeType::kFloat32;
  if (dtype == v1::BFLOAT16) return ComputeType::kBfloat16;
  return absl::InvalidArgumentError(absl::StrCat("compute_dtype=", DataTypeName(dtype),
                                                 " must be FLOAT32 or BFLOAT16"));
}

// Decodes the FLOAT32/BFLOAT16 table an encoding needs, of exactly `shape`.
absl::StatusOr<std::shared_ptr<const std::vector<float>>> DecodeTable(
    const v1::Tensor& tensor, absl::string_view field, absl::string_view encoding,
    absl::string_view dims, const std::vector<int64_t>& shape) {
  if (tensor.shape_size() == 0 && tensor.data().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is required with encoding.", encoding,
                                                   ": FLOAT32 ", dims));
  }
  ASSIGN_OR_RETURN(FloatTensor table, DecodeFloatTensor(tensor, field, 2, dims));
  if (table.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape=", FormatShape(table.shape),
                                                   " must be ", FormatShape(shape), " ", dims));
  }
  return std::make_shared<const std::vector<float>>(std::move(table.values));
}

// The numeric parameters of the kinds whose tables come with the request (T5, CoPE), so that
// they are reported before any table shape derived from them. The rules are those of
// ValidateT5Bias and ValidateCope (which also need the table), with their "<kind>.<name>=…"
// messages.
absl::Status CheckTableParams(const PositionalEncoding& encoding) {
  if (const auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    if (t5->num_buckets < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("t5.num_buckets=", t5->num_buckets, " must be >= 2"));
    }
    if (t5->bidirectional && (t5->num_buckets % 2 != 0 || t5->num_buckets < 4)) {
      return absl::InvalidArgumentError(absl::StrCat("t5.num_buckets=", t5->num_buckets,
                                                     " must be even and >= 4 when bidirectional"));
    }
    const int64_t max_exact = (t5->bidirectional ? t5->num_buckets / 2 : t5->num_buckets) / 2;
    if (t5->max_distance <= max_exact) {
      return absl::InvalidArgumentError(
          absl::StrCat("t5.max_distance=", t5->max_distance, " must be > max_exact=", max_exact,
                       " (num_buckets", t5->bidirectional ? "/4" : "/2", ")"));
    }
  } else if (const auto* cope = std::get_if<CopeParams>(&encoding)) {
    if (cope->npos_max < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("cope.npos_max=", cope->npos_max, " must be >= 1"));
    }
  }
  return absl::OkStatus();
}

// Attaches the tables an inline encoding needs (T5, CoPE) from the request, after checking the
// parameters that shape them; a learned table only comes with a model.
absl::Status AttachRequestTables(const v1::Tensor& t5_table, const v1::Tensor& cope_pos_emb,
                                 int64_t num_heads, int64_t head_dim,
                                 PositionalEncoding& encoding) {
  RETURN_IF_ERROR(WithFieldPrefix(CheckTableParams(encoding), "encoding"));
  if (auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    ASSIGN_OR_RETURN(t5->table, DecodeTable(t5_table, "t5_table", "t5", "[num_buckets, num_heads]",
                                            {t5->num_buckets, num_heads}));
  } else if (auto* cope = std::get_if<CopeParams>(&encoding)) {
    ASSIGN_OR_RETURN(cope->pos_emb, DecodeTable(cope_pos_emb, "cope_pos_emb", "cope",
                                                "[npos_max, head_dim]",
                                                {cope->npos_max, head_dim}));
  } else if (std::holds_alternative<LearnedParams>(encoding)) {
    return absl::InvalidArgumentError(
        "encoding.learned needs a model's table: set `model` to a model with learned positions");
  }
  return absl::OkStatus();
}

// Score kinds have no embedding form: ALiBi and T5 have a fixed bias map (PositionBias); CoPE's
// term depends on q and k, so it exists only inside attention.
absl::Status RejectScoreEncoding(const PositionalEncoding& encoding) {
  if (!IsScoreEncoding(encoding)) return absl::OkStatus();
  const std::string prefix = absl::StrCat("encoding.", EncodingName(encoding),
                                          " is a score bias, not an embedding encoding; ");
  if (std::holds_alternative<CopeParams>(encoding)) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "it depends on q·k, so PositionBias has no fixed map for it either: use Attend "
                "or ScaledDotProductAttention"));
  }
  return absl::InvalidArgumentError(absl::StrCat(prefix, "use PositionBias to see it"));
}

// PositionBias serves the kinds with a fixed score bias map: ALiBi and T5.
absl::Status RequireFixedBias(const PositionalEncoding& encoding) {
  if (std::holds_alternative<AlibiParams>(encoding) ||
      std::holds_alternative<T5BiasParams>(encoding)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("encoding.", EncodingName(encoding),
                   " has no fixed score bias; PositionBias serves alibi and t5"));
}

// The most heads PositionBias computes a map for.
constexpr int64_t kMaxBiasHeads = 65536;

// Useful FLOPs of attention: 4·B·H·Sq·Sk·hd (q·kᵀ and p·v), halved for causal square attention.
double AttentionFlops(int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                      int64_t head_dim, bool causal) {
  const double full = 4.0 * batch * heads * q_len * kv_len * head_dim;
  return causal && q_len == kv_len ? full / 2 : full;
}

// The layer: q/k/v/o projections (2·tokens·in·out each) plus attention.
double LayerFlops(const AttentionConfig& c, int64_t batch, int64_t q_len, int64_t kv_len,
                  bool causal) {
  const double q_width = static_cast<double>(c.num_heads * c.head_dim);
  const double kv_width = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double projections = 2.0 * batch * c.d_model *
                             (q_len * q_width * 2 + kv_len * kv_width * 2);
  return projections + AttentionFlops(batch, c.num_heads, q_len, kv_len, c.head_dim, causal);
}

}  // namespace

absl::Status AttentionServiceImpl::CheckLimits(int64_t batch, int64_t heads, int64_t q_len,
                                               int64_t kv_len, absl::string_view q_field,
                                               absl::string_view kv_field) const {
  if (batch > limits_.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch=", batch, " exceeds --max_batch=", limits_.max_batch));
  }
  for (const auto& [field, len] : {std::pair<absl::string_view, int64_t>{q_field, q_len},
                                    std::pair<absl::string_view, int64_t>{kv_field, kv_len}}) {
    if (len > limits_.max_sequence_length) {
      return absl::InvalidArgumentError(absl::StrCat(field, "=", len, " exceeds --max_sequence_length=",
                                                     limits_.max_sequence_length));
    }
  }
  // Each factor is bounded above, so the product cannot overflow int64.
  const int64_t scores = batch * heads * q_len * kv_len;
  if (scores > limits_.max_attention_elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch·heads·q_len·kv_len=", batch, "·", heads, "·", q_len, "·", kv_len, "=", scores,
        " exceeds --max_attention_elements=", limits_.max_attention_elements));
  }
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::CheckResponseSize(absl::string_view field,
                                                     absl::string_view tensor,
                                                     const std::vector<int64_t>& shape,
                                                     int64_t other_bytes) const {
  // Room for the protobuf framing around the tensors (tags, lengths, dtype, shape).
  constexpr int64_t kFramingBytes = 1024;
  int64_t bytes = sizeof(float);
  for (int64_t dim : shape) bytes *= dim;  // bounded by CheckLimits
  if (bytes + other_bytes + kFramingBytes <= limits_.max_response_bytes) return absl::OkStatus();
  std::string message = absl::StrCat(field, ": ", tensor, " ", FormatShape(shape),
                                     " FLOAT32 is ", bytes, " bytes");
  if (other_bytes > 0) absl::StrAppend(&message, ", ", bytes + other_bytes, " with the output");
  absl::StrAppend(&message, "; exceeds --max_message_bytes=", limits_.max_response_bytes);
  return absl::InvalidArgumentError(message);
}

absl::Status AttentionServiceImpl::DoEncode(const ModelRegistry& models,
                                            const v1::EncodeRequest& request,
                                            v1::EncodeResponse* response) const {
  ASSIGN_OR_RETURN(FloatTensor input,
                   DecodeFloatTensor(request.input(), "input", 3, "[batch, seq, d_model]"));
  const int64_t batch = input.shape[0], seq = input.shape[1], d_model = input.shape[2];
  RETURN_IF_ERROR(CheckLimits(batch, 1, seq, 1, "input.shape[1]"));
  using NamedValue = std::pair<const char*, int64_t>;
  for (const auto& [name, value] :
       {NamedValue{"num_heads", request.num_heads()}, NamedValue{"head_dim", request.head_dim()}}) {
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, "=", value, " must be >= 0 (0: unset)"));
    }
  }

  PositionalEncoding encoding;
  int64_t num_heads = 0, head_dim = 0;
  if (!request.model().empty()) {
    ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(request.model()));
    const AttentionConfig& config = model->layer->config();
    if (d_model != config.d_model) {
      return absl::InvalidArgumentError(absl::StrCat("input.shape[2]=", d_model,
                                                     " must equal d_model=", config.d_model,
                                                     " of model=\"", request.model(), "\""));
    }
    encoding = config.encoding;
    num_heads = config.num_heads;
    head_dim = config.head_dim;
    // RoPE rotates d_model channels split into the model's heads: they must split exactly.
    if (std::holds_alternative<RopeParams>(encoding) &&
        (d_model % num_heads != 0 || d_model / num_heads != head_dim)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model=\"", request.model(), "\" has num_heads=", num_heads, " and head_dim=", head_dim,
          ", which do not split d_model=", d_model,
          ": Encode cannot apply its RoPE to d_model-wide embeddings"));
    }
  } else {
    ASSIGN_OR_RETURN(encoding, EncodingFromProto(request.encoding(), "encoding"));
    RETURN_IF_ERROR(RejectScoreEncoding(encoding));
    RETURN_IF_ERROR(AttachRequestTables(v1::Tensor(), v1::Tensor(), 0, 0, encoding));
    num_heads = request.num_heads();
    head_dim = request.head_dim();
  }
  RETURN_IF_ERROR(RejectScoreEncoding(encoding));
  if (std::holds_alternative<RopeParams>(encoding) && request.model().empty()) {
    // RoPE rotates per head: the channels split as [num_heads, head_dim] (both >= 0 here).
    if (num_heads == 0 && head_dim == 0) {
      return absl::InvalidArgumentError("encoding.rope needs num_heads or head_dim");
    }
    if (num_heads > 0) {
      if (d_model % num_heads != 0 || (head_dim > 0 && d_model / num_heads != head_dim)) {
        return absl::InvalidArgumentError(absl::StrCat("num_heads=", num_heads, " and head_dim=",
                                                       head_dim, " must split d_model=", d_model));
      }
      head_dim = d_model / num_heads;
    } else if (d_model % head_dim != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("head_dim=", head_dim, " must divide d_model=", d_model));
    }
    num_heads = d_model / head_dim;
  } else if (!std::holds_alternative<RopeParams>(encoding)) {
    num_heads = 1;  // additive kinds treat the channels as one row
    head_dim = d_model;
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> positions,
                   ResolvePositions(request.position_ids(), "position_ids",
                                    request.position_offset(), batch, seq));
  const float input_scale = request.has_input_scale() ? request.input_scale() : 1.0f;

  RETURN_IF_ERROR(WithFieldPrefix(ValidateEncoding(encoding, d_model, num_heads, head_dim),
                                  "encoding"));
  RETURN_IF_ERROR(EncodeEmbeddings(encoding, input.values.data(), positions.data(), batch * seq,
                                   num_heads, head_dim, input_scale, 0, input.values.data(),
                                   &tables_));
  RecordWork("Encode", request.model().empty() ? "inline" : request.model(), batch * seq, 0);
  EncodeFloatTensor(input.shape, input.values.data(), request.input().dtype(),
                    response->mutable_output());
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::DoAttend(const ModelRegistry& models,
                                            const v1::AttendRequest& request,
                                            std::function<bool()> is_cancelled,
                                            v1::AttendResponse* response) const {
  ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(request.model()));
  const AttentionConfig& config = model->layer->config();
  ASSIGN_OR_RETURN(FloatTensor query,
                   DecodeFloatTensor(request.query(), "query", 3, "[batch, q_len, d_model]"));
  const int64_t batch = query.shape[0], q_len = query.shape[1];
  if (query.shape[2] != config.d_model) {
    return absl::InvalidArgumentError(absl::StrCat("query.shape[2]=", query.shape[2],
                                                   " must equal d_model=", config.d_model));
  }
  FloatTensor context;
  int64_t kv_len = q_len;
  if (request.has_context()) {
    ASSIGN_OR_RETURN(context, DecodeFloatTensor(request.context(), "context", 3,
                                                "[batch, kv_len, d_model]"));
    if (context.shape[0] != batch) {
      return absl::InvalidArgumentError(absl::StrCat("context.shape[0]=", context.shape[0],
                                                     " must equal query.shape[0]=", batch));
    }
    if (context.shape[2] != config.d_model) {
      return absl::InvalidArgumentError(absl::StrCat("context.shape[2]=", context.shape[2],
                                                     " must equal d_model=", config.d_model));
    }
    kv_len = context.shape[1];
  }
  ASSIGN_OR_RETURN(const ComputeType compute, ComputeTypeFromProto(request.compute_dtype()));
  RETURN_IF_ERROR(CheckLimits(batch, config.num_heads, q_len, kv_len, "query.shape[1]",
                              request.has_context() ? "context.shape[1]" : "query.shape[1]"));
  if (request.return_attention()) {
    // The output has the query's shape and dtype, so its size is the query's.
    RETURN_IF_ERROR(CheckResponseSize("return_attention", "attention",
                                      {batch, config.num_heads, q_len, kv_len},
                                      static_cast<int64_t>(request.query().data().size())));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> positions,
                   ResolvePositions(request.position_ids(), "position_ids",
                                    request.position_offset(), batch, q_len));

  AttendInputs inputs;
  inputs.query = query.values.data();
  inputs.batch = batch;
  inputs.q_len = q_len;
  inputs.context = request.has_context() ? context.values.data() : nullptr;
  inputs.kv_len = kv_len;
  inputs.positions = positions.data();
  inputs.causal = request.causal();
  inputs.key_lengths.assign(request.key_lengths().begin(), request.key_lengths().end());
  inputs.compute = compute;
  inputs.is_cancelled = std::move(is_cancelled);

  std::vector<float> output(batch * q_len * config.d_model);
  std::vector<float> probs;
  if (request.return_attention()) probs.resize(batch * config.num_heads * q_len * kv_len);
  RETURN_IF_ERROR(model->layer->Forward(inputs, output.data(),
                                        probs.empty() ? nullptr : probs.data()));
  RecordWork("Attend", request.model(), batch * q_len,
             LayerFlops(config, batch, q_len, kv_len, request.causal()));
  EncodeFloatTensor(query.shape, output.data(), request.query().dtype(),
                    response->mutable_output());
  if (!probs.empty()) {
    EncodeFloatTensor({batch, config.num_heads, q_len, kv_len}, probs.data(), v1::FLOAT32,
                      response->mutable_attention());
  }
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::DoSdpa(const v1::SdpaRequest& request,
                                          std::function<bool()> is_cancelled,
                                          v1::SdpaResponse* response) const {
  // BFLOAT16 q, k and v stay bf16 all the way (the core reads them as they are and writes bf16),
  // unless probabilities are wanted; any other mix is widened to f32.
  const bool bf16_tensors = request.q().dtype() == v1::BFLOAT16 &&
                            request.k().dtype() == v1::BFLOAT16 &&
                            request.v().dtype() == v1::BFLOAT16 && !request.return_attention();
  FloatTensor q, k, v;
  Bfloat16Tensor q_bits, k_bits, v_bits;
  if (bf16_tensors) {
    ASSIGN_OR_RETURN(q_bits, DecodeBfloat16Tensor(request.q(), "q", 4, "[B, H, Sq, hd]"));
    ASSIGN_OR_RETURN(k_bits, DecodeBfloat16Tensor(request.k(), "k", 4, "[B, Hkv, Sk, hd]"));
    ASSIGN_OR_RETURN(v_bits, DecodeBfloat16Tensor(request.v(), "v", 4, "[B, Hkv, Sk, hd]"));
  } else {
    ASSIGN_OR_RETURN(q, DecodeFloatTensor(request.q(), "q", 4, "[B, H, Sq, hd]"));
    ASSIGN_OR_RETURN(k, DecodeFloatTensor(request.k(), "k", 4, "[B, Hkv, Sk, hd]"));
    ASSIGN_OR_RETURN(v, DecodeFloatTensor(request.v(), "v", 4, "[B, Hkv, Sk, hd]"));
  }
  const std::vector<int64_t>& q_shape = bf16_tensors ? q_bits.shape : q.shape;
  const std::vector<int64_t>& k_shape = bf16_tensors ? k_bits.shape : k.shape;
  const std::vector<int64_t>& v_shape = bf16_tensors ? v_bits.shape : v.shape;
  if (k_shape[0] != q_shape[0] || k_shape[3] != q_shape[3]) {
    return absl::InvalidArgumentError(absl::StrCat("k.shape=", FormatShape(k_shape),
                                                   " must match q.shape=", FormatShape(q_shape),
                                                   " in B and hd"));
  }
  if (v_shape != k_shape) {
    return absl::InvalidArgumentError(absl::StrCat("v.shape=", FormatShape(v_shape),
                                                   " must equal k.shape=", FormatShape(k_shape)));
  }
  if (q_shape[1] % k_shape[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat("k.shape[1]=", k_shape[1],
                                                   " must divide q.shape[1]=", q_shape[1]));
  }
  const SdpaShape shape{q_shape[0], q_shape[1], k_shape[1], q_shape[2], k_shape[2], q_shape[3]};
  RETURN_IF_ERROR(CheckLimits(shape.batch, shape.num_heads, shape.q_len, shape.kv_len,
                              "q.shape[2]", "k.shape[2]"));
  if (request.return_attention()) {
    // The output has q's shape and dtype, so its size is q's.
    RETURN_IF_ERROR(CheckResponseSize("return_attention", "attention",
                                      {shape.batch, shape.num_heads, shape.q_len, shape.kv_len},
                                      static_cast<int64_t>(request.q().data().size())));
  }
  SdpaOptions options;
  ASSIGN_OR_RETURN(options.compute, ComputeTypeFromProto(request.compute_dtype()));
  options.is_cancelled = std::move(is_cancelled);
  options.tables = &tables_;
  options.causal = request.causal();
  options.key_lengths.assign(request.key_lengths().begin(), request.key_lengths().end());
  if (request.has_scale()) {
    // Checked as a double: converting one outside float's range is undefined.
    const double scale = request.scale();
    if (!std::isfinite(scale) || std::fabs(scale) > FLT_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("scale=", scale, " must be finite and fit in float32"));
    }
    options.scale = static_cast<float>(scale);
  }
  // Keys at position_offset + j, queries bottom-right aligned at position_offset + Sk − Sq + i.
  // The range is checked before any position arithmetic; Sk and Sq are bounded by CheckLimits.
  const int64_t position_offset = request.position_offset();
  const int64_t max_offset = kMaxPosition - shape.kv_len + 1;
  if (position_offset < 0 || position_offset > max_offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        "position_offset=", position_offset, " must be in [0, ", max_offset,
        "]: the last key's position, position_offset + Sk − 1, must be <= ", kMaxPosition));
  }
  if (request.has_encoding()) {
    ASSIGN_OR_RETURN(options.encoding, EncodingFromProto(request.encoding(), "encoding"));
  }
  if (!std::holds_alternative<NoPositionalEncoding>(options.encoding)) {
    if (IsAdditive(options.encoding)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "encoding.", EncodingName(options.encoding),
          " is added to embeddings, not applied inside attention; ScaledDotProductAttention "
          "takes none, rope, alibi, t5 or cope"));
    }
    RETURN_IF_ERROR(AttachRequestTables(request.t5_table(), request.cope_pos_emb(),
                                        shape.num_heads, shape.head_dim, options.encoding));
    RETURN_IF_ERROR(WithFieldPrefix(ValidateEncoding(options.encoding,
                                                     shape.num_heads * shape.head_dim,
                                                     shape.num_heads, shape.head_dim),
                                    "encoding"));
    const int64_t first_query = position_offset + shape.kv_len - shape.q_len;
    if (first_query < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "position_offset=", position_offset, " must be >= Sq − Sk=",
          shape.q_len - shape.kv_len, " with an encoding (query i is at position_offset + Sk − Sq "
          "+ i, which must be >= 0)"));
    }
    options.q_positions.reserve(shape.batch * shape.q_len);
    options.k_positions.reserve(shape.batch * shape.kv_len);
    for (int64_t b = 0; b < shape.batch; ++b) {
      for (int64_t i = 0; i < shape.q_len; ++i) options.q_positions.push_back(first_query + i);
      for (int64_t j = 0; j < shape.kv_len; ++j) {
        options.k_positions.push_back(position_offset + j);
      }
    }
  }
  RETURN_IF_ERROR(ValidateSdpa(shape, options));

  std::vector<float> out;
  std::vector<uint16_t> out_bits;
  std::vector<float> probs;
  if (bf16_tensors) {
    out_bits.resize(q_bits.bits.size());
    RETURN_IF_ERROR(attnserve::ScaledDotProductAttention(shape, options, q_bits.bits.data(),
                                                         k_bits.bits.data(), v_bits.bits.data(),
                                                         out_bits.data()));
  } else {
    out.resize(q.values.size());
    if (request.return_attention()) {
      probs.resize(shape.batch * shape.num_heads * shape.q_len * shape.kv_len);
    }
    RETURN_IF_ERROR(attnserve::ScaledDotProductAttention(shape, options, q.values.data(),
                                                         k.values.data(), v.values.data(),
                                                         out.data(),
                                                         probs.empty() ? nullptr : probs.data()));
  }
  RecordWork("ScaledDotProductAttention", "inline", shape.batch * shape.q_len,
             AttentionFlops(shape.batch, shape.num_heads, shape.q_len, shape.kv_len,
                            shape.head_dim, options.causal));
  if (bf16_tensors) {
    EncodeBfloat16Tensor(q_shape, out_bits.data(), response->mutable_output());
  } else {
    EncodeFloatTensor(q_shape, out.data(), request.q().dtype(), response->mutable_output());
  }
  if (!probs.empty()) {
    EncodeFloatTensor({shape.batch, shape.num_heads, shape.q_len, shape.kv_len}, probs.data(),
                      v1::FLOAT32, response->mutable_attention());
  }
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::DoPositionBias(const ModelRegistry& models,
                                                  const v1::PositionBiasRequest& request,
                                                  v1::PositionBiasResponse* response) const {
  PositionalEncoding encoding;
  int64_t num_heads = request.num_heads();
  if (!request.model().empty()) {
    ASSIGN_OR_RETURN(const LoadedModel* model, models.Find(request.model()));
    const int64_t model_heads = model->layer->config().num_heads;
    if (num_heads != 0 && num_heads != model_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "num_heads=", num_heads, " differs from num_heads=", model_heads, " of model=\"",
          request.model(), "\"; leave num_heads 0 with `model`"));
    }
    encoding = model->layer->config().encoding;
    num_heads = model_heads;
    RETURN_IF_ERROR(RequireFixedBias(encoding));
  } else {
    if (!request.has_encoding()) {
      return absl::InvalidArgumentError(
          "encoding or model must be set: the bias of which encoding?");
    }
    if (num_heads < 1 || num_heads > kMaxBiasHeads) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_heads=", num_heads, " must be in [1, ", kMaxBiasHeads, "]"));
    }
    ASSIGN_OR_RETURN(encoding, EncodingFromProto(request.encoding(), "encoding"));
    // The kind first: only T5's table comes with this request.
    RETURN_IF_ERROR(RequireFixedBias(encoding));
    RETURN_IF_ERROR(
        AttachRequestTables(request.t5_table(), v1::Tensor(), num_heads, 1, encoding));
  }
  RETURN_IF_ERROR(WithFieldPrefix(ValidateEncoding(encoding, num_heads, num_heads, 1), "encoding"));
  const int64_t q_len = request.q_len();
  const int64_t kv_len = request.kv_len() != 0 ? request.kv_len() : q_len;
  if (q_len < 1 || kv_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("q_len=", q_len, " and kv_len=", kv_len, " must be >= 1"));
  }
  RETURN_IF_ERROR(CheckLimits(1, num_heads, q_len, kv_len));
  RETURN_IF_ERROR(CheckResponseSize("num_heads·q_len·kv_len", "bias", {num_heads, q_len, kv_len},
                                    0));

  // Bottom-right aligned: the last query and the last key share a position.
  std::vector<int64_t> q_positions(q_len), k_positions(kv_len);
  const int64_t last = std::max(q_len, kv_len) - 1;
  for (int64_t i = 0; i < q_len; ++i) q_positions[i] = last - (q_len - 1 - i);
  for (int64_t j = 0; j < kv_len; ++j) k_positions[j] = last - (kv_len - 1 - j);
  std::vector<float> bias(num_heads * q_len * kv_len);
  RETURN_IF_ERROR(ScoreBiasMap(encoding, num_heads, q_positions.data(), q_len,
                               k_positions.data(), kv_len, request.causal(), bias.data()));
  if (request.causal()) {
    for (int64_t h = 0; h < num_heads; ++h) {
      for (int64_t i = 0; i < q_len; ++i) {
        for (int64_t j = 0; j < kv_len; ++j) {
          if (k_positions[j] > q_positions[i]) {
            bias[(h * q_len + i) * kv_len + j] = -std::numeric_limits<float>::infinity();
          }
        }
      }
    }
  }
  EncodeFloatTensor({num_heads, q_len, kv_len}, bias.data(), v1::FLOAT32,
                    response->mutable_bias());
  return absl::OkStatus();
}

void AttentionServiceImpl::RecordWork(absl::string_view rpc, absl::string_view model,
                                      int64_t tokens, double flops) const {
  if (metrics_ != nullptr) metrics_->RecordWork(rpc, model, static_cast<double>(tokens), flops);
}

void AttentionServiceImpl::ObserveDecode() const {
  if (metrics_ != nullptr) metrics_->ObserveDecode(decode_streams_.load(), kv_cache_bytes_.load());
}

grpc::Status AttentionServiceImpl::Serve(grpc::ServerContext* context, absl::string_view rpc,
                                          absl::FunctionRef<absl::Status()> body) {
  if (authenticator_ != nullptr) {
    if (absl::Status status = authenticator_->Check(context->client_metadata()); !status.ok()) {
      if (metrics_ != nullptr) metrics_->RecordRejected("unauthenticated");
      return ToGrpcStatus(status);
    }
  }
  // Counted before the draining check: the drain sets draining_ (StartDraining) and then waits
  // for in_flight_ to reach zero (WaitUntilIdle), so a call either sees draining_ or is waited
  // for (checking first let a call slip in between and be cut when the server shut down).
  ++in_flight_;
  if (draining_.load()) {
    --in_flight_;
    if (metrics_ != nullptr) metrics_->RecordRejected("draining");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is draining (shutting down); retry on another replica");
  }
  grpc::Status status = ServeRpc(rpc, body);
  --in_flight_;
  return status;
}

void AttentionServiceImpl::StartDraining() { draining_ = true; }

bool AttentionServiceImpl::WaitUntilIdle(std::chrono::system_clock::time_point deadline) const {
  while (in_flight_.load() > 0) {
    if (std::chrono::system_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::string AttentionServiceImpl::ModelLabel(const ModelRegistry& models,
                                             const std::string& requested_model) {
  if (requested_model.empty()) return "inline";
  return models.Find(requested_model).ok() ? requested_model : "unknown";
}

absl::Status AttentionServiceImpl::RunCompute(grpc::ServerContext* context, absl::string_view rpc,
                                              const std::string& model_label,
                                              absl::FunctionRef<absl::Status()> work) {
  const auto queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started;
  absl::Status status = compute_pool_.Run(
      context->deadline(), [context] { return context->IsCancelled(); },
      [&] {
        started = std::chrono::steady_clock::now();
        return work();
      });
  if (metrics_ == nullptr) return status;
  if (started != std::chrono::steady_clock::time_point()) {
    const std::chrono::duration<double> waited = started - queued;
    const std::chrono::duration<double> ran = std::chrono::steady_clock::now() - started;
    metrics_->RecordCompute(rpc, model_label, waited.count(), ran.count());
  } else if (status.code() == absl::StatusCode::kResourceExhausted) {
    metrics_->RecordRejected("queue_full");
  } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    metrics_->RecordRejected("deadline");
  } else if (status.code() == absl::StatusCode::kCancelled) {
    metrics_->RecordRejected("cancelled");
  }
  return status;
}

grpc::Status AttentionServiceImpl::Encode(grpc::ServerContext* context,
                                          const v1::EncodeRequest* request,
                                          v1::EncodeResponse* response) {
  return Serve(context, "Encode", [&] {
    // The models this request uses, taken as it starts (a reload meanwhile does not change them).
    const std::shared_ptr<const ModelRegistry> models = models_->Current();
    return RunCompute(context, "Encode", ModelLabel(*models, request->model()),
                      [&] { return DoEncode(*models, *request, response); });
  });
}

grpc::Status AttentionServiceImpl::Attend(grpc::ServerContext* context,
                                          const v1::AttendRequest* request,
                                          v1::AttendResponse* response) {
  return Serve(context, "Attend", [&] {
    const std::shared_ptr<const ModelRegistry> models = models_->Current();
    return RunCompute(context, "Attend", ModelLabel(*models, request->model()), [&] {
      return DoAttend(*models, *request, [context] { return context->IsCancelled(); }, response);
    });
  });
}

grpc::Status AttentionServiceImpl::ScaledDotProductAttention(grpc::ServerContext* context,
                                                             const v1::SdpaRequest* request,
                                                             v1::SdpaResponse* response) {
  return Serve(context, "ScaledDotProductAttention", [&] {
    return RunCompute(context, "ScaledDotProductAttention", "inline", [&] {
      return DoSdpa(*request, [context] { return context->IsCancelled(); }, response);
    });
  });
}

grpc::Status AttentionServiceImpl::Decode(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) {
  return Serve(context, "Decode", [&] { return DoDecode(context, stream); });
}

absl::Status AttentionServiceImpl::DoDecode(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) {
  // The stream's models, from its start to its end: a reload meanwhile does not change them.
  const std::shared_ptr<const ModelRegistry> registry = models_->Current();
  v1::DecodeRequest request;
  if (!stream->Read(&request)) return absl::OkStatus();  // the client sent nothing
  ASSIGN_OR_RETURN(const LoadedModel* model, registry->Find(request.model()));
  const AttentionConfig& config = model->layer->config();
  const std::string model_name = request.model();
  // The stream's tokens may not pass the model's max_positions (or the sequence limit).
  const int64_t max_positions = model->config.max_positions() > 0
                                    ? std::min(model->config.max_positions(),
                                               limits_.max_sequence_length)
                                    : limits_.max_sequence_length;
  KvCache cache;
  int64_t reserved = 0;  // bytes of kv_cache_bytes_ this stream holds
  // Releases the stream's share of the budget however the stream ends.
  struct Release {
    AttentionServiceImpl& service;
    int64_t& bytes;
    ~Release() {
      service.kv_cache_bytes_ -= bytes;
      --service.decode_streams_;
      service.ObserveDecode();
    }
  } release{*this, reserved};
  ++decode_streams_;
  ObserveDecode();

  do {
    if (!request.model().empty() && request.model() != model_name) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model=\"", request.model(), "\" differs from the stream's model=\"", model_name, "\""));
    }
    ASSIGN_OR_RETURN(FloatTensor query,
                     DecodeFloatTensor(request.query(), "query", 3, "[1, new_tokens, d_model]"));
    if (query.shape[0] != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("query.shape[0]=", query.shape[0], " must be 1 (one sequence per stream)"));
    }
    if (query.shape[2] != config.d_model) {
      return absl::InvalidArgumentError(absl::StrCat("query.shape[2]=", query.shape[2],
                                                     " must equal d_model=", config.d_model));
    }
    const int64_t n = query.shape[1];
    if (n > max_positions - cache.length) {
      return absl::OutOfRangeError(absl::StrCat(
          "query.shape[1]=", n, " new tokens after ", cache.length, " would pass the stream's ",
          max_positions, " positions (model max_positions or --max_sequence_length)"));
    }
    const int64_t total = cache.length + n;
    RETURN_IF_ERROR(CheckLimits(1, config.num_heads, n, total, "query.shape[1]",
                                "cached + new tokens"));
    if (request.return_attention()) {
      RETURN_IF_ERROR(CheckResponseSize("return_attention", "attention",
                                        {1, config.num_heads, n, total},
                                        n * config.d_model * 4));
    }
    // Reserve the cache's growth before computing; give it back if the budget is exceeded. The
    // step also holds a transient copy of the old cache while it builds the new one, so that is
    // reserved for the step's duration too.
    const int64_t transient = KvCache::Bytes(cache.length, config.num_kv_heads, config.head_dim);
    const int64_t growth =
        KvCache::Bytes(total, config.num_kv_heads, config.head_dim) + transient - reserved;
    if (kv_cache_bytes_.fetch_add(growth) + growth > limits_.max_kv_cache_bytes) {
      kv_cache_bytes_ -= growth;
      if (metrics_ != nullptr) metrics_->RecordRejected("kv_cache_budget");
      return absl::ResourceExhaustedError(absl::StrCat(
          "K/V cache of ", total, " tokens (", reserved + growth,
          " bytes) does not fit --max_kv_cache_bytes=", limits_.max_kv_cache_bytes,
          " with the other streams' caches"));
    }
    reserved += growth;
    ObserveDecode();
    // Whatever happens in the step, the transient copy is gone after it.
    struct ReleaseTransient {
      std::atomic<int64_t>& total;
      int64_t& reserved;
      int64_t bytes;
      ~ReleaseTransient() {
        total -= bytes;
        reserved -= bytes;
      }
    } release_transient{kv_cache_bytes_, reserved, transient};

    DecodeInputs inputs;
    inputs.query = query.values.data();
    inputs.new_tokens = n;
    inputs.is_cancelled = [context] { return context->IsCancelled(); };
    std::vector<float> output(n * config.d_model);
    std::vector<float> probs;
    if (request.return_attention()) probs.resize(config.num_heads * n * total);
    const int64_t first_position = cache.length;
    RETURN_IF_ERROR(RunCompute(context, "Decode", model_name, [&] {
      return model->layer->Decode(inputs, &cache, output.data(),
                                  probs.empty() ? nullptr : probs.data());
    }));
    v1::DecodeResponse response;
    EncodeFloatTensor(query.shape, output.data(), request.query().dtype(),
                      response.mutable_output());
    response.set_position(first_position);
    RecordWork("Decode", model_name, n, LayerFlops(config, 1, n, total, true));
    if (!probs.empty()) {
      EncodeFloatTensor({1, config.num_heads, n, total}, probs.data(), v1::FLOAT32,
                        response.mutable_attention());
    }
    if (!stream->Write(response)) return absl::CancelledError("the client closed the stream");
  } while (stream->Read(&request));
  // Read also fails when the call was cancelled (by the client, a deadline or shutdown): that is
  // not a stream the client ended.
  if (context->IsCancelled()) return absl::CancelledError("the stream was cancelled");
  return absl::OkStatus();
}

grpc::Status AttentionServiceImpl::PositionBias(grpc::ServerContext* context,
                                                const v1::PositionBiasRequest* request,
                                                v1::PositionBiasResponse* response) {
  return Serve(context, "PositionBias", [&] {
    const std::shared_ptr<const ModelRegistry> models = models_->Current();
    return RunCompute(context, "PositionBias", ModelLabel(*models, request->model()),
                      [&] { return DoPositionBias(*models, *request, response); });
  });
}

grpc::Status AttentionServiceImpl::ListModels(grpc::ServerContext* context,
                                              const v1::ListModelsRequest*,
                                              v1::ListModelsResponse* response) {
  return Serve(context, "ListModels", [&] {
    const std::shared_ptr<const ModelRegistry> registry = models_->Current();
    for (const LoadedModel* model : registry->List()) *response->add_models() = model->config;
    return absl::OkStatus();
  });
}

grpc::Status AttentionServiceImpl::GetModel(grpc::ServerContext* context,
                                            const v1::GetModelRequest* request,
                                            v1::GetModelResponse* response) {
  return Serve(context, "GetModel", [&]() -> absl::Status {
    const std::shared_ptr<const ModelRegistry> registry = models_->Current();
    ASSIGN_OR_RETURN(const LoadedModel* model, registry->Find(request->name()));
    *response->mutable_config() = model->config;
    return absl::OkStatus();
  });
}

}  // namespace attnserve
