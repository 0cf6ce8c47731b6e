// PositionBias, transport-neutral: the fixed score bias map of ALiBi or T5, for inspection.
#ifndef ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_
#define ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/loaded_model.h"
#include "server/requests/request_context.h"
#include "server/requests/request_tables.h"

namespace attnserve {

// The StatusOr fields hold what the front end converted, or why it could not, reported in its
// turn among the checks (see EncodeCall).
struct PositionBiasCall {
  const LoadedModel* model = nullptr;           // its encoding and heads; null: the fields below
  // The inline encoding (alibi or t5).
  absl::StatusOr<PositionalEncoding> encoding = absl::InternalError("encoding not converted");
  absl::StatusOr<RequestTable> table = RequestTable();  // T5's table, inline
  int64_t num_heads = 0;               // inline: required; with a model: 0 or the model's
  int64_t q_len = 0;
  int64_t kv_len = 0;                  // 0: q_len
  bool causal = false;
};

struct PositionBiasResult {
  std::vector<int64_t> shape;  // [num_heads, q_len, kv_len]
  std::vector<float> bias;     // queries and keys bottom-right aligned; −inf where causal masks
};

// Checks the call (the kind must have a fixed map), then computes the map. Its WorkDone is empty:
// a map is not token work, so the front end records none.
absl::StatusOr<WorkDone> RunPositionBias(const RequestContext& context, PositionBiasCall& call,
                                         PositionBiasResult* result);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_
