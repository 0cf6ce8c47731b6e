#include "server/attention_service.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/scaled_dot_product_attention.h"
#include "server/encoding_proto.h"
#include "server/status_macros.h"
#include "server/status_util.h"
#include "server/tensor_codec.h"

namespace attnserve {
namespace {

// FLOAT32 (or unspecified) computes in f32; BFLOAT16 compute is not offered by this build yet.
absl::Status CheckComputeDtype(int dtype) {
  if (dtype == v1::DATA_TYPE_UNSPECIFIED || dtype == v1::FLOAT32) return absl::OkStatus();
  if (dtype == v1::BFLOAT16) {
    return absl::UnimplementedError(
        "compute_dtype=BFLOAT16 is not implemented in this build yet; use FLOAT32");
  }
  return absl::InvalidArgumentError(absl::StrCat("compute_dtype=", DataTypeName(dtype),
                                                 " must be FLOAT32 or BFLOAT16"));
}

// Bias kinds change scores, not embeddings: Encode cannot apply them.
absl::Status CheckEmbeddingEncoding(const v1::PositionalEncoding& encoding) {
  switch (encoding.kind_case()) {
    case v1::PositionalEncoding::kAlibi:
    case v1::PositionalEncoding::kT5:
    case v1::PositionalEncoding::kCope: {
      const std::string& kind =
          encoding.GetDescriptor()->FindFieldByNumber(encoding.kind_case())->name();
      return absl::InvalidArgumentError(absl::StrCat(
          "encoding.", kind, " is a score bias, not an embedding encoding; use PositionBias"));
    }
    default:
      return absl::OkStatus();
  }
}

}  // namespace

absl::Status AttentionServiceImpl::CheckLimits(int64_t batch, int64_t heads, int64_t q_len,
                                               int64_t kv_len) const {
  if (batch > limits_.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch=", batch, " exceeds --max_batch=", limits_.max_batch));
  }
  for (int64_t len : {q_len, kv_len}) {
    if (len > limits_.max_sequence_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence length ", len, " exceeds --max_sequence_length=", limits_.max_sequence_length));
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

absl::Status AttentionServiceImpl::DoEncode(const v1::EncodeRequest& request,
                                            v1::EncodeResponse* response) const {
  ASSIGN_OR_RETURN(FloatTensor input,
                   DecodeFloatTensor(request.input(), "input", 3, "[batch, seq, d_model]"));
  const int64_t batch = input.shape[0], seq = input.shape[1], d_model = input.shape[2];
  RETURN_IF_ERROR(CheckLimits(batch, 1, seq, 1));

  v1::PositionalEncoding encoding_proto = request.encoding();
  if (!request.model().empty()) {
    ASSIGN_OR_RETURN(const LoadedModel* model, registry_->Find(request.model()));
    if (d_model != model->config.d_model()) {
      return absl::InvalidArgumentError(absl::StrCat("input.shape[2]=", d_model,
                                                     " must equal d_model=",
                                                     model->config.d_model(), " of model=\"",
                                                     request.model(), "\""));
    }
    encoding_proto = model->config.encoding();
  }
  RETURN_IF_ERROR(CheckEmbeddingEncoding(encoding_proto));
  ASSIGN_OR_RETURN(PositionalEncoding encoding, EncodingFromProto(encoding_proto, "encoding"));
  RETURN_IF_ERROR(WithFieldPrefix(ValidateEncoding(encoding, d_model), "encoding"));
  ASSIGN_OR_RETURN(std::vector<int64_t> positions,
                   ResolvePositions(request.position_ids(), "position_ids",
                                    request.position_offset(), batch, seq));
  const float input_scale = request.has_input_scale() ? request.input_scale() : 1.0f;

  RETURN_IF_ERROR(ApplyAdditiveEncoding(encoding, input.values.data(), positions.data(),
                                        batch * seq, d_model, input_scale, input.values.data()));
  EncodeFloatTensor(input.shape, input.values.data(), request.input().dtype(),
                    response->mutable_output());
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::DoAttend(const v1::AttendRequest& request,
                                            v1::AttendResponse* response) const {
  ASSIGN_OR_RETURN(const LoadedModel* model, registry_->Find(request.model()));
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
  RETURN_IF_ERROR(CheckComputeDtype(request.compute_dtype()));
  RETURN_IF_ERROR(CheckLimits(batch, config.num_heads, q_len, kv_len));
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

  std::vector<float> output(batch * q_len * config.d_model);
  std::vector<float> probs;
  if (request.return_attention()) probs.resize(batch * config.num_heads * q_len * kv_len);
  RETURN_IF_ERROR(model->layer->Forward(inputs, output.data(),
                                        probs.empty() ? nullptr : probs.data()));
  EncodeFloatTensor(query.shape, output.data(), request.query().dtype(),
                    response->mutable_output());
  if (!probs.empty()) {
    EncodeFloatTensor({batch, config.num_heads, q_len, kv_len}, probs.data(), v1::FLOAT32,
                      response->mutable_attention());
  }
  return absl::OkStatus();
}

absl::Status AttentionServiceImpl::DoSdpa(const v1::SdpaRequest& request,
                                          v1::SdpaResponse* response) const {
  ASSIGN_OR_RETURN(FloatTensor q, DecodeFloatTensor(request.q(), "q", 4, "[B, H, Sq, hd]"));
  ASSIGN_OR_RETURN(FloatTensor k, DecodeFloatTensor(request.k(), "k", 4, "[B, Hkv, Sk, hd]"));
  ASSIGN_OR_RETURN(FloatTensor v, DecodeFloatTensor(request.v(), "v", 4, "[B, Hkv, Sk, hd]"));
  if (k.shape[0] != q.shape[0] || k.shape[3] != q.shape[3]) {
    return absl::InvalidArgumentError(
        absl::StrCat("k.shape=[", absl::StrJoin(k.shape, ","), "] must match q.shape=[",
                     absl::StrJoin(q.shape, ","), "] in B and hd"));
  }
  if (v.shape != k.shape) {
    return absl::InvalidArgumentError(absl::StrCat("v.shape=[", absl::StrJoin(v.shape, ","),
                                                   "] must equal k.shape=[",
                                                   absl::StrJoin(k.shape, ","), "]"));
  }
  if (request.has_encoding() &&
      request.encoding().kind_case() != v1::PositionalEncoding::kNone) {
    return absl::UnimplementedError(
        "encoding: inline encodings in ScaledDotProductAttention are not implemented in this "
        "build yet; leave it unset or none");
  }
  RETURN_IF_ERROR(CheckComputeDtype(request.compute_dtype()));
  SdpaShape shape{q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]};
  RETURN_IF_ERROR(CheckLimits(shape.batch, shape.num_heads, shape.q_len, shape.kv_len));
  SdpaOptions options;
  options.causal = request.causal();
  options.key_lengths.assign(request.key_lengths().begin(), request.key_lengths().end());
  if (request.has_scale()) options.scale = static_cast<float>(request.scale());
  RETURN_IF_ERROR(ValidateSdpa(shape, options));

  std::vector<float> out(q.values.size());
  std::vector<float> probs;
  if (request.return_attention()) {
    probs.resize(shape.batch * shape.num_heads * shape.q_len * shape.kv_len);
  }
  RETURN_IF_ERROR(attnserve::ScaledDotProductAttention(shape, options, q.values.data(),
                                                       k.values.data(), v.values.data(),
                                                       out.data(),
                                                       probs.empty() ? nullptr : probs.data()));
  EncodeFloatTensor(q.shape, out.data(), request.q().dtype(), response->mutable_output());
  if (!probs.empty()) {
    EncodeFloatTensor({shape.batch, shape.num_heads, shape.q_len, shape.kv_len}, probs.data(),
                      v1::FLOAT32, response->mutable_attention());
  }
  return absl::OkStatus();
}

grpc::Status AttentionServiceImpl::Encode(grpc::ServerContext*, const v1::EncodeRequest* request,
                                          v1::EncodeResponse* response) {
  return ToGrpcStatus(DoEncode(*request, response));
}

grpc::Status AttentionServiceImpl::Attend(grpc::ServerContext*, const v1::AttendRequest* request,
                                          v1::AttendResponse* response) {
  return ToGrpcStatus(DoAttend(*request, response));
}

grpc::Status AttentionServiceImpl::ScaledDotProductAttention(grpc::ServerContext*,
                                                             const v1::SdpaRequest* request,
                                                             v1::SdpaResponse* response) {
  return ToGrpcStatus(DoSdpa(*request, response));
}

grpc::Status AttentionServiceImpl::Decode(
    grpc::ServerContext*, grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "Decode (streaming with a server-side K/V cache) is not implemented in this "
                      "build yet; use Attend with causal=true over the whole sequence");
}

grpc::Status AttentionServiceImpl::PositionBias(grpc::ServerContext*,
                                                const v1::PositionBiasRequest*,
                                                v1::PositionBiasResponse*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "PositionBias is not implemented in this build yet: it needs the ALiBi and "
                      "T5 encodings, which are not available yet");
}

grpc::Status AttentionServiceImpl::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                              v1::ListModelsResponse* response) {
  for (const LoadedModel* model : registry_->List()) *response->add_models() = model->config;
  return grpc::Status::OK;
}

grpc::Status AttentionServiceImpl::GetModel(grpc::ServerContext*,
                                            const v1::GetModelRequest* request,
                                            v1::GetModelResponse* response) {
  absl::StatusOr<const LoadedModel*> model = registry_->Find(request->name());
  if (!model.ok()) return ToGrpcStatus(model.status());
  *response->mutable_config() = (*model)->config;
  return grpc::Status::OK;
}

}  // namespace attnserve
