#include "server/rpc/tensor_codec.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/encodings/positional_encoding.h"
#include "core/base/status_macros.h"
#include "core/kernels/bfloat16.h"
#include "server/requests/positions.h"

namespace attnserve {
namespace {

static_assert(sizeof(float) == 4, "FLOAT32 is IEEE binary32");

int64_t ElementSize(int dtype) {
  switch (dtype) {
    case v1::FLOAT32:
    case v1::INT32:
      return 4;
    case v1::BFLOAT16:
      return 2;
    case v1::INT64:
      return 8;
    default:
      return 0;
  }
}

// Checks the rank, each dim >= 1, and that data holds exactly product(shape)·element_size bytes
// (the product is checked against overflow before it is formed).
absl::StatusOr<int64_t> CheckedElementCount(const v1::Tensor& tensor, absl::string_view field,
                                            int rank, absl::string_view dims) {
  if (tensor.shape_size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape=", FormatShape(tensor.shape()),
                                                   " has rank ", tensor.shape_size(), "; must be ",
                                                   dims));
  }
  for (int i = 0; i < rank; ++i) {
    if (tensor.shape(i) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape[", i, "]=", tensor.shape(i), " must be >= 1"));
    }
  }
  const int64_t element_size = ElementSize(tensor.dtype());
  const int64_t bytes = static_cast<int64_t>(tensor.data().size());
  const std::string described =
      absl::StrCat("shape ", FormatShape(tensor.shape()), " of ", DataTypeName(tensor.dtype()));
  int64_t count = 1;
  for (int64_t dim : tensor.shape()) {
    if (count > std::numeric_limits<int64_t>::max() / element_size / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".data has ", bytes, " bytes; ", described, " needs over 2^63"));
    }
    count *= dim;
  }
  if (count * element_size != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data has ", bytes, " bytes; ",
                                                   described, " needs ", count * element_size));
  }
  return count;
}

// INVALID_ARGUMENT "<field>.dtype=<dtype> must be <allowed>" unless the dtype is one of them.
absl::Status CheckDtype(const v1::Tensor& tensor, absl::string_view field,
                        std::initializer_list<v1::DataType> allowed) {
  for (v1::DataType dtype : allowed) {
    if (tensor.dtype() == dtype) return absl::OkStatus();
  }
  std::vector<std::string> names;
  for (v1::DataType dtype : allowed) names.push_back(DataTypeName(dtype));
  return absl::InvalidArgumentError(absl::StrCat(field, ".dtype=", DataTypeName(tensor.dtype()),
                                                 " must be ", absl::StrJoin(names, " or ")));
}

// A tensor of `tensor`'s shape with room for its values, once its dtype is one of `allowed` and
// its rank and byte size check out.
template <class T>
absl::StatusOr<DenseTensor<T>> SizedFor(const v1::Tensor& tensor, absl::string_view field,
                                        int rank, absl::string_view dims,
                                        std::initializer_list<v1::DataType> allowed) {
  RETURN_IF_ERROR(CheckDtype(tensor, field, allowed));
  ASSIGN_OR_RETURN(const int64_t count, CheckedElementCount(tensor, field, rank, dims));
  DenseTensor<T> sized;
  sized.shape.assign(tensor.shape().begin(), tensor.shape().end());
  sized.values.resize(count);
  return sized;
}

// The inline table of `encoding` from the request's field for its kind (null: the request has
// none for it).
absl::StatusOr<RequestTable> DecodeRequestTable(const PositionalEncoding& encoding,
                                                const v1::Tensor* t5_table,
                                                const v1::Tensor* cope_pos_emb) {
  RequestTable table;
  const v1::Tensor* tensor = nullptr;
  if (std::holds_alternative<T5BiasParams>(encoding)) {
    table.field = "t5_table";
    tensor = t5_table;
  } else if (std::holds_alternative<CopeParams>(encoding)) {
    table.field = "cope_pos_emb";
    tensor = cope_pos_emb;
  }
  if (tensor == nullptr || (tensor->shape_size() == 0 && tensor->data().empty())) return table;
  ASSIGN_OR_RETURN(table.tensor,
                   DecodeFloatTensor(*tensor, table.field, 2,
                                     EncodingTable(encoding, TableLayerShape())->dims));
  return table;
}

}  // namespace

absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const v1::SdpaRequest& request) {
  return DecodeRequestTable(encoding, &request.t5_table(), &request.cope_pos_emb());
}

absl::StatusOr<RequestTable> RequestTableFromProto(const PositionalEncoding& encoding,
                                                   const v1::PositionBiasRequest& request) {
  return DecodeRequestTable(encoding, &request.t5_table(), nullptr);
}

absl::StatusOr<ComputeType> ComputeTypeFromProto(int dtype) {
  if (dtype == v1::DATA_TYPE_UNSPECIFIED || dtype == v1::FLOAT32) return ComputeType::kFloat32;
  if (dtype == v1::BFLOAT16) return ComputeType::kBfloat16;
  return absl::InvalidArgumentError(absl::StrCat("compute_dtype=", DataTypeName(dtype),
                                                 " must be FLOAT32 or BFLOAT16"));
}

std::string DataTypeName(int dtype) {
  if (v1::DataType_IsValid(dtype)) return v1::DataType_Name(static_cast<v1::DataType>(dtype));
  return absl::StrCat(dtype);
}

absl::StatusOr<FloatTensor> DecodeFloatTensor(const v1::Tensor& tensor, absl::string_view field,
                                              int rank, absl::string_view dims) {
  ASSIGN_OR_RETURN(FloatTensor decoded,
                   SizedFor<float>(tensor, field, rank, dims, {v1::FLOAT32, v1::BFLOAT16}));
  const int64_t count = static_cast<int64_t>(decoded.values.size());
  const char* data = tensor.data().data();
  if (tensor.dtype() == v1::FLOAT32) {
    std::memcpy(decoded.values.data(), data, count * sizeof(float));
  } else {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, data + 2 * i, sizeof(bits));
      decoded.values[i] = Bfloat16ToFloat(bits);
    }
  }
  return decoded;
}

absl::StatusOr<Bfloat16Tensor> DecodeBfloat16Tensor(const v1::Tensor& tensor,
                                                    absl::string_view field, int rank,
                                                    absl::string_view dims) {
  ASSIGN_OR_RETURN(Bfloat16Tensor decoded,
                   SizedFor<uint16_t>(tensor, field, rank, dims, {v1::BFLOAT16}));
  std::memcpy(decoded.values.data(), tensor.data().data(),
              decoded.values.size() * sizeof(uint16_t));
  return decoded;
}

void EncodeBfloat16Tensor(const std::vector<int64_t>& shape, const uint16_t* bits,
                          v1::Tensor* tensor) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  tensor->set_dtype(v1::BFLOAT16);
  tensor->mutable_shape()->Assign(shape.begin(), shape.end());
  tensor->mutable_data()->assign(reinterpret_cast<const char*>(bits), count * sizeof(uint16_t));
}

void EncodeFloatTensor(const std::vector<int64_t>& shape, const float* values, v1::DataType dtype,
                       v1::Tensor* tensor) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  tensor->set_dtype(dtype);
  tensor->mutable_shape()->Assign(shape.begin(), shape.end());
  std::string* data = tensor->mutable_data();
  if (dtype == v1::BFLOAT16) {
    data->resize(count * 2);
    for (int64_t i = 0; i < count; ++i) {
      const uint16_t bits = FloatToBfloat16(values[i]);
      std::memcpy(data->data() + 2 * i, &bits, sizeof(bits));
    }
  } else {
    data->assign(reinterpret_cast<const char*>(values), count * sizeof(float));
  }
}

void EncodeAttentionMap(const AttentionMap& map, v1::Tensor* tensor) {
  EncodeFloatTensor(map.shape, map.values.data(), v1::FLOAT32, tensor);
}

absl::StatusOr<std::vector<int64_t>> ResolvePositions(const v1::Tensor& ids,
                                                      absl::string_view ids_field,
                                                      int64_t position_offset, int64_t batch,
                                                      int64_t seq) {
  if (ids.shape_size() == 0 && ids.data().empty()) {
    return attnserve::ResolvePositions(nullptr, ids_field, position_offset, batch, seq);
  }
  const int rank = ids.shape_size() == 1 ? 1 : 2;
  ASSIGN_OR_RETURN(DenseTensor<int64_t> decoded,
                   SizedFor<int64_t>(ids, ids_field, rank, rank == 1 ? "[seq]" : "[batch, seq]",
                                     {v1::INT32, v1::INT64}));
  const char* data = ids.data().data();
  for (size_t i = 0; i < decoded.values.size(); ++i) {
    if (ids.dtype() == v1::INT32) {
      int32_t value;
      std::memcpy(&value, data + 4 * i, sizeof(value));
      decoded.values[i] = value;
    } else {
      std::memcpy(&decoded.values[i], data + 8 * i, sizeof(int64_t));
    }
  }
  return attnserve::ResolvePositions(&decoded, ids_field, position_offset, batch, seq);
}

}  // namespace attnserve
