// Encode, transport-neutral: a positional encoding applied to embeddings.
#ifndef ATTNSERVE_SERVER_REQUESTS_ENCODE_H_
#define ATTNSERVE_SERVER_REQUESTS_ENCODE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/loaded_model.h"
#include "server/requests/request_context.h"
#include "server/requests/tensors.h"

namespace attnserve {

// The StatusOr fields hold what the front end converted, or why it could not: that error is
// reported in its turn among the checks, so a request with several faults gets the same first
// error from any front door.
struct EncodeCall {
  FloatTensor input;  // [batch, seq, d_model]; encoded in place
  // Its encoding and head split; null: the inline fields below.
  absl::StatusOr<const LoadedModel*> model = nullptr;
  absl::StatusOr<PositionalEncoding> encoding = PositionalEncoding();  // inline (no model)
  int64_t num_heads = 0;  // inline RoPE's head split; 0 = unset (either suffices)
  int64_t head_dim = 0;
  // [batch·seq], each in [0, kMaxPosition].
  absl::StatusOr<std::vector<int64_t>> positions = absl::InternalError("positions not resolved");
  float input_scale = 1.0f;
};

// Checks the call against the limits and the encoding's rules, then encodes call.input in place
// through context.compute (sharing a worker's turn with the other Encode calls on the same model
// that wait with it): additive kinds x·input_scale + P[pos], RoPE per head; score kinds are
// INVALID_ARGUMENT.
absl::StatusOr<WorkDone> RunEncode(const RequestContext& context, EncodeCall& call);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_ENCODE_H_
