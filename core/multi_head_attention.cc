#include "core/multi_head_attention.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/onednn_ops.h"

namespace attnserve {
namespace {

absl::Status CheckSize(const char* name, const std::vector<float>& tensor, int64_t expected,
                       bool optional) {
  if (optional && tensor.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(tensor.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", tensor.size(), " elements; expected ", expected));
  }
  return absl::OkStatus();
}

const float* DataOrNull(const std::vector<float>& tensor) {
  return tensor.empty() ? nullptr : tensor.data();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MultiHeadAttention>> MultiHeadAttention::Create(
    const AttentionConfig& config, AttentionWeights weights) {
  AttentionConfig resolved = config;
  if (resolved.d_model < 1) {
    return absl::InvalidArgumentError(absl::StrCat("d_model=", resolved.d_model, " must be >= 1"));
  }
  if (resolved.num_heads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads=", resolved.num_heads, " must be >= 1"));
  }
  if (resolved.num_kv_heads == 0) resolved.num_kv_heads = resolved.num_heads;
  if (resolved.num_kv_heads < 1 || resolved.num_heads % resolved.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_heads=", resolved.num_kv_heads,
                                                   " must divide num_heads=", resolved.num_heads));
  }
  if (resolved.head_dim == 0) {
    if (resolved.d_model % resolved.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("num_heads=", resolved.num_heads,
                                                     " must divide d_model=", resolved.d_model,
                                                     " when head_dim is not given"));
    }
    resolved.head_dim = resolved.d_model / resolved.num_heads;
  }
  if (resolved.head_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim=", resolved.head_dim, " must be >= 1"));
  }
  if (absl::Status status = ValidateEncoding(resolved.encoding, resolved.d_model,
                                             resolved.num_heads, resolved.head_dim);
      !status.ok()) {
    return status;
  }
  const int64_t d = resolved.d_model;
  const int64_t q_width = resolved.num_heads * resolved.head_dim;
  const int64_t kv_width = resolved.num_kv_heads * resolved.head_dim;
  for (const absl::Status& status :
       {CheckSize("q_proj.weight", weights.q_proj_weight, q_width * d, false),
        CheckSize("k_proj.weight", weights.k_proj_weight, kv_width * d, false),
        CheckSize("v_proj.weight", weights.v_proj_weight, kv_width * d, false),
        CheckSize("o_proj.weight", weights.o_proj_weight, d * q_width, false),
        CheckSize("q_proj.bias", weights.q_proj_bias, q_width, true),
        CheckSize("k_proj.bias", weights.k_proj_bias, kv_width, true),
        CheckSize("v_proj.bias", weights.v_proj_bias, kv_width, true),
        CheckSize("o_proj.bias", weights.o_proj_bias, d, true)}) {
    if (!status.ok()) return status;
  }
  return std::unique_ptr<MultiHeadAttention>(new MultiHeadAttention(resolved, std::move(weights)));
}

absl::Status MultiHeadAttention::Forward(const AttendInputs& inputs, float* out,
                                         float* probs) const {
  const int64_t d = config_.d_model;
  const int64_t h = config_.num_heads;
  const int64_t hkv = config_.num_kv_heads;
  const int64_t hd = config_.head_dim;
  const int64_t b = inputs.batch;
  const int64_t sq = inputs.q_len;
  const int64_t sk = inputs.context != nullptr ? inputs.kv_len : sq;

  SdpaShape shape{b, h, hkv, sq, sk, hd};
  SdpaOptions options;
  options.causal = inputs.causal;
  options.key_lengths = inputs.key_lengths;
  options.scale = config_.scale;
  options.compute = inputs.compute;
  options.is_cancelled = inputs.is_cancelled;
  options.tables = &tables_;
  // x = query + P[positions] for additive encodings, else the query: [B·Sq, d]
  std::vector<float> x(b * sq * d);
  if (IsAdditive(config_.encoding)) {
    if (absl::Status status = EncodeEmbeddings(config_.encoding, inputs.query, inputs.positions,
                                               b * sq, 1, d, 1.0f, 0, x.data());
        !status.ok()) {
      return status;
    }
  } else {
    std::copy(inputs.query, inputs.query + b * sq * d, x.begin());
    options.encoding = config_.encoding;
    options.q_positions.assign(inputs.positions, inputs.positions + b * sq);
    if (inputs.context == nullptr) {
      options.k_positions = options.q_positions;
    } else {
      options.k_positions.resize(b * sk);
      for (int64_t i = 0; i < b * sk; ++i) options.k_positions[i] = i % sk;
    }
  }
  if (absl::Status status = ValidateSdpa(shape, options); !status.ok()) return status;
  const float* kv_source = inputs.context != nullptr ? inputs.context : x.data();

  // Projections [tokens, heads·hd] = [B, S, heads, hd], then to head-major [B, heads, S, hd].
  std::vector<float> projected(std::max(b * sq * h, b * sk * hkv) * hd);
  std::vector<float> q(b * h * sq * hd), k(b * hkv * sk * hd), v(b * hkv * sk * hd);
  struct Projection {
    const float* input;
    int64_t tokens, seq, heads;
    const std::vector<float>& weight;
    const std::vector<float>& bias;
    float* head_major;
  } projections[] = {
      {x.data(), b * sq, sq, h, weights_.q_proj_weight, weights_.q_proj_bias, q.data()},
      {kv_source, b * sk, sk, hkv, weights_.k_proj_weight, weights_.k_proj_bias, k.data()},
      {kv_source, b * sk, sk, hkv, weights_.v_proj_weight, weights_.v_proj_bias, v.data()},
  };
  for (const Projection& p : projections) {
    if (absl::Status status = Linear(p.input, p.tokens, d, p.weight.data(), DataOrNull(p.bias),
                                     p.heads * hd, projected.data(), inputs.compute);
        !status.ok()) {
      return status;
    }
    if (absl::Status status = SwapMiddleAxes(projected.data(), b, p.seq, p.heads, hd, p.head_major);
        !status.ok()) {
      return status;
    }
  }

  // attended: [B, H, Sq, hd] → [B, Sq, H, hd] = [B·Sq, H·hd] → out = attended·Woᵀ + bo.
  std::vector<float> attended(b * h * sq * hd);
  if (absl::Status status = ScaledDotProductAttention(shape, options, q.data(), k.data(), v.data(),
                                                      attended.data(), probs);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = SwapMiddleAxes(attended.data(), b, h, sq, hd, projected.data());
      !status.ok()) {
    return status;
  }
  return Linear(projected.data(), b * sq, h * hd, weights_.o_proj_weight.data(),
                DataOrNull(weights_.o_proj_bias), d, out, inputs.compute);
}

}  // namespace attnserve
