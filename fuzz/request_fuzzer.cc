// Request decoding, validation and dispatch: the first byte picks an AttentionService RPC, the rest
// is that RPC's request message in protobuf wire format. The RPC's adapter (unary_rpcs.h) runs
// directly (no network, computing on the calling thread) over the demo models, with small limits
// so that every accepted request is cheap, its status mapped as the service maps it (ServeRpc).
// Findings: any sanitizer report or crash, a status a client cannot cause (UNKNOWN, INTERNAL), and
// an OK response whose tensors' bytes do not match their shapes.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/v1/attention_service.pb.h"
#include "core/encodings/position_table_cache.h"
#include "fuzz/fuzz_support.h"
#include "server/rpc/status_util.h"
#include "server/rpc/unary_rpcs.h"
#include "server/models/model_registry.h"

namespace attnserve::fuzz {
namespace {

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

absl::Status StatusOf(const absl::Status& status) { return status; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

// Parses `request` from the input, calls `handle(context, models, request, response)` and checks
// the status; true when OK.
template <typename Request, typename Response, typename Handler>
bool Call(const char* rpc, const uint8_t* data, size_t size, Handler handle, Response* response) {
  DemoService& service = TheDemoService();  // first, so that parsing logs nothing
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return false;
  const RequestContext context = service.Context();
  const grpc::Status status = ServeRpc(rpc, [&] {
    return StatusOf(handle(context, *service.models, request, response));
  });
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
      if (Call<v1::EncodeRequest>("Encode", data, size, HandleEncode,
                                  &response)) {
        CheckTensor("output", response.output());
      }
      break;
    }
    case 1: {
      v1::AttendResponse response;
      if (Call<v1::AttendRequest>("Attend", data, size, HandleAttend,
                                  &response)) {
        CheckTensor("output", response.output());
        if (response.has_attention()) CheckTensor("attention", response.attention());
      }
      break;
    }
    case 2: {
      v1::SdpaResponse response;
      if (Call<v1::SdpaRequest>("ScaledDotProductAttention", data, size,
                                [](const RequestContext& context, const ModelRegistry&,
                                    const v1::SdpaRequest& request, v1::SdpaResponse* response) {
                                   return HandleSdpa(context, request, response);
                                 }, &response)) {
        CheckTensor("output", response.output());
        if (response.has_attention()) CheckTensor("attention", response.attention());
      }
      break;
    }
    case 3: {
      v1::PositionBiasResponse response;
      if (Call<v1::PositionBiasRequest>("PositionBias", data, size,
                                        HandlePositionBias, &response)) {
        CheckTensor("bias", response.bias());
      }
      break;
    }
    case 4: {
      v1::GetModelResponse response;
      if (Call<v1::GetModelRequest>("GetModel", data, size,
                                    [](const RequestContext&, const ModelRegistry& models,
                                       const v1::GetModelRequest& request,
                                       v1::GetModelResponse* response) {
                                      return HandleGetModel(models, request, response);
                                    },
                                    &response)) {
        FUZZ_CHECK(response.config().d_model() > 0, response.config().DebugString());
      }
      break;
    }
    case 5: {
      v1::ListModelsResponse response;
      if (Call<v1::ListModelsRequest>("ListModels", data, size,
                                      [](const RequestContext&, const ModelRegistry& models,
                                         const v1::ListModelsRequest&,
                                         v1::ListModelsResponse* response) {
                                        return HandleListModels(models, response);
                                      },
                                      &response)) {
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
