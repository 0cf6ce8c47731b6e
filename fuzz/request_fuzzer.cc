// Request decoding, validation and dispatch: the first byte picks an AttentionService RPC, the rest
// is that RPC's request message in protobuf wire format. The method runs directly (no network) on
// one service over the demo models, with small limits so that every accepted request is cheap.
// Findings: any sanitizer report or crash, a status a client cannot cause (UNKNOWN, INTERNAL), and
// an OK response whose tensors' bytes do not match their shapes.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "fuzz/fuzz_support.h"
#include "grpcpp/server_context.h"
#include "server/rpc/attention_service.h"
#include "server/models/model_registry.h"
#include "server/models/model_store.h"

namespace attnserve::fuzz {
namespace {

// The service under test. Kept in one place: it is the only code that knows how a service gets
// its models.
AttentionServiceImpl& Service() {
  static const ModelStore* models = [] {
    QuietProtobufLogs();
    absl::StatusOr<std::unique_ptr<ModelRegistry>> demo = ModelRegistry::CreateWithDemoModels();
    FUZZ_CHECK(demo.ok(), demo.status().ToString());
    return new ModelStore(*std::move(demo));
  }();
  static AttentionServiceImpl* service = [] {
    ServiceLimits limits;
    limits.max_batch = 4;
    limits.max_sequence_length = 64;
    limits.max_attention_elements = 8192;
    limits.max_response_bytes = 1 << 20;
    limits.max_kv_cache_bytes = 1 << 20;
    return new AttentionServiceImpl(models, limits);
  }();
  return *service;
}

std::vector<int64_t> Shape(const v1::Tensor& tensor) {
  return {tensor.shape().begin(), tensor.shape().end()};
}

// An OK response's tensor: its bytes are exactly its shape times its dtype's size.
void CheckTensor(const char* field, const v1::Tensor& tensor) {
  const int64_t expected = TensorBytes(tensor.dtype(), Shape(tensor));
  FUZZ_CHECK(expected == static_cast<int64_t>(tensor.data().size()),
             absl::StrCat(field, ": ", tensor.data().size(), " bytes for dtype ", tensor.dtype(),
                          " shape [", absl::StrJoin(tensor.shape(), ","), "]"));
}

// The codes the service answers client input with. INTERNAL means a bug (an exception escaped or
// oneDNN refused something validation let through); UNKNOWN is never produced on purpose.
void CheckStatus(const char* rpc, const grpc::Status& status) {
  FUZZ_CHECK(status.error_code() != grpc::StatusCode::INTERNAL &&
                 status.error_code() != grpc::StatusCode::UNKNOWN,
             absl::StrCat(rpc, ": code ", status.error_code(), ": ", status.error_message()));
}

// Parses `request` from the input, calls `method` and checks the status; true when OK.
template <typename Request, typename Response, typename Method>
bool Call(const char* rpc, const uint8_t* data, size_t size, Method method, Response* response) {
  AttentionServiceImpl& service = Service();  // first, so that parsing logs nothing
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return false;
  grpc::ServerContext context;
  const grpc::Status status = (service.*method)(&context, &request, response);
  CheckStatus(rpc, status);
  return status.ok();
}

void FuzzOneRequest(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const uint8_t rpc = data[0];
  ++data;
  --size;
  // Keep the numbering: the seed corpus names inputs by it (fuzz/make_seeds.cc).
  switch (rpc % 6) {
    case 0: {
      v1::EncodeResponse response;
      if (Call<v1::EncodeRequest>("Encode", data, size, &AttentionServiceImpl::Encode,
                                  &response)) {
        CheckTensor("output", response.output());
      }
      break;
    }
    case 1: {
      v1::AttendResponse response;
      if (Call<v1::AttendRequest>("Attend", data, size, &AttentionServiceImpl::Attend,
                                  &response)) {
        CheckTensor("output", response.output());
        if (response.has_attention()) CheckTensor("attention", response.attention());
      }
      break;
    }
    case 2: {
      v1::SdpaResponse response;
      if (Call<v1::SdpaRequest>("ScaledDotProductAttention", data, size,
                                &AttentionServiceImpl::ScaledDotProductAttention, &response)) {
        CheckTensor("output", response.output());
        if (response.has_attention()) CheckTensor("attention", response.attention());
      }
      break;
    }
    case 3: {
      v1::PositionBiasResponse response;
      if (Call<v1::PositionBiasRequest>("PositionBias", data, size,
                                        &AttentionServiceImpl::PositionBias, &response)) {
        CheckTensor("bias", response.bias());
      }
      break;
    }
    case 4: {
      v1::GetModelResponse response;
      if (Call<v1::GetModelRequest>("GetModel", data, size, &AttentionServiceImpl::GetModel,
                                    &response)) {
        FUZZ_CHECK(response.config().d_model() > 0, response.config().DebugString());
      }
      break;
    }
    case 5: {
      v1::ListModelsResponse response;
      if (Call<v1::ListModelsRequest>("ListModels", data, size,
                                      &AttentionServiceImpl::ListModels, &response)) {
        FUZZ_CHECK(response.models_size() > 0, "no models listed");
      }
      break;
    }
  }
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnserve::fuzz::FuzzOneRequest(data, size);
  return 0;
}
