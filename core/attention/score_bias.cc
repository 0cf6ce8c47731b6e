#include "core/attention/score_bias.h"

#include <algorithm>
#include <cmath>
#include <variant>

#include "core/encodings/alibi.h"
#include "core/kernels/softmax_kernels.h"

namespace attnserve {

ScoreBias::ScoreBias(const SdpaShape& shape, const SdpaOptions& options)
    : shape_(shape), options_(options) {
  if (const auto* alibi = std::get_if<AlibiParams>(&options.encoding)) {
    slopes_ = AlibiSlopes(*alibi, shape.num_heads);
  }
  t5_ = std::get_if<T5BiasParams>(&options.encoding);
  if (slopes_.empty() && t5_ == nullptr) return;
  const int64_t Sq = shape.q_len, Sk = shape.kv_len;
  q_relative_.resize(shape.batch * Sq);
  k_relative_.resize(shape.batch * Sk);
  bucket_by_distance_.resize(shape.batch);
  keys_ascend_.resize(shape.batch);
  min_distance_.resize(shape.batch);
  for (int64_t b = 0; b < shape.batch; ++b) {
    // Positions are in [0, kMaxPosition] (ValidateSdpa), so these differences cannot overflow.
    const int64_t* q = options.q_positions.data() + b * Sq;
    const int64_t* k = options.k_positions.data() + b * Sk;
    const auto [q_min, q_max] = std::minmax_element(q, q + Sq);
    const auto [k_min, k_max] = std::minmax_element(k, k + Sk);
    for (int64_t i = 0; i < Sq; ++i) q_relative_[b * Sq + i] = static_cast<float>(q[i] - *k_min);
    for (int64_t j = 0; j < Sk; ++j) k_relative_[b * Sk + j] = static_cast<float>(k[j] - *k_min);
    keys_ascend_[b] = std::is_sorted(k, k + Sk);
    // T5 buckets need a logarithm: tabulate them per key–query distance when the distances
    // span no more than the request's own size (contiguous positions span Sq + Sk − 1).
    min_distance_[b] = *k_min - *q_max;
    const int64_t range = *k_max - *q_min - min_distance_[b] + 1;
    if (t5_ != nullptr && range <= 2 * (Sq + Sk)) {
      bucket_by_distance_[b].resize(range);
      for (int64_t d = 0; d < range; ++d) bucket_by_distance_[b][d] = Bucket(min_distance_[b] + d);
    }
  }
}

int64_t ScoreBias::NearestKey(int64_t b, int64_t i, int64_t keys) const {
  const float q = q_relative_[b * shape_.q_len + i];
  const float* k = k_relative_.data() + b * shape_.kv_len;
  if (!keys_ascend_[b]) {
    return std::min_element(k, k + keys, [q](float x, float y) {
             return std::fabs(q - x) < std::fabs(q - y);
           }) - k;
  }
  const int64_t above = std::lower_bound(k, k + keys, q) - k;  // first key at or after q
  if (above == 0) return 0;
  if (above == keys) return keys - 1;
  return q - k[above - 1] <= k[above] - q ? above - 1 : above;
}

void ScoreBias::AddRow(int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, float scale,
                       float* row) const {
  const int64_t Sq = shape_.q_len, Sk = shape_.kv_len;
  if (alibi()) {
    AddAlibiRow(row, n, scale, AlibiRow(b, h, i, j0));
    return;
  }
  if (scale != 1.0f) ScaleRow(row, n, scale);
  const std::vector<float>& table = *t5_->table;
  const int64_t H = shape_.num_heads;
  const int64_t q = options_.q_positions[b * Sq + i];
  const int64_t* k = options_.k_positions.data() + b * Sk + j0;
  const std::vector<int32_t>& buckets = bucket_by_distance_[b];
  if (buckets.empty()) {
    for (int64_t c = 0; c < n; ++c) row[c] += table[Bucket(k[c] - q) * H + h];
    return;
  }
  const int64_t offset = -min_distance_[b] - q;
  for (int64_t c = 0; c < n; ++c) row[c] += table[buckets[k[c] + offset] * H + h];
}

int32_t ScoreBias::Bucket(int64_t distance) const {
  return static_cast<int32_t>(
      T5RelativeBucket(distance, t5_->bidirectional, t5_->num_buckets, t5_->max_distance));
}

}  // namespace attnserve
