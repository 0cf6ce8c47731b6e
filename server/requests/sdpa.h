// ScaledDotProductAttention, transport-neutral: the weight-free kernel over a request's q, k, v.
#ifndef ATTNSERVE_SERVER_REQUESTS_SDPA_H_
#define ATTNSERVE_SERVER_REQUESTS_SDPA_H_

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "core/attention/scaled_dot_product_attention.h"
#include "server/requests/request_context.h"
#include "server/requests/request_tables.h"
#include "server/requests/tensors.h"

namespace attnserve {

// q [B, H, Sq, hd]; k, v [B, Hkv, Sk, hd].
template <class T>
struct QkvTensors {
  DenseTensor<T> q, k, v;
};

// The StatusOr fields hold what the front end converted, or why it could not, reported in its
// turn among the checks (see EncodeCall).
struct SdpaCall {
  // f32 values, or bf16 bits kept bf16 all the way (then the output is bf16 too, and there are
  // no probabilities: return_attention needs the f32 form).
  std::variant<QkvTensors<float>, QkvTensors<uint16_t>> qkv;
  // none, rope, alibi, t5 or cope (inline: tables in `table`)
  absl::StatusOr<PositionalEncoding> encoding = PositionalEncoding();
  absl::StatusOr<RequestTable> table = RequestTable();  // T5's or CoPE's table
  bool causal = false;
  std::vector<int64_t> key_lengths;  // [B]; empty: all keys
  std::optional<double> scale;       // unset: 1/sqrt(hd) (1 with T5)
  int64_t position_offset = 0;       // keys at position_offset + j, queries bottom-right aligned
  absl::StatusOr<ComputeType> compute = ComputeType::kFloat32;
  bool return_attention = false;
  int64_t output_bytes = 0;  // the output's size on the wire, for the response limit
};

struct SdpaResult {
  std::vector<int64_t> output_shape;  // q's
  std::variant<std::vector<float>, std::vector<uint16_t>> output;  // as the call's qkv
  AttentionMap attention;
};

// Checks the shapes, the limits (the response included) and the encoding, places the positions,
// then runs the kernel through context.compute: batched with the other calls on tensors of the
// same type and compute type that wait with it (ScaledDotProductAttentionBatch).
absl::StatusOr<WorkDone> RunSdpa(const RequestContext& context, SdpaCall& call,
                                 SdpaResult* result);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_SDPA_H_
