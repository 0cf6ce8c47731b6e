#include "server/encoding_proto.h"

#include "absl/strings/str_cat.h"

namespace attnserve {

absl::StatusOr<PositionalEncoding> EncodingFromProto(const v1::PositionalEncoding& proto,
                                                     absl::string_view field) {
  switch (proto.kind_case()) {
    case v1::PositionalEncoding::kNone:
      return NoPositionalEncoding{};
    case v1::PositionalEncoding::kSinusoidal: {
      const v1::SinusoidalEncoding& s = proto.sinusoidal();
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
      if (s.base() != 0) params.base = s.base();
      if (s.min_timescale() != 0) params.min_timescale = s.min_timescale();
      if (s.max_timescale() != 0) params.max_timescale = s.max_timescale();
      if (s.has_padding_idx()) params.padding_idx = s.padding_idx();
      return params;
    }
    case v1::PositionalEncoding::kLearned:
    case v1::PositionalEncoding::kRope:
    case v1::PositionalEncoding::kAlibi:
    case v1::PositionalEncoding::kT5:
    case v1::PositionalEncoding::kCope: {
      const char* kind = proto.GetDescriptor()->FindFieldByNumber(proto.kind_case())->name().c_str();
      return absl::UnimplementedError(absl::StrCat(
          field, ".", kind, " is not implemented in this build yet; available: none, sinusoidal"));
    }
    case v1::PositionalEncoding::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, " is not set: choose one of none, sinusoidal, learned, rope, alibi, t5, cope"));
}

}  // namespace attnserve
