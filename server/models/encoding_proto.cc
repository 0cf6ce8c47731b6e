#include "server/models/encoding_proto.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace attnserve {
namespace {

// proto3 scalars read 0 when unset: the documented default applies then.
double OrDefault(double value, double fallback) { return value != 0 ? value : fallback; }
int64_t OrDefault(int64_t value, int64_t fallback) { return value != 0 ? value : fallback; }

absl::StatusOr<SinusoidalParams> SinusoidalFromProto(const v1::SinusoidalEncoding& s,
                                                     absl::string_view field) {
  SinusoidalParams params;
  switch (s.variant()) {
    case v1::SINUSOIDAL_VARIANT_UNSPECIFIED:
    case v1::VASWANI:
      params.variant = SinusoidalVariant::kVaswani;
      break;
    case v1::TENSOR2TENSOR:
      params.variant = SinusoidalVariant::kTensor2Tensor;
      break;
    case v1::FAIRSEQ:
      params.variant = SinusoidalVariant::kFairseq;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".sinusoidal.variant=", s.variant(), " is not a known SinusoidalVariant"));
  }
  params.base = OrDefault(s.base(), params.base);
  params.min_timescale = OrDefault(s.min_timescale(), params.min_timescale);
  params.max_timescale = OrDefault(s.max_timescale(), params.max_timescale);
  if (s.has_padding_idx()) {
    // fairseq's rows padding_idx + 1 + p must stay in range for every valid position p.
    if (s.padding_idx() < 0 || s.padding_idx() > kMaxPosition) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".sinusoidal.padding_idx=",
                                                     s.padding_idx(), " must be in [0, ",
                                                     kMaxPosition, "]"));
    }
    params.padding_idx = s.padding_idx();
  }
  return params;
}

absl::StatusOr<RopeParams> RopeFromProto(const v1::RotaryEncoding& r, absl::string_view field) {
  RopeParams params;
  params.theta = OrDefault(r.theta(), params.theta);
  params.rotary_dim = r.rotary_dim();
  switch (r.layout()) {
    case v1::ROTARY_LAYOUT_UNSPECIFIED:
    case v1::HALF_SPLIT:
      params.layout = RopeLayout::kHalfSplit;
      break;
    case v1::INTERLEAVED:
      params.layout = RopeLayout::kInterleaved;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".rope.layout=", r.layout(), " is not a known RotaryLayout"));
  }
  RopeScaling& scaling = params.scaling;
  switch (r.scaling_case()) {
    case v1::RotaryEncoding::SCALING_NOT_SET:
      break;
    case v1::RotaryEncoding::kLinear:
      scaling.type = RopeScalingType::kLinear;
      scaling.factor = r.linear().factor();
      break;
    case v1::RotaryEncoding::kDynamicNtk:
      scaling.type = RopeScalingType::kDynamicNtk;
      scaling.factor = r.dynamic_ntk().factor();
      scaling.original_max_positions = r.dynamic_ntk().original_max_positions();
      break;
    case v1::RotaryEncoding::kYarn: {
      const v1::YarnRopeScaling& y = r.yarn();
      scaling.type = RopeScalingType::kYarn;
      scaling.factor = y.factor();
      scaling.original_max_positions = y.original_max_positions();
      scaling.beta_fast = OrDefault(y.beta_fast(), scaling.beta_fast);
      scaling.beta_slow = OrDefault(y.beta_slow(), scaling.beta_slow);
      scaling.mscale = y.mscale();
      scaling.mscale_all_dim = y.mscale_all_dim();
      if (y.has_attention_factor()) scaling.attention_factor = y.attention_factor();
      if (y.has_truncate()) scaling.yarn_truncate = y.truncate();
      break;
    }
    case v1::RotaryEncoding::kLlama3: {
      const v1::Llama3RopeScaling& l = r.llama3();
      scaling.type = RopeScalingType::kLlama3;
      scaling.factor = l.factor();
      scaling.low_freq_factor = OrDefault(l.low_freq_factor(), scaling.low_freq_factor);
      scaling.high_freq_factor = OrDefault(l.high_freq_factor(), scaling.high_freq_factor);
      scaling.original_max_positions = OrDefault(l.original_max_positions(), int64_t{8192});
      break;
    }
    case v1::RotaryEncoding::kLongrope: {
      const v1::LongRopeScaling& l = r.longrope();
      scaling.type = RopeScalingType::kLongRope;
      scaling.short_factor.assign(l.short_factor().begin(), l.short_factor().end());
      scaling.long_factor.assign(l.long_factor().begin(), l.long_factor().end());
      scaling.original_max_positions = l.original_max_positions();
      scaling.max_positions = l.max_positions();
      if (l.has_attention_factor()) scaling.attention_factor = l.attention_factor();
      break;
    }
  }
  return params;
}

}  // namespace

absl::StatusOr<PositionalEncoding> EncodingFromProto(const v1::PositionalEncoding& proto,
                                                     absl::string_view field) {
  switch (proto.kind_case()) {
    case v1::PositionalEncoding::kNone:
      return NoPositionalEncoding{};
    case v1::PositionalEncoding::kSinusoidal:
      return SinusoidalFromProto(proto.sinusoidal(), field);
    case v1::PositionalEncoding::kLearned:
      return LearnedParams{};
    case v1::PositionalEncoding::kRope:
      return RopeFromProto(proto.rope(), field);
    case v1::PositionalEncoding::kAlibi: {
      AlibiParams params;
      params.max_bias = OrDefault(proto.alibi().max_bias(), params.max_bias);
      return params;
    }
    case v1::PositionalEncoding::kT5: {
      T5BiasParams params;
      params.num_buckets = OrDefault(proto.t5().num_buckets(), params.num_buckets);
      params.max_distance = OrDefault(proto.t5().max_distance(), params.max_distance);
      if (proto.t5().has_bidirectional()) params.bidirectional = proto.t5().bidirectional();
      return params;
    }
    case v1::PositionalEncoding::kCope: {
      CopeParams params;
      params.npos_max = proto.cope().npos_max();
      return params;
    }
    case v1::PositionalEncoding::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, " is not set: choose one of none, sinusoidal, learned, rope, alibi, t5, cope"));
}

const std::string& TableNameOverride(const v1::TensorNames& names,
                                     const PositionalEncoding& encoding) {
  if (std::holds_alternative<T5BiasParams>(encoding)) return names.relative_attention_bias();
  if (std::holds_alternative<CopeParams>(encoding)) return names.cope_position_embeddings();
  return names.position_embeddings();
}

}  // namespace attnserve
