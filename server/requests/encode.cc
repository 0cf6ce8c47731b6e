#include "server/requests/encode.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/field_status.h"
#include "core/base/status_macros.h"
#include "server/requests/request_tables.h"

namespace attnserve {
namespace {

// Score kinds have no embedding form: ALiBi and T5 have a fixed bias map (PositionBias); CoPE's
// term depends on q and k, so it exists only inside attention.
absl::Status RejectScoreEncoding(const PositionalEncoding& encoding) {
  if (!IsScoreEncoding(encoding)) return absl::OkStatus();
  const std::string prefix = absl::StrCat("encoding.", EncodingName(encoding),
                                          " is a score bias, not an embedding encoding; ");
  if (std::holds_alternative<CopeParams>(encoding)) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "it depends on q·k, so PositionBias has no fixed map for it either: use Attend "
                "or ScaledDotProductAttention"));
  }
  return absl::InvalidArgumentError(absl::StrCat(prefix, "use PositionBias to see it"));
}

// The model's encoding over d_model-wide embeddings: RoPE needs its heads to split them exactly.
absl::Status UseModelEncoding(const LoadedModel& model, int64_t d_model, EncodeCall& call,
                              PositionalEncoding& encoding) {
  const AttentionConfig& config = model.layer->config();
  const std::string& name = model.config.name();
  if (d_model != config.d_model) {
    return absl::InvalidArgumentError(absl::StrCat("input.shape[2]=", d_model,
                                                   " must equal d_model=", config.d_model,
                                                   " of model=\"", name, "\""));
  }
  encoding = config.encoding;
  call.num_heads = config.num_heads;
  call.head_dim = config.head_dim;
  if (std::holds_alternative<RopeParams>(encoding) &&
      (d_model % call.num_heads != 0 || d_model / call.num_heads != call.head_dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model=\"", name, "\" has num_heads=", call.num_heads, " and head_dim=", call.head_dim,
        ", which do not split d_model=", d_model,
        ": Encode cannot apply its RoPE to d_model-wide embeddings"));
  }
  return RejectScoreEncoding(encoding);
}

// An inline RoPE rotates per head: the channels split as [num_heads, head_dim], from either
// (both >= 0 here, not both 0).
absl::Status SplitInlineRopeHeads(int64_t d_model, EncodeCall& call) {
  if (call.num_heads == 0 && call.head_dim == 0) {
    return absl::InvalidArgumentError("encoding.rope needs num_heads or head_dim");
  }
  if (call.num_heads > 0) {
    if (d_model % call.num_heads != 0 ||
        (call.head_dim > 0 && d_model / call.num_heads != call.head_dim)) {
      return absl::InvalidArgumentError(absl::StrCat("num_heads=", call.num_heads,
                                                     " and head_dim=", call.head_dim,
                                                     " must split d_model=", d_model));
    }
    call.head_dim = d_model / call.num_heads;
  } else if (d_model % call.head_dim != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim=", call.head_dim, " must divide d_model=", d_model));
  }
  call.num_heads = d_model / call.head_dim;
  return absl::OkStatus();
}

// The inline encoding: an embedding kind (no table: a learned one comes only with a model), with
// the head split RoPE needs.
absl::Status UseInlineEncoding(int64_t d_model, EncodeCall& call, PositionalEncoding& encoding) {
  ASSIGN_OR_RETURN(encoding, std::move(call.encoding));
  RETURN_IF_ERROR(RejectScoreEncoding(encoding));
  RETURN_IF_ERROR(AttachRequestTable(RequestTable{}, TableLayerShape{}, encoding));
  if (std::holds_alternative<RopeParams>(encoding)) return SplitInlineRopeHeads(d_model, call);
  return absl::OkStatus();
}

// One checked call. Calls on the same model (or all inline ones) share a worker's turn and are
// computed there one after another: the encodings are elementwise and bound by memory, so
// packing their rows would save nothing but what the shared turn already saves, the hand-offs.
class EncodeMember final : public BatchMember {
 public:
  EncodeMember(const LoadedModel* model, PositionalEncoding encoding, EncodeCall& call,
               const int64_t* positions, PositionTableCache& tables)
      : BatchMember("Encode", model != nullptr ? model->config.name() : "inline",
                    absl::StrCat("Encode/", reinterpret_cast<uintptr_t>(model)),
                    call.input.shape[0] * call.input.shape[1]),
        encoding_(std::move(encoding)),
        call_(call),
        positions_(positions),
        tables_(tables) {}

  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) override {
    std::vector<absl::Status> statuses;
    for (BatchMember* member : batch) statuses.push_back(static_cast<EncodeMember*>(member)->Run());
    return statuses;
  }

 private:
  // The embeddings encoded in place.
  absl::Status Run() {
    float* values = call_.input.values.data();
    return EncodeEmbeddings(encoding_, values, positions_, tokens(), call_.num_heads,
                            call_.head_dim, call_.input_scale, 0, values, &tables_);
  }

  const PositionalEncoding encoding_;
  EncodeCall& call_;
  const int64_t* const positions_;
  PositionTableCache& tables_;
};

}  // namespace

absl::StatusOr<WorkDone> RunEncode(const RequestContext& context, EncodeCall& call) {
  const int64_t batch = call.input.shape[0], seq = call.input.shape[1];
  const int64_t d_model = call.input.shape[2];
  RETURN_IF_ERROR(
      CheckLimits(context.limits, batch, 1, seq, 1, /*scores_held=*/false, "input.shape[1]"));
  using NamedValue = std::pair<const char*, int64_t>;
  for (const auto& [name, value] :
       {NamedValue{"num_heads", call.num_heads}, NamedValue{"head_dim", call.head_dim}}) {
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, "=", value, " must be >= 0 (0: unset)"));
    }
  }
  ASSIGN_OR_RETURN(const LoadedModel* model, call.model);
  PositionalEncoding encoding;
  RETURN_IF_ERROR(model != nullptr ? UseModelEncoding(*model, d_model, call, encoding)
                                   : UseInlineEncoding(d_model, call, encoding));
  if (!std::holds_alternative<RopeParams>(encoding)) {
    call.num_heads = 1;  // additive kinds treat the channels as one row
    call.head_dim = d_model;
  }
  ASSIGN_OR_RETURN(const std::vector<int64_t> positions, std::move(call.positions));
  RETURN_IF_ERROR(WithFieldPrefix(
      ValidateEncoding(encoding, d_model, call.num_heads, call.head_dim), "encoding"));
  // The input is encoded in place; its copy in the answer.
  RETURN_IF_ERROR(ReserveMemory(context, batch * seq * d_model * int64_t{sizeof(float)}));
  EncodeMember member(model, std::move(encoding), call, positions.data(), context.tables);
  RETURN_IF_ERROR(Compute(context, member));
  return WorkDone{batch * seq, 0};
}

}  // namespace attnserve
