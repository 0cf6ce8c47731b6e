#include "server/rpc/tensor_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/encodings/positional_encoding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::HasSubstr;

v1::Tensor MakeTensor(v1::DataType dtype, std::vector<int64_t> shape, size_t bytes) {
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  for (int64_t dim : shape) tensor.add_shape(dim);
  tensor.mutable_data()->resize(bytes);
  return tensor;
}

std::string Message(const v1::Tensor& tensor) {
  return std::string(DecodeFloatTensor(tensor, "query", 3, "[batch, seq, d_model]")
                         .status()
                         .message());
}

TEST(TensorCodecTest, Float32RoundTrip) {
  const std::vector<float> values = {1.5f, -2.25f, 3.0f, 0.0f, 1e-30f, -7.0f};
  v1::Tensor tensor;
  EncodeFloatTensor({1, 2, 3}, values.data(), v1::FLOAT32, &tensor);
  EXPECT_EQ(tensor.data().size(), 24u);
  absl::StatusOr<FloatTensor> decoded = DecodeFloatTensor(tensor, "x", 3, "[a, b, c]");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(decoded->values, values);
}

TEST(TensorCodecTest, Bfloat16TensorDecodesToFloat) {
  v1::Tensor tensor = MakeTensor(v1::BFLOAT16, {1, 1, 2}, 4);
  const uint16_t bits[2] = {0x3fc0, 0xc000};  // 1.5, -2
  std::memcpy(tensor.mutable_data()->data(), bits, 4);
  absl::StatusOr<FloatTensor> decoded = DecodeFloatTensor(tensor, "q", 3, "[a, b, c]");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->values, (std::vector<float>{1.5f, -2.0f}));
}

TEST(TensorCodecTest, Bfloat16TensorKeepsItsBitsBothWays) {
  const std::vector<uint16_t> bits = {0x3fc0, 0xc000, 0x7fc0, 0x0001, 0xff80, 0x1234};
  v1::Tensor tensor;
  EncodeBfloat16Tensor({2, 1, 3}, bits.data(), &tensor);
  EXPECT_EQ(tensor.dtype(), v1::BFLOAT16);
  EXPECT_EQ(tensor.data().size(), 12u);
  const uint8_t first[2] = {0xc0, 0x3f};  // little-endian on the wire
  EXPECT_EQ(std::memcmp(tensor.data().data(), first, 2), 0);
  absl::StatusOr<Bfloat16Tensor> decoded = DecodeBfloat16Tensor(tensor, "q", 3, "[a, b, c]");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->shape, (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(decoded->values, bits);
}

TEST(TensorCodecTest, Bfloat16DecodingNamesTheFieldAndValue) {
  auto message = [](const v1::Tensor& tensor) {
    return std::string(DecodeBfloat16Tensor(tensor, "k", 4, "[B, Hkv, Sk, hd]").status().message());
  };
  EXPECT_THAT(message(MakeTensor(v1::FLOAT32, {1, 1, 1, 1}, 4)),
              HasSubstr("k.dtype=FLOAT32 must be BFLOAT16"));
  EXPECT_THAT(message(MakeTensor(v1::BFLOAT16, {1, 2, 3, 4}, 47)),
              HasSubstr("k.data has 47 bytes; shape [1,2,3,4] of BFLOAT16 needs 48"));
  EXPECT_THAT(message(MakeTensor(v1::BFLOAT16, {1, 2, 3}, 12)),
              HasSubstr("k.shape=[1,2,3] has rank 3; must be [B, Hkv, Sk, hd]"));
}

TEST(TensorCodecTest, RejectionsNameTheFieldAndValue) {
  EXPECT_THAT(Message(MakeTensor(v1::FLOAT32, {2, 3}, 24)),
              HasSubstr("query.shape=[2,3] has rank 2; must be [batch, seq, d_model]"));
  EXPECT_THAT(Message(MakeTensor(v1::FLOAT32, {2, 0, 3}, 0)),
              HasSubstr("query.shape[1]=0 must be >= 1"));
  EXPECT_THAT(Message(MakeTensor(v1::FLOAT32, {2, 3, 4}, 95)),
              HasSubstr("query.data has 95 bytes; shape [2,3,4] of FLOAT32 needs 96"));
  EXPECT_THAT(Message(MakeTensor(v1::INT32, {1, 1, 1}, 4)),
              HasSubstr("query.dtype=INT32 must be FLOAT32 or BFLOAT16"));
  EXPECT_THAT(Message(MakeTensor(static_cast<v1::DataType>(42), {1, 1, 1}, 4)),
              HasSubstr("query.dtype=42"));
}

TEST(TensorCodecTest, HugeShapeIsRejectedWithoutOverflowOrAllocation) {
  // The product 2^62·2^62 overflows int64; the check must still reject it from 8 bytes.
  const int64_t huge = int64_t{1} << 62;
  EXPECT_THAT(Message(MakeTensor(v1::FLOAT32, {huge, huge, 2}, 8)), HasSubstr("needs over 2^63"));
}

TEST(TensorCodecTest, PositionsFromOffsetOrIds) {
  absl::StatusOr<std::vector<int64_t>> offset = ResolvePositions(v1::Tensor(), "ids", 5, 2, 3);
  ASSERT_TRUE(offset.ok());
  EXPECT_EQ(*offset, (std::vector<int64_t>{5, 6, 7, 5, 6, 7}));

  v1::Tensor ids = MakeTensor(v1::INT64, {3}, 24);
  const int64_t values[3] = {9, 0, 4};
  std::memcpy(ids.mutable_data()->data(), values, 24);
  absl::StatusOr<std::vector<int64_t>> broadcast = ResolvePositions(ids, "ids", 0, 2, 3);
  ASSERT_TRUE(broadcast.ok());
  EXPECT_EQ(*broadcast, (std::vector<int64_t>{9, 0, 4, 9, 0, 4}));

  v1::Tensor per_row = MakeTensor(v1::INT32, {2, 2}, 16);
  const int32_t rows[4] = {1, 2, 30, 40};
  std::memcpy(per_row.mutable_data()->data(), rows, 16);
  absl::StatusOr<std::vector<int64_t>> resolved = ResolvePositions(per_row, "ids", 0, 2, 2);
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, (std::vector<int64_t>{1, 2, 30, 40}));
}

TEST(TensorCodecTest, BadPositionsAreNamed) {
  auto offset_message = [](int64_t offset, int64_t seq) {
    return std::string(
        ResolvePositions(v1::Tensor(), "position_ids", offset, 1, seq).status().message());
  };
  EXPECT_THAT(offset_message(-1, 2), HasSubstr("position_offset=-1 must be in [0, 2147483646]"));
  // The last position may be kMaxPosition itself, not one more.
  EXPECT_TRUE(ResolvePositions(v1::Tensor(), "position_ids", kMaxPosition - 1, 1, 2).ok());
  EXPECT_THAT(offset_message(kMaxPosition, 2),
              HasSubstr("position_offset=2147483647 must be in [0, 2147483646]"));
  EXPECT_THAT(offset_message(std::numeric_limits<int64_t>::max(), 3),
              HasSubstr("position_offset=9223372036854775807 must be in [0, 2147483645]"));
  v1::Tensor ids = MakeTensor(v1::INT32, {2}, 8);
  const int32_t values[2] = {3, -4};
  std::memcpy(ids.mutable_data()->data(), values, 8);
  EXPECT_THAT(std::string(ResolvePositions(ids, "position_ids", 0, 1, 2).status().message()),
              HasSubstr("position_ids[1]=-4 must be in [0, 2147483647]"));
  v1::Tensor big = MakeTensor(v1::INT64, {2}, 16);
  const int64_t big_values[2] = {kMaxPosition, int64_t{1} << 62};
  std::memcpy(big.mutable_data()->data(), big_values, 16);
  EXPECT_THAT(std::string(ResolvePositions(big, "position_ids", 0, 1, 2).status().message()),
              HasSubstr("position_ids[1]=4611686018427387904 must be in [0, 2147483647]"));
  EXPECT_THAT(std::string(ResolvePositions(ids, "position_ids", 0, 1, 3).status().message()),
              HasSubstr("position_ids.shape=[2] must be [3] or [1,3]"));
  v1::Tensor floats = MakeTensor(v1::FLOAT32, {2}, 8);
  EXPECT_THAT(std::string(ResolvePositions(floats, "position_ids", 0, 1, 2).status().message()),
              HasSubstr("position_ids.dtype=FLOAT32 must be INT32 or INT64"));
}

TEST(TensorCodecTest, FormatShapeShowsAtMostEightDims) {
  EXPECT_EQ(FormatShape(std::vector<int64_t>{}), "[]");
  EXPECT_EQ(FormatShape(std::vector<int64_t>{2, 3, 4}), "[2,3,4]");
  EXPECT_EQ(FormatShape(std::vector<int64_t>(8, 1)), "[1,1,1,1,1,1,1,1]");
  EXPECT_EQ(FormatShape(std::vector<int64_t>(100000, 7)), "[7,7,7,7,7,7,7,7,…(100000 dims)]");
}

TEST(TensorCodecTest, LongShapeIsNotEchoedInFull) {
  // A rank-100000 shape sent as a float tensor: the message stays short.
  v1::Tensor tensor = MakeTensor(v1::FLOAT32, std::vector<int64_t>(100000, 1), 4);
  const std::string message = Message(tensor);
  EXPECT_THAT(message, HasSubstr("query.shape=[1,1,1,1,1,1,1,1,…(100000 dims)] has rank 100000"));
  EXPECT_LT(message.size(), 200u);
}

}  // namespace
}  // namespace attnserve
