#include "server/rpc/unary_rpcs.h"

#include <utility>

#include "core/base/status_macros.h"
#include "server/requests/sdpa.h"
#include "server/models/encoding_proto.h"
#include "server/rpc/tensor_codec.h"

namespace attnserve {
namespace {

// BFLOAT16 q, k and v stay bf16 all the way (the core reads them as they are and writes bf16),
// unless probabilities are wanted; any other mix is widened to f32.
absl::Status DecodeQkv(const v1::SdpaRequest& request, SdpaCall& call) {
  if (request.q().dtype() == v1::BFLOAT16 && request.k().dtype() == v1::BFLOAT16 &&
      request.v().dtype() == v1::BFLOAT16 && !request.return_attention()) {
    QkvTensors<uint16_t>& qkv = call.qkv.emplace<QkvTensors<uint16_t>>();
    ASSIGN_OR_RETURN(qkv.q, DecodeBfloat16Tensor(request.q(), "q", 4, "[B, H, Sq, hd]"));
    ASSIGN_OR_RETURN(qkv.k, DecodeBfloat16Tensor(request.k(), "k", 4, "[B, Hkv, Sk, hd]"));
    ASSIGN_OR_RETURN(qkv.v, DecodeBfloat16Tensor(request.v(), "v", 4, "[B, Hkv, Sk, hd]"));
    return absl::OkStatus();
  }
  QkvTensors<float>& qkv = call.qkv.emplace<QkvTensors<float>>();
  ASSIGN_OR_RETURN(qkv.q, DecodeFloatTensor(request.q(), "q", 4, "[B, H, Sq, hd]"));
  ASSIGN_OR_RETURN(qkv.k, DecodeFloatTensor(request.k(), "k", 4, "[B, Hkv, Sk, hd]"));
  ASSIGN_OR_RETURN(qkv.v, DecodeFloatTensor(request.v(), "v", 4, "[B, Hkv, Sk, hd]"));
  return absl::OkStatus();
}

void EncodeOutput(const SdpaResult& result, v1::DataType q_dtype, v1::Tensor* output) {
  if (const auto* bits = std::get_if<std::vector<uint16_t>>(&result.output)) {
    EncodeBfloat16Tensor(result.output_shape, bits->data(), output);
  } else {
    EncodeFloatTensor(result.output_shape, std::get<std::vector<float>>(result.output).data(),
                      q_dtype, output);
  }
}

}  // namespace

absl::StatusOr<WorkDone> HandleSdpa(const RequestContext& context, const v1::SdpaRequest& request,
                                    v1::SdpaResponse* response) {
  SdpaCall call;
  RETURN_IF_ERROR(DecodeQkv(request, call));
  call.compute = ComputeTypeFromProto(request.compute_dtype());
  if (request.has_encoding()) {
    call.encoding = EncodingFromProto(request.encoding(), "encoding");
    if (call.encoding.ok()) {
      call.table = RequestTableFromProto(*call.encoding, request);
    }
  }
  call.causal = request.causal();
  call.key_lengths.assign(request.key_lengths().begin(), request.key_lengths().end());
  if (request.has_scale()) call.scale = request.scale();
  call.position_offset = request.position_offset();
  call.return_attention = request.return_attention();
  // The output has q's shape and dtype, so its size is q's.
  call.output_bytes = static_cast<int64_t>(request.q().data().size());

  SdpaResult result;
  ASSIGN_OR_RETURN(const WorkDone work, RunSdpa(context, call, &result));
  EncodeOutput(result, request.q().dtype(), response->mutable_output());
  if (call.return_attention) {
    EncodeAttentionMap(result.attention, response->mutable_attention());
  }
  return work;
}

}  // namespace attnserve
