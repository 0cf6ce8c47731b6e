// PositionBias, transport-neutral: the fixed score bias map of ALiBi or T5, for inspection.
#ifndef ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_
#define ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/encodings/positional_encoding.h"
#include "server/models/model_registry.h"
#include "server/requests/request_context.h"
#include "server/requests/request_tables.h"

namespace attnserve {

struct PositionBiasCall {
  const LoadedModel* model = nullptr;  // its encoding and heads; null: the fields below
  PositionalEncoding encoding;         // the inline encoding (alibi or t5)
  RequestTable table;                  // T5's table, inline
  int64_t num_heads = 0;               // inline: required; with a model: 0 or the model's
  int64_t q_len = 0;
  int64_t kv_len = 0;                  // 0: q_len
  bool causal = false;
};

struct PositionBiasResult {
  std::vector<int64_t> shape;  // [num_heads, q_len, kv_len]
  std::vector<float> bias;     // queries and keys bottom-right aligned; −inf where causal masks
};

absl::StatusOr<WorkDone> RunPositionBias(const RequestContext& context, PositionBiasCall& call,
                                         PositionBiasResult* result);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_POSITION_BIAS_H_
