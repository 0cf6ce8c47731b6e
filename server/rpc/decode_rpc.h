// attnserve.v1 Decode: a bidirectional stream served by one DecodeSession, each message a step.
#ifndef ATTNSERVE_SERVER_RPC_DECODE_RPC_H_
#define ATTNSERVE_SERVER_RPC_DECODE_RPC_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "attnserve/v1/attention_service.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/decode_session.h"
#include "server/requests/request_context.h"

namespace attnserve {

// What the service shell lends a stream; `model` is the stream's model name.
struct DecodeStreamServices {
  KvCacheBudget& budget;
  // Records a computed step's work.
  std::function<void(const std::string& model, const WorkDone&)> record_step;
};

// One Decode stream's messages, in order. The first names the model (of `models`, the snapshot
// the stream took as it started) and opens the stream's session; each message's tokens continue
// the sequence. The session's cache is freed when this goes, however the stream ended.
class DecodeStreamHandler {
 public:
  // `models` and `services` must outlive the handler.
  DecodeStreamHandler(const ModelRegistry& models, const DecodeStreamServices& services)
      : models_(models), services_(services) {}

  // One message: decoded, computed through context.compute (continuous batching with the other
  // streams' steps, DecodeSession::Step), answered in *response. The step's transient share of
  // the budget is in *transient, to keep until the response is written.
  absl::Status Step(const RequestContext& context, const v1::DecodeRequest& request,
                    v1::DecodeResponse* response, BudgetHold* transient);

  // Ends the session: its cache and its share of the budget go. The front end calls it before
  // it sends the stream's status, so a client that has the status can count on them.
  void End() { session_.reset(); }

 private:
  const ModelRegistry& models_;
  const DecodeStreamServices& services_;
  std::optional<DecodeSession> session_;  // from the first message on
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_DECODE_RPC_H_
