// One Decode stream on gRPC's callback API: read a message, compute its step on a request thread
// (it blocks for its batch, ComputePool), write the answer, read the next. Between steps the
// stream holds no thread. Admitted like every call (AttentionServiceImpl::AdmitCall), counted in
// flight for its whole life, and one of the ClientWaits: refused past their cap, ended when
// it waits too long for its client. Each hand-over to gRPC (a read, a write, the finish) and back
// (the On… callbacks) is marked for ThreadSanitizer (tsan_hand_off.h).
#ifndef ATTNSERVE_SERVER_RPC_DECODE_REACTOR_H_
#define ATTNSERVE_SERVER_RPC_DECODE_REACTOR_H_

#include <memory>

#include "attnserve/v1/attention_service.grpc.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/decode_session.h"
#include "server/requests/memory_budget.h"
#include "server/requests/request_context.h"
#include "server/rpc/attention_service.h"
#include "server/rpc/decode_rpc.h"

namespace attnserve {

class AttentionServiceImpl::DecodeReactor final
    : public grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse> {
 public:
  // Finishes at once when the call is not admitted; else starts reading. Deletes itself when
  // the call is done.
  DecodeReactor(AttentionServiceImpl* service, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  // Waits for the client's next message.
  void ReadNext();
  // The message read, on a request thread: its answer written, or the stream finished with
  // the step's error.
  void RunStep();
  // Finishes a stream the ClientWaits reaper found idle too long (from the reaper's thread).
  void EndIdle();
  // Ends the session (its cache freed), then finishes the call with `status`.
  void FinishStream(grpc::Status status);

  AttentionServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  bool admitted_ = false;
  // The step's share of the memory budget (its messages), until its answer is written.
  MemoryHold step_memory_;
  // The stream's models, from its start to its end: a reload meanwhile does not change them.
  const std::shared_ptr<const ModelRegistry> models_;
  const DecodeStreamServices services_;
  const CallControl control_;
  RequestContext request_context_;
  DecodeStreamHandler handler_;
  v1::DecodeRequest request_;
  v1::DecodeResponse response_;
  BudgetHold transient_;  // the step's, until its answer is written
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_DECODE_REACTOR_H_
