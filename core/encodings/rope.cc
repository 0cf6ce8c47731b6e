#include "core/encodings/rope.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/encodings/positions.h"
#include "core/kernels/bfloat16.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/cpu_features.h"
#include "core/kernels/target_clones.h"

namespace attnserve {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kLlama3DefaultOriginalMaxPositions = 8192;

bool FiniteAbove(double value, double bound) { return std::isfinite(value) && value > bound; }

// The proto field name of each scaling (used as "rope.<name>.<field>" in messages).
const char* ScalingName(RopeScalingType type) {
  switch (type) {
    case RopeScalingType::kNone:
      return "none";
    case RopeScalingType::kLinear:
      return "linear";
    case RopeScalingType::kDynamicNtk:
      return "dynamic_ntk";
    case RopeScalingType::kYarn:
      return "yarn";
    case RopeScalingType::kLlama3:
      return "llama3";
    case RopeScalingType::kLongRope:
      return "longrope";
  }
  return "unknown";
}

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

// One head's rotated dims, half-split: pair k is (lo[k], hi[k]) with hi = lo + r/2. Separate
// restrict pointers let the compiler vectorise over k (AVX-512 and AVX2 clones; rope.cc is built
// without FMA contraction, so every clone rounds as the baseline does).
ATTNSERVE_TARGET_CLONES void RotateHalfSplit(float* __restrict lo, float* __restrict hi,
                                             const float* __restrict cos_row,
                                             const float* __restrict sin_row, int64_t half) {
  for (int64_t k = 0; k < half; ++k) {
    const float a = lo[k], b = hi[k];
    lo[k] = a * cos_row[k] - b * sin_row[k];
    hi[k] = b * cos_row[k] + a * sin_row[k];
  }
}

// Lanes [0, left) of 16 (all for left >= 16).
inline __mmask16 LeadingLanes(int64_t left) {
  return left >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << left) - 1);
}

// The masked lanes of 16 bf16 values at `bits`, as f32 (exact); the others 0.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512 LoadBfloat16x16(
    const uint16_t* bits, __mmask16 mask) {
  const __m256i loaded = _mm256_maskz_loadu_epi16(mask, bits);
  // The maskz forms: GCC 12 warns of the undefined source the unmasked ones take.
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(mask, _mm512_maskz_cvtepu16_epi32(mask, loaded), 16));
}

// values rounded to bf16 (nearest even), stored to the masked lanes of `to`.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) inline void
StoreBfloat16x16(uint16_t* to, __mmask16 mask, __m512 values) {
  _mm256_mask_storeu_epi16(to, mask, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(values)));
}

// One half-split head from bf16 bits to bf16 bits in one pass: x widened, its first 2·half dims
// rotated as RotateHalfSplit rotates (multiplies and a subtraction or addition, no FMA), every
// dim rounded as ScaleRowIntoBfloat16Avx512 rounds — the same bits as those three steps in turn,
// without the f32 head between them. Needs CpuHasAvx512Bf16().
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void
RotateHalfSplitBfloat16Avx512(const uint16_t* x, int64_t head_dim, int64_t half,
                              const float* cos_row, const float* sin_row, uint16_t* out) {
  for (int64_t k = 0; k < half; k += 16) {
    const __mmask16 mask = LeadingLanes(half - k);
    const __m512 a = LoadBfloat16x16(x + k, mask);
    const __m512 b = LoadBfloat16x16(x + half + k, mask);
    const __m512 c = _mm512_maskz_loadu_ps(mask, cos_row + k);
    const __m512 s = _mm512_maskz_loadu_ps(mask, sin_row + k);
    StoreBfloat16x16(out + k, mask, _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s)));
    StoreBfloat16x16(out + half + k, mask,
                     _mm512_add_ps(_mm512_mul_ps(b, c), _mm512_mul_ps(a, s)));
  }
  for (int64_t k = 2 * half; k < head_dim; k += 16) {  // dims past the rotary ones
    const __mmask16 mask = LeadingLanes(head_dim - k);
    StoreBfloat16x16(out + k, mask, LoadBfloat16x16(x + k, mask));
  }
}

// One head's rotated dims, interleaved: pair k is (head[2k], head[2k+1]).
ATTNSERVE_TARGET_CLONES void RotateInterleaved(float* __restrict head,
                                               const float* __restrict cos_row,
                                               const float* __restrict sin_row, int64_t half) {
  for (int64_t k = 0; k < half; ++k) {
    const float a = head[2 * k], b = head[2 * k + 1];
    head[2 * k] = a * cos_row[k] - b * sin_row[k];
    head[2 * k + 1] = b * cos_row[k] + a * sin_row[k];
  }
}

// Identifies a cos/sin table exactly: the raw bits of the frequencies and attention factor (the
// layout only changes which dims pair up, not the table).
std::string TableKey(const RopeFrequencies& freqs) {
  std::string key = "rope:";
  key.append(reinterpret_cast<const char*>(&freqs.attention_factor), sizeof(double));
  key.append(reinterpret_cast<const char*>(freqs.inv_freq.data()),
             freqs.inv_freq.size() * sizeof(double));
  return key;
}

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

absl::Status ValidateScaling(const RopeScaling& scaling, int64_t r) {
  const char* name = ScalingName(scaling.type);
  switch (scaling.type) {
    case RopeScalingType::kNone:
      return absl::OkStatus();
    case RopeScalingType::kLinear:
      return ValidateFactor(name, scaling.factor);
    case RopeScalingType::kDynamicNtk:
      if (absl::Status s = ValidateFactor(name, scaling.factor); !s.ok()) return s;
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
    case RopeScalingType::kYarn:
      if (absl::Status s = ValidateFactor(name, scaling.factor); !s.ok()) return s;
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
      return ValidateAttentionFactor(name, scaling.attention_factor);
    case RopeScalingType::kLlama3:
      if (absl::Status s = ValidateFactor(name, scaling.factor); !s.ok()) return s;
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
    case RopeScalingType::kLongRope:
      if (absl::Status s = ValidateLongRopeFactors("short_factor", scaling.short_factor, r);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = ValidateLongRopeFactors("long_factor", scaling.long_factor, r);
          !s.ok()) {
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
      return ValidateAttentionFactor(name, scaling.attention_factor);
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

namespace {

// What rotating by a set of positions needs, checked and prepared once: the frequencies, and the
// cos/sin rows, from a cached table or computed per position.
class RopeRows {
 public:
  // Checks params, positions (tokens of them) and seq_len as ApplyRope documents.
  static absl::StatusOr<RopeRows> Prepare(const RopeParams& params, const int64_t* positions,
                                          int64_t tokens, int64_t head_dim, int64_t seq_len,
                                          PositionTableCache* tables) {
    if (absl::Status status = ValidateRope(params, head_dim); !status.ok()) return status;
    if (tokens < 0) return Invalid(absl::StrCat("tokens=", tokens, " must be >= 0"));
    if (seq_len < 0) {
      return Invalid(
          absl::StrCat("seq_len=", seq_len, " must be >= 0 (0 = max(position_ids)+1)"));
    }
    if (absl::Status status = CheckPositions(positions, tokens, "position_ids"); !status.ok()) {
      return status;
    }
    // Positions are at most kMaxPosition, so max_position + 1 cannot overflow.
    const int64_t max_position =
        tokens > 0 ? *std::max_element(positions, positions + tokens) : -1;
    if (seq_len == 0) seq_len = max_position + 1;

    RopeRows rows;
    rows.freqs_ = ComputeRopeFrequencies(params, head_dim, seq_len);
    // Finite but extreme parameters (a factor of 1e-320, an attention factor of 1e300) can still
    // produce inf or NaN frequencies; refuse them rather than return NaN embeddings.
    for (size_t k = 0; k < rows.freqs_.inv_freq.size(); ++k) {
      if (!std::isfinite(rows.freqs_.inv_freq[k])) {
        return Invalid(absl::StrCat("rope parameters give a non-finite frequency: inv_freq[", k,
                                    "]=", rows.freqs_.inv_freq[k]));
      }
    }
    if (!std::isfinite(rows.freqs_.attention_factor) ||
        std::abs(rows.freqs_.attention_factor) > std::numeric_limits<float>::max()) {
      return Invalid(absl::StrCat("rope parameters give attention_factor=",
                                  rows.freqs_.attention_factor, "; it must be finite in float32"));
    }
    rows.half_ = static_cast<int64_t>(rows.freqs_.inv_freq.size());  // r/2
    rows.interleaved_ = params.layout == RopeLayout::kInterleaved;
    if (tables != nullptr && PositionTableCache::WorthTabulating(max_position + 1, tokens)) {
      const RopeRows& filler = rows;
      rows.table_ = tables->Get(TableKey(rows.freqs_), max_position + 1, 2 * rows.half_,
                                [&filler](int64_t first, int64_t end, float* out) {
                                  filler.Fill(first, end, out);
                                });
    }
    return rows;
  }

  // Floats a thread needs for Row without a table.
  int64_t scratch_size() const { return table_ == nullptr ? 2 * half_ : 0; }

  // The row of `position`: [f·cos(p·inv_k) for k < r/2 ‖ f·sin(p·inv_k) for k < r/2]; scratch
  // holds scratch_size() floats.
  const float* Row(int64_t position, float* scratch) const {
    if (table_ != nullptr) return table_->values.data() + position * 2 * half_;
    Fill(position, position + 1, scratch);
    return scratch;
  }

  // Rotates one head of bf16 bits into out by a row from Row, in one pass, and returns true —
  // where the CPU has AVX512-BF16 and the layout is half-split; else returns false (then widen,
  // Rotate and round).
  bool RotateBfloat16(const uint16_t* head, int64_t head_dim, const float* row,
                      uint16_t* out) const {
    if (interleaved_ || !CpuHasAvx512Bf16()) return false;
    RotateHalfSplitBfloat16Avx512(head, head_dim, half_, row, row + half_, out);
    return true;
  }

  // Rotates the first r dims of one head in place by a row from Row.
  void Rotate(float* head, const float* row) const {
    if (interleaved_) {
      RotateInterleaved(head, row, row + half_, half_);
    } else {
      RotateHalfSplit(head, head + half_, row, row + half_, half_);
    }
  }

 private:
  // Rows [first, end) into out, computed in double from the double inv_freq and rounded once to
  // float. HF builds float32 tables from a float32 inv_freq, so its angle error grows with the
  // position; ours stays at float rounding.
  void Fill(int64_t first, int64_t end, float* out) const {
#pragma omp parallel for schedule(static) if (end - first > 1)
    for (int64_t p = first; p < end; ++p) {
      float* row = out + (p - first) * 2 * half_;
      for (int64_t k = 0; k < half_; ++k) {
        const double angle = static_cast<double>(p) * freqs_.inv_freq[k];
        row[k] = static_cast<float>(freqs_.attention_factor * std::cos(angle));
        row[half_ + k] = static_cast<float>(freqs_.attention_factor * std::sin(angle));
      }
    }
  }

  RopeFrequencies freqs_;
  int64_t half_ = 0;
  bool interleaved_ = false;
  std::shared_ptr<const PositionTableCache::Table> table_;
};

void CopyHead(const float* x, int64_t n, float* out) {
  if (out != x) std::memcpy(out, x, n * sizeof(float));
}
ATTNSERVE_TARGET_CLONES void CopyHead(const uint16_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Bfloat16ToFloat(x[i]);
}

// x: T (float or bf16 bits) → out: Out (float, or bf16 bits rounded as ScaleRowIntoBfloat16).
template <typename T, typename Out>
absl::Status RotateHeadMajor(const RopeParams& params, const T* x, int64_t batch, int64_t heads,
                             int64_t seq, int64_t head_dim, const int64_t* positions,
                             int64_t seq_len, PositionTableCache* tables, Out* out) {
  if (batch < 1 || heads < 1 || seq < 0) {
    return Invalid(absl::StrCat("batch=", batch, ", heads=", heads, ", seq=", seq,
                                " must be >= 1, >= 1, >= 0"));
  }
  absl::StatusOr<RopeRows> rows =
      RopeRows::Prepare(params, positions, batch * seq, head_dim, seq_len, tables);
  if (!rows.ok()) return rows.status();
  constexpr bool kBfloat16Out = std::is_same_v<Out, uint16_t>;
#pragma omp parallel
  {
    // The row's cos/sin (without a table) and, for bf16 output, the head rotated in f32.
    std::vector<float> scratch(rows->scratch_size() + (kBfloat16Out ? head_dim : 0));
    float* const rotated_head = scratch.data() + rows->scratch_size();
#pragma omp for schedule(static)
    for (int64_t index = 0; index < batch * heads * seq; ++index) {
      const int64_t b = index / (heads * seq), s = index % seq;
      if constexpr (kBfloat16Out && std::is_same_v<T, uint16_t>) {
        if (rows->RotateBfloat16(x + index * head_dim, head_dim,
                                 rows->Row(positions[b * seq + s], scratch.data()),
                                 out + index * head_dim)) {
          continue;
        }
      }
      float* rotated;
      if constexpr (kBfloat16Out) {
        rotated = rotated_head;
      } else {
        rotated = out + index * head_dim;
      }
      CopyHead(x + index * head_dim, head_dim, rotated);
      rows->Rotate(rotated, rows->Row(positions[b * seq + s], scratch.data()));
      if constexpr (kBfloat16Out) {
        ScaleRowIntoBfloat16(rotated, head_dim, 1.0f, out + index * head_dim);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyRope(const RopeParams& params, float* x, const int64_t* positions,
                       int64_t tokens, int64_t num_heads, int64_t head_dim, int64_t seq_len,
                       PositionTableCache* tables) {
  if (num_heads < 1) return Invalid(absl::StrCat("num_heads=", num_heads, " must be >= 1"));
  absl::StatusOr<RopeRows> rows =
      RopeRows::Prepare(params, positions, tokens, head_dim, seq_len, tables);
  if (!rows.ok()) return rows.status();
  // x: [tokens, num_heads, head_dim]; the rotation of a token is shared by its heads.
#pragma omp parallel
  {
    std::vector<float> scratch(rows->scratch_size());
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row = rows->Row(positions[t], scratch.data());
      for (int64_t h = 0; h < num_heads; ++h) rows->Rotate(x + (t * num_heads + h) * head_dim, row);
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyRopeHeadMajor(const RopeParams& params, const float* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, float* out) {
  return RotateHeadMajor(params, x, batch, heads, seq, head_dim, positions, seq_len, tables, out);
}

absl::Status ApplyRopeHeadMajor(const RopeParams& params, const uint16_t* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, float* out) {
  return RotateHeadMajor(params, x, batch, heads, seq, head_dim, positions, seq_len, tables, out);
}

absl::Status ApplyRopeHeadMajor(const RopeParams& params, const uint16_t* x, int64_t batch,
                                int64_t heads, int64_t seq, int64_t head_dim,
                                const int64_t* positions, int64_t seq_len,
                                PositionTableCache* tables, uint16_t* out) {
  return RotateHeadMajor(params, x, batch, heads, seq, head_dim, positions, seq_len, tables, out);
}

}  // namespace attnserve
