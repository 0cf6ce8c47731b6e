#include "core/encodings/encoding_tables.h"

#include <utility>

namespace attnserve {

std::optional<EncodingTableSpec> EncodingTable(const PositionalEncoding& encoding,
                                               const TableLayerShape& layer) {
  if (std::holds_alternative<LearnedParams>(encoding)) {
    return EncodingTableSpec{"position_embeddings.weight", "max_positions",
                             "[max_positions, d_model]", layer.max_positions, layer.d_model, 0.02f};
  }
  if (const auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    return EncodingTableSpec{"relative_attention_bias.weight", "t5.num_buckets",
                             "[num_buckets, num_heads]", t5->num_buckets, layer.num_heads};
  }
  if (const auto* cope = std::get_if<CopeParams>(&encoding)) {
    return EncodingTableSpec{"cope.pos_emb", "cope.npos_max", "[npos_max, head_dim]",
                             cope->npos_max, layer.head_dim};
  }
  return std::nullopt;
}

void AttachTable(std::shared_ptr<const std::vector<float>> table, PositionalEncoding& encoding) {
  if (auto* learned = std::get_if<LearnedParams>(&encoding)) {
    learned->table = std::move(table);
  } else if (auto* t5 = std::get_if<T5BiasParams>(&encoding)) {
    t5->table = std::move(table);
  } else if (auto* cope = std::get_if<CopeParams>(&encoding)) {
    cope->pos_emb = std::move(table);
  }
}

absl::Status ValidateTableParams(const PositionalEncoding& encoding) {
  if (const auto* t5 = std::get_if<T5BiasParams>(&encoding)) return ValidateT5BiasParams(*t5);
  if (const auto* cope = std::get_if<CopeParams>(&encoding)) return ValidateCopeParams(*cope);
  return absl::OkStatus();
}

}  // namespace attnserve
