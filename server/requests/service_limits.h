// The per-request bounds every front door enforces, checked before anything request-sized is
// allocated.
#ifndef ATTNSERVE_SERVER_REQUESTS_SERVICE_LIMITS_H_
#define ATTNSERVE_SERVER_REQUESTS_SERVICE_LIMITS_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/encodings/positional_encoding.h"

namespace attnserve {

// How requests waiting for a compute worker are merged into batches (ComputePool).
struct BatchLimits {
  int max_requests = 32;        // requests per batch (--max_batch_requests); 1: no batching
  // Σ query tokens per batch (--max_batch_tokens); a lone request may exceed it. 0: no bound.
  int64_t max_tokens = 8192;
  // How long a worker may hold a batch open for more requests, from its first request's arrival
  // (--batch_timeout_micros); 0: never (a batch is what waits when a worker becomes free).
  std::chrono::microseconds timeout{0};
  // Steps of streams (Decode), which run one batch per model at a time: how long a worker may
  // hold the next batch open, from its first step (or the last batch's end, if that step waited
  // through it), while fewer steps wait than the last batch held plus those that waited through
  // it (--decode_step_wait_micros). Streams answered together come back together; waiting for
  // them keeps them in one batch. A lone stream never waits, a stream that leaves costs one
  // wait (the next batch expects one step fewer), and a step arriving longer than that after
  // the end starts afresh. 0: never.
  std::chrono::microseconds step_wait{2000};
};

struct ServiceLimits {
  int64_t max_batch = 64;               // batch dimension of any input
  int64_t max_sequence_length = 8192;   // seq / q_len / kv_len
  // B·H·Sq·Sk of a request that holds its score matrix whole (returned probabilities,
  // PositionBias): 2^26 f32 = 256 MiB. Other calls hold a tile of scores per thread, or CoPE a
  // block of rows (ScoreElementsHeld), and are bounded by max_sequence_length and
  // max_request_flops instead.
  int64_t max_attention_elements = int64_t{1} << 26;
  // Useful FLOPs one request may need, as attnserve_flops_total counts them (AttentionFlops,
  // LayerFlops): 2^44 ≈ 1.8e13, about a minute on two cores, and 64k-token causal attention.
  double max_request_flops = 17592186044416.0;
  // The largest response (--max_message_bytes): a request whose response would not fit is
  // rejected before anything is computed.
  int64_t max_response_bytes = int64_t{64} << 20;
  // Bytes all unary calls' requests, computations and answers may hold together (MemoryBudget,
  // --max_request_memory_bytes); past it RESOURCE_EXHAUSTED at once. The binary sizes it from
  // the container's or machine's memory.
  int64_t max_request_memory_bytes = int64_t{1} << 30;
  // All Decode streams' K/V caches together (--max_kv_cache_bytes); a step that would pass it is
  // RESOURCE_EXHAUSTED.
  int64_t max_kv_cache_bytes = int64_t{1} << 30;
  // Decode streams open at once (--max_decode_streams; past it RESOURCE_EXHAUSTED at once), and
  // how long one may wait for its client's next message before it is ended with
  // DEADLINE_EXCEEDED, its cache freed (--decode_idle_timeout_seconds; 0: never).
  int64_t max_decode_streams = 1024;
  std::chrono::milliseconds decode_idle_timeout{300'000};
  // How long a unary call's message may take to arrive once its read started (it holds the
  // largest message's share of the memory budget meanwhile); past it the call is ended with
  // DEADLINE_EXCEEDED (--request_read_timeout_seconds; 0: never).
  std::chrono::milliseconds request_read_timeout{30'000};
  // Computations running at once (--compute_workers) and waiting for a turn
  // (--compute_queue_depth); past both, RESOURCE_EXHAUSTED at once.
  int compute_workers = 2;
  int compute_queue_depth = 64;
  // Calls (or Decode steps) whose bodies run at once, each on a request thread
  // (--rpc_threads); past it, RESOURCE_EXHAUSTED at once. 0: no cap.
  int rpc_threads = 0;
  BatchLimits batching;
};

// INVALID_ARGUMENT naming the size when a batch or sequence exceeds the limits, or the score
// matrix does where `scores_held` whole (returned probabilities, a position bias); `q_field` and
// `kv_field` name the request fields the lengths come from.
absl::Status CheckLimits(const ServiceLimits& limits, int64_t batch, int64_t heads, int64_t q_len,
                         int64_t kv_len, bool scores_held, absl::string_view q_field = "q_len",
                         absl::string_view kv_field = "kv_len");

// What a CoPE score costs beyond the products, counted against --max_request_flops as FLOPs at the
// GEMM ceiling: its gate (σ in double), its share of the running sum and its interpolated logit
// took 6.7 ns a score on the two-core development machine, whose f32 GEMM runs at ≈300 GFLOP/s
// (demo-cope, 8192 tokens, docs/reliability.md). Without it, CoPE's time, which does not grow
// with head_dim, would be all but free against the limit.
inline constexpr double kCopeFlopsPerScore = 2048;

// kCopeFlopsPerScore for each of the B·H·Sq·Sk scores of a CoPE `encoding` (its row blocks
// compute every key, causal or not); 0 for other encodings.
double CopeWorkFlops(const PositionalEncoding& encoding, int64_t batch, int64_t heads,
                     int64_t q_len, int64_t kv_len);

// INVALID_ARGUMENT stating both when a request's `flops` plus `cope_flops` (CopeWorkFlops)
// exceed max_request_flops.
absl::Status CheckFlops(const ServiceLimits& limits, double flops, double cope_flops = 0);

// INVALID_ARGUMENT naming `field` when a response holding a FLOAT32 `tensor` of `shape` (its
// elements bounded by CheckLimits) plus `other_bytes` of other data exceeds the message limit.
absl::Status CheckResponseSize(const ServiceLimits& limits, absl::string_view field,
                               absl::string_view tensor, const std::vector<int64_t>& shape,
                               int64_t other_bytes);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_SERVICE_LIMITS_H_
