#include "core/encodings/positions.h"

#include "absl/strings/str_cat.h"

namespace attnserve {

absl::Status CheckPositions(const int64_t* positions, int64_t count, absl::string_view field) {
  for (int64_t t = 0; t < count; ++t) {
    if (positions[t] < 0 || positions[t] > kMaxPosition) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", t, "]=", positions[t],
                                                     " must be in [0, ", kMaxPosition, "]"));
    }
  }
  return absl::OkStatus();
}

void BottomRightPositions(int64_t first_key, int64_t batch, int64_t q_len, int64_t kv_len,
                          std::vector<int64_t>* q_positions, std::vector<int64_t>* k_positions) {
  const int64_t first_query = first_key + kv_len - q_len;
  q_positions->resize(batch * q_len);
  k_positions->resize(batch * kv_len);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < q_len; ++i) (*q_positions)[b * q_len + i] = first_query + i;
    for (int64_t j = 0; j < kv_len; ++j) (*k_positions)[b * kv_len + j] = first_key + j;
  }
}

}  // namespace attnserve
