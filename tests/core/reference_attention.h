// Plain double-precision attention used as the test oracle: straightforward loops written from
// the definitions, sharing no code with the oneDNN implementation.
#ifndef ATTNSERVE_TESTS_CORE_REFERENCE_ATTENTION_H_
#define ATTNSERVE_TESTS_CORE_REFERENCE_ATTENTION_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

namespace attnserve::testing {

inline std::vector<float> RandomVector(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

// ‖a − b‖ / ‖b‖.
inline double RelativeError(const std::vector<float>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff / norm);
}

// max |a − b| / max |b| (the largest difference against the tensor's scale); infinity when the
// sizes differ.
inline double MaxRelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    norm = std::max(norm, std::fabs(static_cast<double>(b[i])));
  }
  return norm > 0 ? diff / norm : diff;
}

struct ReferenceResult {
  std::vector<double> out;    // [B, H, Sq, hd]
  std::vector<double> probs;  // [B, H, Sq, Sk]
};

// Additive score bias(b, h, i, j) for the reference; empty = none.
using ReferenceBias = std::function<double(int64_t b, int64_t h, int64_t i, int64_t j)>;

// q: [B,H,Sq,hd], k/v: [B,Hkv,Sk,hd] (float or double). Query i of batch b sees key j iff j < key_length[b] and,
// when causal, j <= i + Sk − Sq. Fully masked rows give zero probabilities and output.
template <typename T>
ReferenceResult ReferenceSdpa(const std::vector<T>& q, const std::vector<T>& k,
                              const std::vector<T>& v, int64_t B, int64_t H, int64_t Hkv,
                              int64_t Sq, int64_t Sk, int64_t hd, double scale, bool causal,
                              const std::vector<int64_t>& key_lengths,
                              const ReferenceBias& bias = nullptr) {
  ReferenceResult result;
  result.out.assign(B * H * Sq * hd, 0.0);
  result.probs.assign(B * H * Sq * Sk, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv);
      for (int64_t i = 0; i < Sq; ++i) {
        std::vector<double> scores(Sk, -std::numeric_limits<double>::infinity());
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Sk; ++j) {
          const bool padded = !key_lengths.empty() && j >= key_lengths[b];
          const bool future = causal && j > i + Sk - Sq;
          if (padded || future) continue;
          double dot = 0;
          for (int64_t c = 0; c < hd; ++c) {
            dot += static_cast<double>(q[((b * H + h) * Sq + i) * hd + c]) *
                   k[((b * Hkv + kvh) * Sk + j) * hd + c];
          }
          scores[j] = dot * scale + (bias ? bias(b, h, i, j) : 0.0);
          max_score = std::max(max_score, scores[j]);
        }
        if (max_score == -std::numeric_limits<double>::infinity()) continue;
        double total = 0;
        for (int64_t j = 0; j < Sk; ++j) total += std::exp(scores[j] - max_score);
        for (int64_t j = 0; j < Sk; ++j) {
          const double p = std::exp(scores[j] - max_score) / total;
          result.probs[((b * H + h) * Sq + i) * Sk + j] = p;
          for (int64_t c = 0; c < hd; ++c) {
            result.out[((b * H + h) * Sq + i) * hd + c] += p * v[((b * Hkv + kvh) * Sk + j) * hd + c];
          }
        }
      }
    }
  }
  return result;
}

// y[t, o] = Σ_i x[t, i]·W[o, i] + b[o] (torch.nn.Linear: W [out, in]; b [out] or empty).
template <typename X>
std::vector<double> ReferenceLinear(const std::vector<X>& x, int64_t tokens, int64_t in,
                                    const std::vector<float>& w, const std::vector<float>& b,
                                    int64_t out) {
  std::vector<double> y(tokens * out);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < in; ++i) sum += double{x[t * in + i]} * w[o * in + i];
      y[t * out + o] = sum;
    }
  }
  return y;
}

// [B, S, heads·hd] → [B, heads, S, hd]
inline std::vector<double> SplitHeads(const std::vector<double>& x, int64_t B, int64_t S,
                                      int64_t heads, int64_t hd) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < hd; ++c)
          y[((b * heads + h) * S + s) * hd + c] = x[((b * S + s) * heads + h) * hd + c];
  return y;
}

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_CORE_REFERENCE_ATTENTION_H_
