// The positional encodings a request or a model can select, as plain parameter structs in one
// variant, and the dispatch over them. Three families:
//   embedding-additive (sinusoidal, learned): x·input_scale + P[pos], applied to embeddings;
//   rotary (RoPE): rotates each head's query and key slice;
//   score (ALiBi, T5, CoPE): added to the attention scores inside attention.
#ifndef ATTNSERVE_CORE_ENCODINGS_POSITIONAL_ENCODING_H_
#define ATTNSERVE_CORE_ENCODINGS_POSITIONAL_ENCODING_H_

#include <cstdint>
#include <memory>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "core/encodings/alibi.h"
#include "core/encodings/cope.h"
#include "core/encodings/position_table_cache.h"
#include "core/encodings/positions.h"
#include "core/encodings/rope.h"
#include "core/encodings/sinusoidal_encoding.h"
#include "core/encodings/t5_bias.h"

namespace attnserve {

// NoPE: inputs pass through unchanged.
struct NoPositionalEncoding {};

// Learned absolute positions (BERT, GPT-2): x + E[p].
struct LearnedParams {
  // E: [rows, dim] row-major (HF position_embeddings.weight).
  std::shared_ptr<const std::vector<float>> table;
};

using PositionalEncoding = std::variant<NoPositionalEncoding, SinusoidalParams, LearnedParams,
                                        RopeParams, AlibiParams, T5BiasParams, CopeParams>;

// The encoding's name as in the proto oneof: none, sinusoidal, learned, rope, alibi, t5, cope.
const char* EncodingName(const PositionalEncoding& encoding);

// True for sinusoidal and learned (and none): encodings added to embeddings.
bool IsAdditive(const PositionalEncoding& encoding);
// True for ALiBi, T5 and CoPE: encodings that only exist as attention-score terms.
bool IsScoreEncoding(const PositionalEncoding& encoding);
// True for ALiBi and T5: score terms that depend on positions only, so they have a bias map
// (ScoreBiasMap). CoPE's depends on q·k.
bool HasFixedBiasMap(const PositionalEncoding& encoding);

// Checks the parameters (and any table) for a layer of width d_model split into num_heads heads
// of head_dim (rotary and score kinds use the head shape; additive kinds use d_model).
// Messages name the parameter, e.g. "rope.rotary_dim=7 must be even".
absl::Status ValidateEncoding(const PositionalEncoding& encoding, int64_t d_model,
                              int64_t num_heads, int64_t head_dim);

// Encodes embeddings as the Encode RPC defines it:
//   additive kinds: out[t] = x[t]·input_scale + P[positions[t]]
//   RoPE: out = rotate(x·input_scale), x seen as [tokens, num_heads, head_dim]
//   score kinds: INVALID_ARGUMENT (they have no embedding form).
// x, out: [tokens, num_heads·head_dim] row-major, may alias; positions: [tokens], each >= 0.
// A learned position >= the table's rows is OUT_OF_RANGE naming the limit. seq_len: as for
// ApplyRope (0 = max position + 1). `tables` (optional) caches sin/cos tables across calls.
absl::Status EncodeEmbeddings(const PositionalEncoding& encoding, const float* x,
                              const int64_t* positions, int64_t tokens, int64_t num_heads,
                              int64_t head_dim, float input_scale, int64_t seq_len, float* out,
                              PositionTableCache* tables = nullptr);

// The fixed score bias of ALiBi or T5: bias [num_heads, q_len, kv_len] for queries at
// q_positions [q_len] and keys at k_positions [kv_len]. INVALID_ARGUMENT for other kinds (CoPE's
// term depends on q and k, so it has no fixed map). Parameters must be valid.
absl::Status ScoreBiasMap(const PositionalEncoding& encoding, int64_t num_heads,
                          const int64_t* q_positions, int64_t q_len, const int64_t* k_positions,
                          int64_t kv_len, bool causal, float* bias);

// The map the PositionBias RPC shows: ScoreBiasMap, and with `causal` every key after its query
// (by position) at −inf, as attention masks it.
absl::Status PositionBiasMap(const PositionalEncoding& encoding, int64_t num_heads,
                             const int64_t* q_positions, int64_t q_len, const int64_t* k_positions,
                             int64_t kv_len, bool causal, float* bias);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_POSITIONAL_ENCODING_H_
