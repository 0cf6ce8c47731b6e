#include "core/encodings/rope.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/encodings/positions.h"
#include "core/encodings/rope_rotation.h"
#include "core/kernels/bfloat16_rows.h"
#include "core/kernels/cpu_features.h"

namespace attnserve {
namespace {

// Identifies a cos/sin table exactly: the raw bits of the frequencies and attention factor (the
// layout only changes which dims pair up, not the table).
std::string TableKey(const RopeFrequencies& freqs) {
  std::string key = "rope:";
  key.append(reinterpret_cast<const char*>(&freqs.attention_factor), sizeof(double));
  key.append(reinterpret_cast<const char*>(freqs.inv_freq.data()),
             freqs.inv_freq.size() * sizeof(double));
  return key;
}

// What rotating by a set of positions needs, checked and prepared once: the frequencies, and the
// cos/sin rows, from a cached table or computed per position.
class RopeRows {
 public:
  // Checks params, positions (tokens of them) and seq_len as ApplyRope documents.
  static absl::StatusOr<RopeRows> Prepare(const RopeParams& params, const int64_t* positions,
                                          int64_t tokens, int64_t head_dim, int64_t seq_len,
                                          PositionTableCache* tables) {
    if (absl::Status status = ValidateRope(params, head_dim); !status.ok()) return status;
    if (tokens < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokens=", tokens, " must be >= 0"));
    }
    if (seq_len < 0) {
      return absl::InvalidArgumentError(
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
        return absl::InvalidArgumentError(
            absl::StrCat("rope parameters give a non-finite frequency: inv_freq[", k,
                         "]=", rows.freqs_.inv_freq[k]));
      }
    }
    if (!std::isfinite(rows.freqs_.attention_factor) ||
        std::abs(rows.freqs_.attention_factor) > std::numeric_limits<float>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rope parameters give attention_factor=", rows.freqs_.attention_factor,
                       "; it must be finite in float32"));
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

// x: T (float or bf16 bits) → out: Out (float, or bf16 bits rounded as ScaleRowIntoBfloat16).
template <typename T, typename Out>
absl::Status RotateHeadMajor(const RopeParams& params, const T* x, int64_t batch, int64_t heads,
                             int64_t seq, int64_t head_dim, const int64_t* positions,
                             int64_t seq_len, PositionTableCache* tables, Out* out) {
  if (batch < 1 || heads < 1 || seq < 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch=", batch, ", heads=", heads,
                                                   ", seq=", seq, " must be >= 1, >= 1, >= 0"));
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

absl::Status ApplyRope(const RopeParams& params, float* x, const int64_t* positions, int64_t tokens,
                       int64_t num_heads, int64_t head_dim, int64_t seq_len,
                       PositionTableCache* tables) {
  if (num_heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_heads=", num_heads, " must be >= 1"));
  }
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
