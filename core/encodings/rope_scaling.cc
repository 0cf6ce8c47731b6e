// RoPE's parameters: their checks, and the frequencies each rope_scaling variant gives (as
// Hugging Face modeling_rope_utils computes them, in double).
#include "core/encodings/rope.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attnserve {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kLlama3DefaultOriginalMaxPositions = 8192;

bool FiniteAbove(double value, double bound) { return std::isfinite(value) && value > bound; }

int64_t RotaryDim(const RopeParams& params, int64_t head_dim) {
  return params.rotary_dim == 0 ? head_dim : params.rotary_dim;
}

// inv[k] = 1 / theta^(2k/r) for k in [0, r/2), as HF _compute_default_rope_parameters.
std::vector<double> DefaultInvFreq(double theta, int64_t r) {
  std::vector<double> inv(r / 2);
  for (int64_t k = 0; k < r / 2; ++k) {
    inv[k] = 1.0 / std::pow(theta, static_cast<double>(2 * k) / static_cast<double>(r));
  }
  return inv;
}

// HF get_mscale: the YaRN attention temperature 0.1·m·ln(s) + 1 (1 for s <= 1).
double YarnGetMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double YarnAttentionFactor(const RopeScaling& scaling) {
  if (scaling.attention_factor.has_value()) return *scaling.attention_factor;
  if (scaling.mscale != 0.0 && scaling.mscale_all_dim != 0.0) {
    return YarnGetMscale(scaling.factor, scaling.mscale) /
           YarnGetMscale(scaling.factor, scaling.mscale_all_dim);
  }
  return YarnGetMscale(scaling.factor, 1.0);
}

// HF _compute_yarn_parameters; `yarn_truncate` rounds the correction range outward to whole dims.
std::vector<double> YarnInvFreq(double theta, int64_t r, const RopeScaling& scaling) {
  const double length = static_cast<double>(scaling.original_max_positions);
  // The dimension index at which pair k makes n_rot full rotations over `length` positions.
  const auto correction_dim = [&](double n_rot) {
    return static_cast<double>(r) * std::log(length / (n_rot * 2.0 * kPi)) /
           (2.0 * std::log(theta));
  };
  double low = correction_dim(scaling.beta_fast);
  double high = correction_dim(scaling.beta_slow);
  if (scaling.yarn_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(r - 1));
  if (low == high) high += 0.001;  // HF: prevent the singularity.
  std::vector<double> inv(r / 2);
  for (int64_t k = 0; k < r / 2; ++k) {
    const double pos_freq = std::pow(theta, static_cast<double>(2 * k) / static_cast<double>(r));
    const double extrapolation = 1.0 / pos_freq;
    const double interpolation = 1.0 / (scaling.factor * pos_freq);
    const double ramp = std::clamp((static_cast<double>(k) - low) / (high - low), 0.0, 1.0);
    const double extrapolation_factor = 1.0 - ramp;
    inv[k] = interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv;
}

// HF _compute_llama3_parameters applied to the default frequencies.
void Llama3Adjust(const RopeScaling& scaling, std::vector<double>& inv) {
  const double length =
      static_cast<double>(scaling.original_max_positions == 0 ? kLlama3DefaultOriginalMaxPositions
                                                              : scaling.original_max_positions);
  const double low_freq_wavelen = length / scaling.low_freq_factor;
  const double high_freq_wavelen = length / scaling.high_freq_factor;
  for (double& f : inv) {
    const double wavelen = 2.0 * kPi / f;
    if (wavelen > low_freq_wavelen) {
      f /= scaling.factor;  // Low frequency: interpolate fully.
    } else if (!(wavelen < high_freq_wavelen)) {
      // Medium frequency: blend between interpolated and unchanged.
      const double smooth = (length / wavelen - scaling.low_freq_factor) /
                            (scaling.high_freq_factor - scaling.low_freq_factor);
      f = (1.0 - smooth) * f / scaling.factor + smooth * f;
    }
    // High frequency (wavelen < high_freq_wavelen): unchanged.
  }
}

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status ValidateFactor(const char* name, double factor) {
  if (!FiniteAbove(factor, 0.0)) {
    return Invalid(absl::StrCat("rope.", name, ".factor=", factor, " must be finite and > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateAttentionFactor(const char* name, const std::optional<double>& factor) {
  if (factor.has_value() && !FiniteAbove(*factor, 0.0)) {
    return Invalid(
        absl::StrCat("rope.", name, ".attention_factor=", *factor, " must be finite and > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLongRopeFactors(const char* field, const std::vector<double>& values,
                                     int64_t r) {
  if (static_cast<int64_t>(values.size()) != r / 2) {
    return Invalid(absl::StrCat("rope.longrope.", field, " has ", values.size(),
                                " values; must have rotary_dim/2=", r / 2));
  }
  for (size_t k = 0; k < values.size(); ++k) {
    if (!FiniteAbove(values[k], 0.0)) {
      return Invalid(absl::StrCat("rope.longrope.", field, "[", k, "]=", values[k],
                                  " must be finite and > 0"));
    }
  }
  return absl::OkStatus();
}

// Per scaling type: its fields, as "rope.<type>.<field>=…" messages.
absl::Status ValidateDynamicNtk(const RopeScaling& scaling, int64_t r) {
  if (absl::Status s = ValidateFactor("dynamic_ntk", scaling.factor); !s.ok()) return s;
  if (scaling.original_max_positions < 1) {
    return Invalid(absl::StrCat("rope.dynamic_ntk.original_max_positions=",
                                scaling.original_max_positions, " must be >= 1"));
  }
  if (r == 2) {
    // theta' = theta·(…)^(r/(r−2)) has no value at r = 2.
    return Invalid(
        "rope.rotary_dim=2 must be >= 4 with dynamic_ntk scaling (its exponent "
        "rotary_dim/(rotary_dim-2) is undefined at 2)");
  }
  return absl::OkStatus();
}

absl::Status ValidateYarn(const RopeScaling& scaling) {
  if (absl::Status s = ValidateFactor("yarn", scaling.factor); !s.ok()) return s;
  if (scaling.original_max_positions < 1) {
    return Invalid(absl::StrCat(
        "rope.yarn.original_max_positions=", scaling.original_max_positions, " must be >= 1"));
  }
  if (!FiniteAbove(scaling.beta_slow, 0.0)) {
    return Invalid(
        absl::StrCat("rope.yarn.beta_slow=", scaling.beta_slow, " must be finite and > 0"));
  }
  if (!std::isfinite(scaling.beta_fast) || scaling.beta_fast <= scaling.beta_slow) {
    return Invalid(absl::StrCat("rope.yarn.beta_fast=", scaling.beta_fast,
                                " must be finite and > beta_slow=", scaling.beta_slow));
  }
  if (!std::isfinite(scaling.mscale) || scaling.mscale < 0.0) {
    return Invalid(
        absl::StrCat("rope.yarn.mscale=", scaling.mscale, " must be finite and >= 0"));
  }
  if (!std::isfinite(scaling.mscale_all_dim) || scaling.mscale_all_dim < 0.0) {
    return Invalid(absl::StrCat("rope.yarn.mscale_all_dim=", scaling.mscale_all_dim,
                                " must be finite and >= 0"));
  }
  return ValidateAttentionFactor("yarn", scaling.attention_factor);
}

absl::Status ValidateLlama3(const RopeScaling& scaling) {
  if (absl::Status s = ValidateFactor("llama3", scaling.factor); !s.ok()) return s;
  if (!FiniteAbove(scaling.low_freq_factor, 0.0)) {
    return Invalid(absl::StrCat("rope.llama3.low_freq_factor=", scaling.low_freq_factor,
                                " must be finite and > 0"));
  }
  if (!std::isfinite(scaling.high_freq_factor) ||
      scaling.high_freq_factor <= scaling.low_freq_factor) {
    return Invalid(
        absl::StrCat("rope.llama3.high_freq_factor=", scaling.high_freq_factor,
                     " must be finite and > low_freq_factor=", scaling.low_freq_factor));
  }
  if (scaling.original_max_positions < 0) {
    return Invalid(
        absl::StrCat("rope.llama3.original_max_positions=", scaling.original_max_positions,
                     " must be >= 1 (or 0 for 8192)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLongRope(const RopeScaling& scaling, int64_t r) {
  if (absl::Status s = ValidateLongRopeFactors("short_factor", scaling.short_factor, r);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateLongRopeFactors("long_factor", scaling.long_factor, r); !s.ok()) {
    return s;
  }
  if (scaling.original_max_positions < 1) {
    return Invalid(absl::StrCat("rope.longrope.original_max_positions=",
                                scaling.original_max_positions, " must be >= 1"));
  }
  if (scaling.max_positions < scaling.original_max_positions) {
    return Invalid(
        absl::StrCat("rope.longrope.max_positions=", scaling.max_positions,
                     " must be >= original_max_positions=", scaling.original_max_positions));
  }
  if (!scaling.attention_factor.has_value() && scaling.original_max_positions == 1 &&
      scaling.max_positions > 1) {
    // The derived factor sqrt(1 + ln(s)/ln(original_max_positions)) divides by ln(1) = 0.
    return Invalid(
        "rope.longrope.original_max_positions=1 must be >= 2 when max_positions > 1 and no "
        "attention_factor is given (the derived factor divides by ln(original_max_positions))");
  }
  return ValidateAttentionFactor("longrope", scaling.attention_factor);
}

absl::Status ValidateScaling(const RopeScaling& scaling, int64_t r) {
  switch (scaling.type) {
    case RopeScalingType::kNone:
      return absl::OkStatus();
    case RopeScalingType::kLinear:
      return ValidateFactor("linear", scaling.factor);
    case RopeScalingType::kDynamicNtk:
      return ValidateDynamicNtk(scaling, r);
    case RopeScalingType::kYarn:
      return ValidateYarn(scaling);
    case RopeScalingType::kLlama3:
      return ValidateLlama3(scaling);
    case RopeScalingType::kLongRope:
      return ValidateLongRope(scaling, r);
  }
  return Invalid("rope.scaling.type is not a known scaling type");
}

}  // namespace

absl::Status ValidateRope(const RopeParams& params, int64_t head_dim) {
  if (head_dim < 1) return Invalid(absl::StrCat("head_dim=", head_dim, " must be >= 1"));
  if (!FiniteAbove(params.theta, 1.0)) {
    return Invalid(absl::StrCat("rope.theta=", params.theta, " must be finite and > 1"));
  }
  if (params.rotary_dim < 0) {
    return Invalid(
        absl::StrCat("rope.rotary_dim=", params.rotary_dim, " must be >= 0 (0 = head_dim)"));
  }
  if (params.rotary_dim > head_dim) {
    return Invalid(
        absl::StrCat("rope.rotary_dim=", params.rotary_dim, " must be <= head_dim=", head_dim));
  }
  const int64_t r = RotaryDim(params, head_dim);
  const std::string r_text = params.rotary_dim == 0
                                 ? absl::StrCat("rope.rotary_dim=0 (= head_dim=", r, ")")
                                 : absl::StrCat("rope.rotary_dim=", r);
  if (r % 2 != 0) return Invalid(absl::StrCat(r_text, " must be even"));
  if (params.layout != RopeLayout::kHalfSplit && params.layout != RopeLayout::kInterleaved) {
    return Invalid("rope.layout is not a known layout");
  }
  return ValidateScaling(params.scaling, r);
}

RopeFrequencies ComputeRopeFrequencies(const RopeParams& params, int64_t head_dim,
                                       int64_t seq_len) {
  const int64_t r = RotaryDim(params, head_dim);
  const RopeScaling& scaling = params.scaling;
  RopeFrequencies out;
  switch (scaling.type) {
    case RopeScalingType::kNone:
      out.inv_freq = DefaultInvFreq(params.theta, r);
      break;
    case RopeScalingType::kLinear:
      out.inv_freq = DefaultInvFreq(params.theta, r);
      for (double& f : out.inv_freq) f /= scaling.factor;
      break;
    case RopeScalingType::kDynamicNtk: {
      // HF _compute_dynamic_ntk_parameters: theta grows once the sequence passes L.
      const double length = static_cast<double>(scaling.original_max_positions);
      const double seq = std::max(static_cast<double>(seq_len), length);
      const double rd = static_cast<double>(r);
      const double theta =
          params.theta *
          std::pow(scaling.factor * seq / length - (scaling.factor - 1.0), rd / (rd - 2.0));
      out.inv_freq = DefaultInvFreq(theta, r);
      break;
    }
    case RopeScalingType::kYarn:
      out.inv_freq = YarnInvFreq(params.theta, r, scaling);
      out.attention_factor = YarnAttentionFactor(scaling);
      break;
    case RopeScalingType::kLlama3:
      out.inv_freq = DefaultInvFreq(params.theta, r);
      Llama3Adjust(scaling, out.inv_freq);
      break;
    case RopeScalingType::kLongRope: {
      // HF _compute_longrope_parameters: long factors once the sequence passes L.
      const std::vector<double>& ext =
          seq_len > scaling.original_max_positions ? scaling.long_factor : scaling.short_factor;
      out.inv_freq.resize(r / 2);
      for (int64_t k = 0; k < r / 2; ++k) {
        out.inv_freq[k] =
            1.0 /
            (ext[k] * std::pow(params.theta, static_cast<double>(2 * k) / static_cast<double>(r)));
      }
      if (scaling.attention_factor.has_value()) {
        out.attention_factor = *scaling.attention_factor;
      } else {
        const double s = static_cast<double>(scaling.max_positions) /
                         static_cast<double>(scaling.original_max_positions);
        out.attention_factor =
            s <= 1.0 ? 1.0
                     : std::sqrt(1.0 + std::log(s) / std::log(static_cast<double>(
                                                         scaling.original_max_positions)));
      }
      break;
    }
  }
  return out;
}

}  // namespace attnserve
