#include "server/requests/request_context.h"

namespace attnserve {

absl::Status Compute(const RequestContext& context, BatchMember& member) {
  if (context.compute) return context.compute(member);
  BatchMember* const alone[] = {&member};
  return member.RunBatch(alone).front();
}

absl::Status ComputeAlone(const RequestContext& context, absl::FunctionRef<absl::Status()> work) {
  LoneWork member(work);
  return Compute(context, member);
}

absl::Status ReserveMemory(const RequestContext& context, int64_t bytes) {
  return context.reserve_memory ? context.reserve_memory(bytes) : absl::OkStatus();
}

double AttentionFlops(int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                      int64_t head_dim, bool causal) {
  const double full = 4.0 * batch * heads * q_len * kv_len * head_dim;
  return causal && q_len == kv_len ? full / 2 : full;
}

double LayerFlops(const AttentionConfig& config, int64_t batch, int64_t q_len, int64_t kv_len,
                  bool causal) {
  const double q_width = static_cast<double>(config.num_heads * config.head_dim);
  const double kv_width = static_cast<double>(config.num_kv_heads * config.head_dim);
  const double projections =
      2.0 * batch * config.d_model * (q_len * q_width * 2 + kv_len * kv_width * 2);
  return projections +
         AttentionFlops(batch, config.num_heads, q_len, kv_len, config.head_dim, causal);
}

}  // namespace attnserve
