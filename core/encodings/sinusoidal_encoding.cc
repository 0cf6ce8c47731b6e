#include "core/encodings/sinusoidal_encoding.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/encodings/positions.h"

namespace attnserve {
namespace {

// tensor2tensor's angular frequencies ω_k for k in [0, n), n = dim / 2.
std::vector<double> Tensor2TensorFrequencies(double min_timescale, double max_timescale,
                                             int64_t dim) {
  const int64_t n = dim / 2;
  const double increment =
      std::log(max_timescale / min_timescale) / static_cast<double>(std::max<int64_t>(n - 1, 1));
  std::vector<double> omega(n);
  for (int64_t k = 0; k < n; ++k) omega[k] = min_timescale * std::exp(-increment * k);
  return omega;
}

// Writes [sin(p·ω) ‖ cos(p·ω) ‖ 0 if dim is odd].
void Tensor2TensorRow(double min_timescale, double max_timescale, double position, int64_t dim,
                      float* row) {
  const std::vector<double> omega = Tensor2TensorFrequencies(min_timescale, max_timescale, dim);
  const int64_t n = static_cast<int64_t>(omega.size());
  for (int64_t k = 0; k < n; ++k) {
    row[k] = static_cast<float>(std::sin(position * omega[k]));
    row[n + k] = static_cast<float>(std::cos(position * omega[k]));
  }
  if (dim % 2 == 1) row[dim - 1] = 0.0f;
}

bool FiniteAbove(double value, double bound) { return std::isfinite(value) && value > bound; }

// Identifies a table exactly: the variant, the raw bits of its parameters, and the width.
std::string TableKey(const SinusoidalParams& params, int64_t dim) {
  std::string key = absl::StrCat("sinusoidal:", static_cast<int>(params.variant), ":", dim, ":",
                                 params.padding_idx, ":");
  for (double value : {params.base, params.min_timescale, params.max_timescale}) {
    key.append(reinterpret_cast<const char*>(&value), sizeof(value));
  }
  return key;
}

}  // namespace

absl::Status ValidateSinusoidal(const SinusoidalParams& params, int64_t dim) {
  if (dim < 1) return absl::InvalidArgumentError(absl::StrCat("dim=", dim, " must be >= 1"));
  switch (params.variant) {
    case SinusoidalVariant::kVaswani:
    case SinusoidalVariant::kFairseq:
      if (!FiniteAbove(params.base, 1.0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("sinusoidal.base=", params.base, " must be finite and > 1"));
      }
      if (params.variant == SinusoidalVariant::kFairseq &&
          (params.padding_idx < 0 || params.padding_idx > kMaxPosition)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sinusoidal.padding_idx=", params.padding_idx, " must be in [0, ", kMaxPosition, "]"));
      }
      return absl::OkStatus();
    case SinusoidalVariant::kTensor2Tensor:
      if (!FiniteAbove(params.min_timescale, 0.0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sinusoidal.min_timescale=", params.min_timescale, " must be finite and > 0"));
      }
      if (!std::isfinite(params.max_timescale) || params.max_timescale < params.min_timescale) {
        return absl::InvalidArgumentError(
            absl::StrCat("sinusoidal.max_timescale=", params.max_timescale,
                         " must be finite and >= min_timescale=", params.min_timescale));
      }
      // Extreme but finite timescales can still overflow ln(max/min).
      if (!std::isfinite(std::log(params.max_timescale / params.min_timescale))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sinusoidal.max_timescale=", params.max_timescale, " / min_timescale=",
            params.min_timescale, " must be a finite ratio"));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("sinusoidal.variant is not a known variant");
}

void SinusoidalRow(const SinusoidalParams& params, int64_t position, int64_t dim, float* row) {
  switch (params.variant) {
    case SinusoidalVariant::kVaswani: {
      const double log_base = std::log(params.base);
      for (int64_t c = 0; c < dim; ++c) {
        const int64_t k = c / 2;
        const double omega = std::exp(-log_base * (2.0 * k) / static_cast<double>(dim));
        const double angle = static_cast<double>(position) * omega;
        row[c] = static_cast<float>(c % 2 == 0 ? std::sin(angle) : std::cos(angle));
      }
      return;
    }
    case SinusoidalVariant::kTensor2Tensor:
      Tensor2TensorRow(params.min_timescale, params.max_timescale, static_cast<double>(position),
                       dim, row);
      return;
    case SinusoidalVariant::kFairseq:
      // fairseq numbers real tokens from padding_idx + 1; position p >= 0 never lands on the
      // all-zero padding row.
      Tensor2TensorRow(1.0, params.base, static_cast<double>(params.padding_idx + 1 + position),
                       dim, row);
      return;
  }
}

absl::Status AddSinusoidal(const SinusoidalParams& params, const float* x, const int64_t* positions,
                           int64_t tokens, int64_t dim, float input_scale, float* out,
                           PositionTableCache* cache) {
  if (absl::Status status = ValidateSinusoidal(params, dim); !status.ok()) return status;
  if (!std::isfinite(input_scale)) {
    return absl::InvalidArgumentError(absl::StrCat("input_scale=", input_scale, " must be finite"));
  }
  if (absl::Status status = CheckPositions(positions, tokens, "position_ids"); !status.ok()) {
    return status;
  }
  const int64_t max_position = tokens > 0 ? *std::max_element(positions, positions + tokens) : 0;
  std::shared_ptr<const PositionTableCache::Table> table;
  if (cache != nullptr && PositionTableCache::WorthTabulating(max_position + 1, tokens)) {
    table = cache->Get(TableKey(params, dim), max_position + 1, dim,
                       [&](int64_t first, int64_t end, float* rows) {
#pragma omp parallel for schedule(static)
                         for (int64_t p = first; p < end; ++p) {
                           SinusoidalRow(params, p, dim, rows + (p - first) * dim);
                         }
                       });
  }
#pragma omp parallel
  {
    std::vector<float> computed(table == nullptr ? dim : 0);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row;
      if (table != nullptr) {
        row = table->values.data() + positions[t] * dim;
      } else {
        SinusoidalRow(params, positions[t], dim, computed.data());
        row = computed.data();
      }
      const float* x_row = x + t * dim;
      float* out_row = out + t * dim;
      for (int64_t c = 0; c < dim; ++c) out_row[c] = x_row[c] * input_scale + row[c];
    }
  }
  return absl::OkStatus();
}

}  // namespace attnserve
