// The position-dependent part of the attention scores for the tiled kernel
// (core/attention/flash_attention.cc): ALiBi's and T5's bias, prepared once per call and shared by
// all heads and tiles. Internal to core/attention.
#ifndef ATTNSERVE_CORE_ATTENTION_SCORE_BIAS_H_
#define ATTNSERVE_CORE_ATTENTION_SCORE_BIAS_H_

#include <cstdint>
#include <vector>

#include "core/attention/sdpa_options.h"
#include "core/encodings/t5_bias.h"
#include "core/kernels/alibi_term.h"

namespace attnserve {

class ScoreBias {
 public:
  // Tables for options.encoding (ALiBi or T5; none for other encodings). shape and options must
  // outlive this object.
  ScoreBias(const SdpaShape& shape, const SdpaOptions& options);

  bool active() const { return !slopes_.empty() || t5_ != nullptr; }
  bool alibi() const { return !slopes_.empty(); }

  // ALiBi: the bias of query row i (batch element b, head h) for keys from j0 on.
  AlibiTerm AlibiRow(int64_t b, int64_t h, int64_t i, int64_t j0) const {
    return AlibiTerm{static_cast<float>(slopes_[h]), q_relative_[b * shape_.q_len + i],
                     k_relative_.data() + b * shape_.kv_len + j0, options_.causal};
  }

  // ALiBi: the key j < keys nearest query row i of batch element b (keys >= 1). A binary search
  // where the key positions ascend, as they usually do; a scan otherwise.
  int64_t NearestKey(int64_t b, int64_t i, int64_t keys) const;

  // row[c] ← scale·row[c] + bias of query row i (batch element b, head h) and key j0 + c, for
  // c < n.
  void AddRow(int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, float scale,
              float* row) const;

 private:
  int32_t Bucket(int64_t distance) const;

  const SdpaShape& shape_;
  const SdpaOptions& options_;
  std::vector<double> slopes_;          // ALiBi, per head
  const T5BiasParams* t5_ = nullptr;
  std::vector<float> q_relative_, k_relative_;            // ALiBi: [B·Sq], [B·Sk]
  std::vector<bool> keys_ascend_;                         // per batch element
  std::vector<std::vector<int32_t>> bucket_by_distance_;  // T5: per batch element, or empty
  std::vector<int64_t> min_distance_;                     // T5: per batch element
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_SCORE_BIAS_H_
