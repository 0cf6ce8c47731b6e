// The unary computing RPCs (Encode, Attend, ScaledDotProductAttention, PositionBias) on gRPC's
// generic callback API, so that the service decides when a request's message is read: a call
// first reserves the largest message's bytes of the memory budget (or is refused
// RESOURCE_EXHAUSTED at once, its message never read), then reads its message, then holds what
// it actually needs (the message, its tensors, its computation and answer) until gRPC is done
// with it. Unread, a call costs no more than the HTTP/2 flow-control window of its stream.
#ifndef ATTNSERVE_SERVER_RPC_UNARY_CALL_H_
#define ATTNSERVE_SERVER_RPC_UNARY_CALL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/models/model_registry.h"
#include "server/requests/memory_budget.h"
#include "server/requests/request_context.h"
#include "server/rpc/attention_service.h"

namespace attnserve {

// One call's protobuf half: its request parsed from the bytes read, its adapter
// (unary_rpcs.h), its response serialized.
class UnaryExchange {
 public:
  virtual ~UnaryExchange() = default;
  // INVALID_ARGUMENT when `bytes` do not parse as the method's request.
  virtual absl::Status Parse(grpc::ByteBuffer& bytes) = 0;
  virtual int64_t request_bytes() const = 0;
  virtual const std::string& requested_model() const = 0;
  virtual absl::StatusOr<WorkDone> Run(const RequestContext& context,
                                       const ModelRegistry& models) = 0;
  // The response into `bytes`; request and response are freed (Run is over).
  virtual absl::Status Serialize(grpc::ByteBuffer* bytes) = 0;
};

// The unary method a call's path names: its name for metrics, whether it joins batches
// (ComputePool) or runs whole on a compute worker, and its exchange. Null for any other path.
struct UnaryMethod {
  absl::string_view rpc;  // "Encode"
  bool batched = true;
  std::unique_ptr<UnaryExchange> (*make_exchange)() = nullptr;
};
const UnaryMethod* FindUnaryMethod(absl::string_view path);

class AttentionServiceImpl::UnaryCall final : public grpc::ServerGenericBidiReactor {
 public:
  // Admits the call and reserves the largest message, then reads it; or finishes at once
  // (unknown method, draining, memory budget full). Deletes itself when gRPC is done.
  UnaryCall(AttentionServiceImpl* service, grpc::GenericCallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnDone() override;

 private:
  // On a request thread: the call's body, then its answer.
  void Run();
  // The call's last act on our side: gRPC then owns it until OnDone.
  void FinishWith(const grpc::Status& status);

  AttentionServiceImpl* const service_;
  grpc::GenericCallbackServerContext* const context_;
  const UnaryMethod* const method_;
  bool admitted_ = false;  // counted in flight (AdmitCall) until it finishes
  MemoryHold memory_;
  std::unique_ptr<UnaryExchange> exchange_;
  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_bytes_;
};

// Creates a UnaryCall for every call gRPC hands to the generic service: the methods the service
// marks generic, and paths nothing serves (answered UNIMPLEMENTED).
class AttentionServiceImpl::UnaryCalls final : public grpc::CallbackGenericService {
 public:
  explicit UnaryCalls(AttentionServiceImpl* service) : service_(service) {}
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    return new UnaryCall(service_, context);
  }

 private:
  AttentionServiceImpl* const service_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_UNARY_CALL_H_
