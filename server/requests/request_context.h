// What the transport-neutral request handlers (server/requests) get from the front end that
// calls them, and what they give back: no gRPC, no protobuf.
#ifndef ATTNSERVE_SERVER_REQUESTS_REQUEST_CONTEXT_H_
#define ATTNSERVE_SERVER_REQUESTS_REQUEST_CONTEXT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "core/attention/multi_head_attention.h"
#include "core/encodings/position_table_cache.h"
#include "server/requests/batch_member.h"
#include "server/requests/service_limits.h"

namespace attnserve {

struct RequestContext {
  const ServiceLimits& limits;
  PositionTableCache& tables;  // sin/cos tables shared by all requests (thread-safe)
  // Polled between attention tiles: the call's cancellation or deadline. Null: never.
  std::function<bool()> is_cancelled = nullptr;
  // Computes a member on a compute worker, batched with others of its key that wait with it
  // (ComputePool). Unset: on the calling thread, alone.
  std::function<absl::Status(BatchMember&)> compute = nullptr;
  // Reserves bytes the request's computation and answer will hold, until the call ends
  // (MemoryBudget); RESOURCE_EXHAUSTED past the server's budget. Unset: nothing is counted.
  std::function<absl::Status(int64_t bytes)> reserve_memory = nullptr;
};

// context.compute(member), or the member alone here when unset.
absl::Status Compute(const RequestContext& context, BatchMember& member);

// `work` alone (LoneWork) through context.compute: on a compute worker, in the pool's turn; here
// when compute is unset.
absl::Status ComputeAlone(const RequestContext& context, absl::FunctionRef<absl::Status()> work);

// context.reserve_memory(bytes), or OK when unset. Handlers call it once the shapes are checked
// and before they allocate anything request-sized, with an estimate from above: the tensors they
// compute and their copy in the answer, the projections of a layer, score matrices held whole.
absl::Status ReserveMemory(const RequestContext& context, int64_t bytes);

// The attention probabilities a call may ask for beside its output (return_attention).
struct AttentionMap {
  std::vector<int64_t> shape;  // [batch, num_heads, q_len, kv_len]
  std::vector<float> values;   // product(shape) values when asked for, else empty
};

// What a request computed, for the front end's metrics.
struct WorkDone {
  int64_t tokens = 0;  // query tokens (Encode: input tokens)
  double flops = 0;    // useful floating-point operations
};

// Useful FLOPs of attention: 4·B·H·Sq·Sk·hd (q·kᵀ and p·v), halved for causal square attention.
double AttentionFlops(int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                      int64_t head_dim, bool causal);

// The layer: q/k/v/o projections (2·tokens·in·out each) plus attention.
double LayerFlops(const AttentionConfig& config, int64_t batch, int64_t q_len, int64_t kv_len,
                  bool causal);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_REQUEST_CONTEXT_H_
