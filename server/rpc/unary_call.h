// The unary computing RPCs (Encode, Attend, ScaledDotProductAttention, PositionBias, and the KServe
// v2 door's ModelInfer) on gRPC's generic callback API, so that the service decides when a
// request's message is read: a call first reserves what reading the largest message holds (twice --max_message_bytes: its bytes
// and the parsed message) of the memory budget, then reads its message, then holds what it
// actually needs (the message, its tensors, its computation and answer) until gRPC is done with
// it. A call that finds no room waits, unread, behind those waiting before it, until memory
// returns (or it is cancelled, or its deadline passes); past --compute_queue_depth waiting calls
// it is refused RESOURCE_EXHAUSTED at once. Unread, a call costs no more than the HTTP/2
// flow-control window of its stream.
#ifndef ATTNSERVE_SERVER_RPC_UNARY_CALL_H_
#define ATTNSERVE_SERVER_RPC_UNARY_CALL_H_

#include <deque>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/models/model_registry.h"
#include "server/requests/memory_budget.h"
#include "server/requests/request_context.h"
#include "server/rpc/attention_service.h"
#include "server/rpc/tsan_hand_off.h"

namespace attnserve {

// One call's protobuf half: its request parsed from the bytes read, its adapter
// (unary_rpcs.h), its response serialized.
class UnaryExchange {
 public:
  virtual ~UnaryExchange() = default;
  // INVALID_ARGUMENT when `bytes` do not parse as the method's request.
  virtual absl::Status Parse(grpc::ByteBuffer& bytes) = 0;
  // What the parsed request and its converted tensors hold, from above: the message in memory
  // (repeated fields take up to 8 bytes per element of the wire's one) and its tensors widened
  // to float32 (twice a bfloat16 tensor's bytes).
  virtual int64_t held_bytes() const = 0;
  virtual const std::string& requested_model() const = 0;
  virtual absl::StatusOr<WorkDone> Run(const RequestContext& context,
                                       const ModelRegistry& models) = 0;
  // The response into `bytes`; request and response are freed (Run is over).
  virtual absl::Status Serialize(grpc::ByteBuffer* bytes) = 0;
};

// The unary method a call's path names: its name for metrics, whether it joins batches
// (ComputePool) or runs whole on a compute worker, and its exchange. Null for any other path.
struct UnaryMethod {
  absl::string_view path;  // "/attnserve.v1.AttentionService/Encode"
  absl::string_view rpc;   // "Encode"
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
  void OnCancel() override;
  void OnDone() override;

 private:
  friend class UnaryCalls;
  // Reserves what reading the largest message holds; false when it does not fit now.
  bool ReserveRead();
  // Hands the read of the message to gRPC (the reservation made); from now on the read timeout
  // runs (ClientWaits).
  void StartReading();
  // The message did not arrive within --request_read_timeout_seconds (from the reaper's thread).
  void EndSlowRead();
  // On a request thread: the call's body, then its answer.
  void Run();
  // The call's last act on our side: gRPC then owns it until OnDone.
  void FinishWith(const grpc::Status& status);

  AttentionServiceImpl* const service_;
  grpc::GenericCallbackServerContext* const context_;
  const UnaryMethod* const method_;
  bool admitted_ = false;  // counted in flight (AdmitCall) until it finishes
  bool waiting_ = false;   // in UnaryCalls' queue (guarded by its mutex)
  bool timed_ = false;     // registered with the read timeout (reading_calls_)
  MemoryHold memory_;
  std::unique_ptr<UnaryExchange> exchange_;
  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_bytes_;
};

// Creates a UnaryCall for every call gRPC hands to the generic service (the methods the service
// marks generic, and paths nothing serves: UNIMPLEMENTED), and keeps the calls waiting for room to
// read their message, oldest first.
class AttentionServiceImpl::UnaryCalls final : public grpc::CallbackGenericService {
 public:
  UnaryCalls(AttentionServiceImpl* service, size_t max_waiting)
      : service_(service), max_waiting_(max_waiting) {
    tsan_hand_off::Release(this);  // the server starts after this, and gRPC's threads call it
  }
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    tsan_hand_off::Acquire(this);
    return new UnaryCall(service_, context);
  }

  // Starts reading `call`'s message when no call waits before it and its reservation fits;
  // otherwise it waits. False (nothing done) when max_waiting calls wait already.
  bool ReadOrWait(UnaryCall* call);
  // Memory returned: starts the reads of the waiting calls that now fit, oldest first.
  void ReadWaiting();
  // A cancelled call leaves the queue: true when it was waiting (the caller finishes it), false
  // when its read has started.
  bool Leave(UnaryCall* call);
  // Draining: every waiting call is finished with `status`.
  void FinishWaiting(const grpc::Status& status);

 private:
  AttentionServiceImpl* const service_;
  const size_t max_waiting_;
  std::mutex mutex_;
  std::deque<UnaryCall*> waiting_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_UNARY_CALL_H_
