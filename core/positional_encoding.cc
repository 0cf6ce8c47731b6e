#include "core/positional_encoding.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace attnserve {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

absl::Status ValidateEncoding(const PositionalEncoding& encoding, int64_t dim) {
  return std::visit(
      Overloaded{[](const NoPositionalEncoding&) { return absl::OkStatus(); },
                 [dim](const SinusoidalParams& params) { return ValidateSinusoidal(params, dim); }},
      encoding);
}

absl::Status ApplyAdditiveEncoding(const PositionalEncoding& encoding, const float* x,
                                   const int64_t* positions, int64_t tokens, int64_t dim,
                                   float input_scale, float* out) {
  return std::visit(
      Overloaded{[&](const NoPositionalEncoding&) {
                   if (!std::isfinite(input_scale)) {
                     return absl::InvalidArgumentError(
                         absl::StrCat("input_scale=", input_scale, " must be finite"));
                   }
                   for (int64_t i = 0; i < tokens * dim; ++i) out[i] = x[i] * input_scale;
                   return absl::OkStatus();
                 },
                 [&](const SinusoidalParams& params) {
                   return AddSinusoidal(params, x, positions, tokens, dim, input_scale, out);
                 }},
      encoding);
}

}  // namespace attnserve
