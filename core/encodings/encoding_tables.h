// The learned tables the positional encodings read, in one place: which encoding needs which
// table, of what shape, under which Hugging Face tensor name. The model repository (weights
// files), the demo models and the request path (tables sent inline) all ask here.
#ifndef ATTNSERVE_CORE_ENCODINGS_ENCODING_TABLES_H_
#define ATTNSERVE_CORE_ENCODINGS_ENCODING_TABLES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "core/encodings/positional_encoding.h"

namespace attnserve {

// The layer dimensions a table's shape follows.
struct TableLayerShape {
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  int64_t max_positions = 0;  // the learned table's rows
};

struct EncodingTableSpec {
  // Its Hugging Face name in a weights file, e.g. "position_embeddings.weight".
  const char* tensor_name;
  // What gives its rows: "max_positions", "t5.num_buckets" or "cope.npos_max".
  const char* rows_field;
  const char* dims;  // the shape in words, e.g. "[num_buckets, num_heads]"
  int64_t rows = 0;
  int64_t cols = 0;
  // The spread its reference models initialise it with, N(0, init_stddev) (GPT-2's wpe 0.02;
  // T5's and CoPE's tables 1): what the built-in demo models draw.
  float init_stddev = 1.0f;
};

// The table `encoding` reads, shaped for `layer`; nullopt for kinds without one (none,
// sinusoidal, RoPE, ALiBi).
std::optional<EncodingTableSpec> EncodingTable(const PositionalEncoding& encoding,
                                               const TableLayerShape& layer);

// Gives `encoding` its table ([rows, cols] row-major as EncodingTable says); no-op for kinds
// without one.
void AttachTable(std::shared_ptr<const std::vector<float>> table, PositionalEncoding& encoding);

// Checks the parameters that shape a table (T5's buckets and distance, CoPE's npos_max), so that
// they can be reported before a table of the shape they give is looked at; the same rules
// ValidateEncoding applies. OK for the other kinds.
absl::Status ValidateTableParams(const PositionalEncoding& encoding);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_ENCODING_TABLES_H_
