// CoPE, contextual position encoding (Golovneva et al. 2024, "Contextual Position Encoding:
// Learning to Count What's Important").
#ifndef ATTNSERVE_CORE_ENCODINGS_COPE_H_
#define ATTNSERVE_CORE_ENCODINGS_COPE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace attnserve {

struct CopeParams {
  int64_t npos_max = 0;  // number of position embeddings; >= 1
  // Position embeddings e: [npos_max, head_dim] row-major, shared by all heads of a layer
  // (the transpose of the paper code's pos_emb [1, head_dim, npos_max]).
  std::shared_ptr<const std::vector<float>> pos_emb;
};

// Checks npos_max (not the table). "cope.<name>=…" messages.
absl::Status ValidateCopeParams(const CopeParams& params);

// ValidateCopeParams, then that the table has npos_max·head_dim values.
absl::Status ValidateCope(const CopeParams& params, int64_t head_dim);

// Adds CoPE's position logits to one head's scores in place, as the paper's code does:
//   scores: [q_len, kv_len], already scaled and masked (−inf where masked);
//   q: [q_len, head_dim] (this head's queries).
//   g_ij = σ(scores_ij); p_ij = min(Σ_{t=j..kv_len−1} g_it, npos_max − 1);
//   scores_ij += (1 − w)·(q_i·e[⌊p_ij⌋]) + w·(q_i·e[⌈p_ij⌉]), w = p_ij − ⌊p_ij⌋.
// Masked entries stay −inf.
void AddCopeLogits(const CopeParams& params, const float* q, int64_t q_len, int64_t kv_len,
                   int64_t head_dim, float* scores);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_COPE_H_
