// attnserve.v1 Decode: a bidirectional stream served by one DecodeSession, each message a step.
#ifndef ATTNSERVE_SERVER_RPC_DECODE_RPC_H_
#define ATTNSERVE_SERVER_RPC_DECODE_RPC_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "attnserve/v1/attention_service.grpc.pb.h"
#include "server/models/model_registry.h"
#include "server/requests/decode_session.h"
#include "server/requests/request_context.h"

namespace attnserve {

using DecodeStream = grpc::ServerReaderWriterInterface<v1::DecodeResponse, v1::DecodeRequest>;

// What the service shell lends a stream; `model` is the stream's model name.
struct DecodeStreamServices {
  KvCacheBudget& budget;
  // Records a computed step's work.
  std::function<void(const std::string& model, const WorkDone&)> record_step;
};

// Each step is computed through context.compute (continuous batching with the other streams'
// steps, DecodeSession::Step). The first message names the model (of `models`, the snapshot the stream took as it started);
// each message's tokens continue the sequence. OK when the client ends the stream, CANCELLED
// when the call is cancelled; the session's cache is freed either way.
absl::Status HandleDecode(const RequestContext& context, const ModelRegistry& models,
                          const DecodeStreamServices& services, DecodeStream* stream);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_DECODE_RPC_H_
