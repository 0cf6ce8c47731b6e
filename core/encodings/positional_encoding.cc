#include "core/encodings/positional_encoding.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/kernels/onednn_ops.h"

namespace attnserve {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

absl::Status ValidateLearned(const LearnedParams& params, int64_t dim) {
  if (params.table == nullptr || params.table->empty()) {
    return absl::InvalidArgumentError("learned.table is missing: learned positions need a model's "
                                      "position_embeddings.weight");
  }
  if (params.table->size() % dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat("learned.table has ", params.table->size(),
                                                   " values; not a multiple of d_model=", dim));
  }
  return absl::OkStatus();
}

absl::Status AddLearned(const LearnedParams& params, const float* x, const int64_t* positions,
                        int64_t tokens, int64_t dim, float input_scale, float* out) {
  const int64_t rows = static_cast<int64_t>(params.table->size()) / dim;
  for (int64_t t = 0; t < tokens; ++t) {
    if (positions[t] < 0 || positions[t] >= rows) {
      return absl::OutOfRangeError(absl::StrCat("position ", positions[t], " of token ", t,
                                                " is outside the learned table: positions must "
                                                "be in [0, ",
                                                rows, ")"));
    }
  }
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = params.table->data() + positions[t] * dim;
    for (int64_t c = 0; c < dim; ++c) out[t * dim + c] = x[t * dim + c] * input_scale + row[c];
  }
  return absl::OkStatus();
}

}  // namespace

const char* EncodingName(const PositionalEncoding& encoding) {
  static constexpr const char* kNames[] = {"none", "sinusoidal", "learned", "rope",
                                           "alibi", "t5", "cope"};
  static_assert(std::variant_size_v<PositionalEncoding> == std::size(kNames));
  return kNames[encoding.index()];
}

bool IsAdditive(const PositionalEncoding& encoding) {
  return std::holds_alternative<NoPositionalEncoding>(encoding) ||
         std::holds_alternative<SinusoidalParams>(encoding) ||
         std::holds_alternative<LearnedParams>(encoding);
}

bool HasFixedBiasMap(const PositionalEncoding& encoding) {
  return std::holds_alternative<AlibiParams>(encoding) ||
         std::holds_alternative<T5BiasParams>(encoding);
}

bool IsScoreEncoding(const PositionalEncoding& encoding) {
  return HasFixedBiasMap(encoding) || std::holds_alternative<CopeParams>(encoding);
}

absl::Status ValidateEncoding(const PositionalEncoding& encoding, int64_t d_model,
                              int64_t num_heads, int64_t head_dim) {
  return std::visit(
      Overloaded{
          [](const NoPositionalEncoding&) { return absl::OkStatus(); },
          [&](const SinusoidalParams& p) { return ValidateSinusoidal(p, d_model); },
          [&](const LearnedParams& p) { return ValidateLearned(p, d_model); },
          [&](const RopeParams& p) { return ValidateRope(p, head_dim); },
          [&](const AlibiParams& p) { return ValidateAlibi(p, num_heads); },
          [&](const T5BiasParams& p) { return ValidateT5Bias(p, num_heads); },
          [&](const CopeParams& p) { return ValidateCope(p, head_dim); },
      },
      encoding);
}

absl::Status EncodeEmbeddings(const PositionalEncoding& encoding, const float* x,
                              const int64_t* positions, int64_t tokens, int64_t num_heads,
                              int64_t head_dim, float input_scale, int64_t seq_len, float* out,
                              PositionTableCache* tables) {
  if (!std::isfinite(input_scale)) {
    return absl::InvalidArgumentError(absl::StrCat("input_scale=", input_scale, " must be finite"));
  }
  const int64_t dim = num_heads * head_dim;
  if (absl::Status status = ValidateEncoding(encoding, dim, num_heads, head_dim); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckPositions(positions, tokens, "position_ids"); !status.ok()) {
    return status;
  }
  ApplyComputeThreads();
  auto scale_into_out = [&] {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < tokens * dim; ++i) out[i] = x[i] * input_scale;
  };
  return std::visit(
      Overloaded{
          [&](const NoPositionalEncoding&) {
            scale_into_out();
            return absl::OkStatus();
          },
          [&](const SinusoidalParams& p) {
            return AddSinusoidal(p, x, positions, tokens, dim, input_scale, out, tables);
          },
          [&](const LearnedParams& p) {
            return AddLearned(p, x, positions, tokens, dim, input_scale, out);
          },
          [&](const RopeParams& p) {
            scale_into_out();
            return ApplyRope(p, out, positions, tokens, num_heads, head_dim, seq_len, tables);
          },
          [&](const auto&) {
            return absl::InvalidArgumentError(
                absl::StrCat("encoding.", EncodingName(encoding),
                             " is a score bias, not an embedding encoding; use PositionBias"));
          },
      },
      encoding);
}

absl::Status ScoreBiasMap(const PositionalEncoding& encoding, int64_t num_heads,
                          const int64_t* q_positions, int64_t q_len, const int64_t* k_positions,
                          int64_t kv_len, bool causal, float* bias) {
  if (const auto* alibi = std::get_if<AlibiParams>(&encoding)) {
    AlibiBias(*alibi, num_heads, q_positions, q_len, k_positions, kv_len, causal, bias);
    return absl::OkStatus();
  }
  if (const auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    T5Bias(*t5, num_heads, q_positions, q_len, k_positions, kv_len, bias);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("encoding.", EncodingName(encoding),
                   " has no fixed score bias; position bias maps exist for alibi and t5"));
}

absl::Status PositionBiasMap(const PositionalEncoding& encoding, int64_t num_heads,
                             const int64_t* q_positions, int64_t q_len, const int64_t* k_positions,
                             int64_t kv_len, bool causal, float* bias) {
  if (absl::Status status = ScoreBiasMap(encoding, num_heads, q_positions, q_len, k_positions,
                                         kv_len, causal, bias);
      !status.ok() || !causal) {
    return status;
  }
  for (int64_t h = 0; h < num_heads; ++h) {
    for (int64_t i = 0; i < q_len; ++i) {
      float* row = bias + (h * q_len + i) * kv_len;
      for (int64_t j = 0; j < kv_len; ++j) {
        if (k_positions[j] > q_positions[i]) row[j] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace attnserve
