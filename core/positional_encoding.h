// The positional encodings a request or a model can select, as plain parameter structs in one
// variant, and the dispatch over them.
#ifndef ATTNSERVE_CORE_POSITIONAL_ENCODING_H_
#define ATTNSERVE_CORE_POSITIONAL_ENCODING_H_

#include <cstdint>
#include <variant>

#include "absl/status/status.h"
#include "core/sinusoidal_encoding.h"

namespace attnserve {

// NoPE: inputs pass through unchanged.
struct NoPositionalEncoding {};

using PositionalEncoding = std::variant<NoPositionalEncoding, SinusoidalParams>;

// Checks the encoding's parameters for embeddings of width `dim`.
absl::Status ValidateEncoding(const PositionalEncoding& encoding, int64_t dim);

// out[t] = x[t]·input_scale + P[positions[t]] for an additive encoding (identity table for NoPE).
//   x, out: [tokens, dim] row-major, may alias; positions: [tokens], each >= 0.
absl::Status ApplyAdditiveEncoding(const PositionalEncoding& encoding, const float* x,
                                   const int64_t* positions, int64_t tokens, int64_t dim,
                                   float input_scale, float* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_POSITIONAL_ENCODING_H_
