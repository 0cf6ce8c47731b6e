#include "server/kserve/infer_tensors.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/kernels/bfloat16.h"
#include "core/kernels/float16.h"

namespace attnserve {
namespace {

static_assert(sizeof(float) == 4, "FP32 is IEEE binary32");

// float ↔ the element bits of a 16-bit floating datatype.
float WidenHalfWidth(absl::string_view datatype, uint16_t bits) {
  return datatype == "BF16" ? Bfloat16ToFloat(bits) : HalfToFloat(bits);
}
uint16_t NarrowToHalfWidth(absl::string_view datatype, float value) {
  return datatype == "BF16" ? FloatToBfloat16(value) : FloatToHalf(value);
}

// INVALID_ARGUMENT "<field>.datatype=<datatype> must be <allowed>" unless it is.
absl::Status CheckDatatype(const InferInput& input, absl::string_view field, bool floating) {
  const bool ok = floating ? IsFloatDatatype(input.datatype)
                           : input.datatype == "INT32" || input.datatype == "INT64";
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ".datatype=\"", input.datatype,
                                                 "\" must be ",
                                                 floating ? "FP32, BF16 or FP16" : "INT32 or INT64"));
}

}  // namespace

absl::string_view ParameterKind(const InferParameter& parameter) {
  static constexpr absl::string_view kKinds[] = {"bool", "int64", "uint64", "double", "string"};
  static_assert(std::variant_size_v<InferParameter> == 5, "a kind name for each alternative");
  return kKinds[parameter.index()];
}

int64_t DatatypeSize(absl::string_view datatype) {
  if (datatype == "FP32" || datatype == "INT32") return 4;
  if (datatype == "BF16" || datatype == "FP16") return 2;
  if (datatype == "INT64") return 8;
  return 0;
}

bool IsFloatDatatype(absl::string_view datatype) {
  return datatype == "FP32" || datatype == "BF16" || datatype == "FP16";
}

absl::StatusOr<int64_t> CheckedElementCount(const InferInput& input, absl::string_view field,
                                            int rank, absl::string_view dims) {
  if (static_cast<int>(input.shape.size()) != rank) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape=", FormatShape(input.shape),
                                                   " has rank ", input.shape.size(),
                                                   "; must be ", dims));
  }
  const int64_t element_size = DatatypeSize(input.datatype);
  if (element_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".datatype=\"", input.datatype,
                                                   "\" is not one this server reads"));
  }
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const int64_t dim = input.shape[i];
    if (dim < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape[", i, "]=", dim, " must be >= 1"));
    }
    if (count > std::numeric_limits<int64_t>::max() / element_size / dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".shape=", FormatShape(input.shape), " has over 2^63 bytes of ", input.datatype));
    }
    count *= dim;
  }
  const std::string described =
      absl::StrCat("shape ", FormatShape(input.shape), " of ", input.datatype);
  if (input.raw.has_value()) {
    const auto bytes = static_cast<int64_t>(input.raw->size());
    if (bytes != count * element_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, " has ", bytes, " bytes of raw data; ",
                                                     described, " needs ", count * element_size));
    }
    return count;
  }
  const auto values =
      static_cast<int64_t>(IsFloatDatatype(input.datatype) ? input.typed_floats.size()
                                                           : input.typed_ints.size());
  if (values != count) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " has ", values, " values; ", described, " needs ", count));
  }
  return count;
}

absl::StatusOr<FloatTensor> DecodeFloatInput(const InferInput& input, absl::string_view field,
                                             int rank, absl::string_view dims) {
  RETURN_IF_ERROR(CheckDatatype(input, field, /*floating=*/true));
  ASSIGN_OR_RETURN(const int64_t count, CheckedElementCount(input, field, rank, dims));
  FloatTensor decoded;
  decoded.shape = input.shape;
  decoded.values.resize(count);
  const bool full_width = input.datatype == "FP32";
  if (!input.raw.has_value()) {
    for (int64_t i = 0; i < count; ++i) {
      const float value = input.typed_floats[i];
      decoded.values[i] = full_width ? value
                                     : WidenHalfWidth(input.datatype,
                                                      NarrowToHalfWidth(input.datatype, value));
    }
  } else if (full_width) {
    std::memcpy(decoded.values.data(), input.raw->data(), count * sizeof(float));
  } else {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, input.raw->data() + 2 * i, sizeof(bits));
      decoded.values[i] = WidenHalfWidth(input.datatype, bits);
    }
  }
  return decoded;
}

absl::StatusOr<Bfloat16Tensor> DecodeBfloat16Input(const InferInput& input,
                                                   absl::string_view field, int rank,
                                                   absl::string_view dims) {
  if (input.datatype != "BF16") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".datatype=\"", input.datatype, "\" must be BF16"));
  }
  ASSIGN_OR_RETURN(const int64_t count, CheckedElementCount(input, field, rank, dims));
  Bfloat16Tensor decoded;
  decoded.shape = input.shape;
  decoded.values.resize(count);
  if (input.raw.has_value()) {
    std::memcpy(decoded.values.data(), input.raw->data(), count * sizeof(uint16_t));
  } else {
    for (int64_t i = 0; i < count; ++i) decoded.values[i] = FloatToBfloat16(input.typed_floats[i]);
  }
  return decoded;
}

absl::StatusOr<DenseTensor<int64_t>> DecodeIntInput(const InferInput& input,
                                                    absl::string_view field, int rank,
                                                    absl::string_view dims) {
  RETURN_IF_ERROR(CheckDatatype(input, field, /*floating=*/false));
  ASSIGN_OR_RETURN(const int64_t count, CheckedElementCount(input, field, rank, dims));
  DenseTensor<int64_t> decoded;
  decoded.shape = input.shape;
  if (!input.raw.has_value()) {
    decoded.values = input.typed_ints;
    return decoded;
  }
  decoded.values.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    if (input.datatype == "INT32") {
      int32_t value;
      std::memcpy(&value, input.raw->data() + 4 * i, sizeof(value));
      decoded.values[i] = value;
    } else {
      std::memcpy(&decoded.values[i], input.raw->data() + 8 * i, sizeof(int64_t));
    }
  }
  return decoded;
}

InferOutput EncodeFloatOutput(std::string name, std::vector<int64_t> shape, const float* values,
                              absl::string_view datatype) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  InferOutput output{std::move(name), std::string(datatype), std::move(shape), {}};
  if (datatype == "FP32") {
    output.raw.assign(reinterpret_cast<const char*>(values), count * sizeof(float));
    return output;
  }
  output.raw.resize(count * 2);
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t bits = NarrowToHalfWidth(datatype, values[i]);
    std::memcpy(output.raw.data() + 2 * i, &bits, sizeof(bits));
  }
  return output;
}

InferOutput EncodeBfloat16Output(std::string name, std::vector<int64_t> shape,
                                 const uint16_t* bits) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return InferOutput{std::move(name), "BF16", std::move(shape),
                     std::string(reinterpret_cast<const char*>(bits), count * sizeof(uint16_t))};
}

std::vector<float> FloatValues(const InferOutput& output) {
  const int64_t size = DatatypeSize(output.datatype);
  std::vector<float> values(size == 0 ? 0 : output.raw.size() / size);
  if (output.datatype == "FP32") {
    std::memcpy(values.data(), output.raw.data(), values.size() * sizeof(float));
    return values;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, output.raw.data() + 2 * i, sizeof(bits));
    values[i] = WidenHalfWidth(output.datatype, bits);
  }
  return values;
}

}  // namespace attnserve
