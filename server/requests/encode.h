// Encode, transport-neutral: a positional encoding applied to embeddings.
#ifndef ATTNSERVE_SERVER_REQUESTS_ENCODE_H_
#define ATTNSERVE_SERVER_REQUESTS_ENCODE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"
#include "server/requests/tensors.h"

namespace attnserve {

struct EncodeCall {
  FloatTensor input;                   // [batch, seq, d_model]; encoded in place
  const LoadedModel* model = nullptr;  // its encoding and head split; null: the fields below
  PositionalEncoding encoding;         // the inline encoding (without a model)
  int64_t num_heads = 0;               // inline RoPE's head split; 0 = unset (either suffices)
  int64_t head_dim = 0;
  std::vector<int64_t> positions;      // [batch·seq], each in [0, kMaxPosition]
  float input_scale = 1.0f;
};

// Checks the call against the limits and the encoding's rules, then encodes call.input in place:
// additive kinds x·input_scale + P[pos], RoPE per head; score kinds are INVALID_ARGUMENT.
absl::StatusOr<WorkDone> RunEncode(const RequestContext& context, EncodeCall& call);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_ENCODE_H_
