#include "core/encodings/encoding_tables.h"

#include <memory>
#include <string>
#include <vector>

#include "core/encodings/positions.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::ElementsAre;

const TableLayerShape kLayer{/*d_model=*/48, /*num_heads=*/6, /*head_dim=*/8,
                             /*max_positions=*/100};

TEST(EncodingTablesTest, EachTableCarryingKindNamesItsTableAndShape) {
  T5BiasParams t5;
  t5.num_buckets = 16;
  CopeParams cope;
  cope.npos_max = 12;
  const std::optional<EncodingTableSpec> learned = EncodingTable(LearnedParams{}, kLayer);
  const std::optional<EncodingTableSpec> t5_table = EncodingTable(t5, kLayer);
  const std::optional<EncodingTableSpec> cope_table = EncodingTable(cope, kLayer);
  ASSERT_TRUE(learned && t5_table && cope_table);
  EXPECT_EQ(std::string(learned->tensor_name), "position_embeddings.weight");
  EXPECT_EQ(std::vector<int64_t>({learned->rows, learned->cols}), std::vector<int64_t>({100, 48}));
  EXPECT_EQ(std::string(t5_table->tensor_name), "relative_attention_bias.weight");
  EXPECT_EQ(std::vector<int64_t>({t5_table->rows, t5_table->cols}), std::vector<int64_t>({16, 6}));
  EXPECT_EQ(std::string(cope_table->tensor_name), "cope.pos_emb");
  EXPECT_EQ(std::vector<int64_t>({cope_table->rows, cope_table->cols}),
            std::vector<int64_t>({12, 8}));
  for (const PositionalEncoding& none :
       {PositionalEncoding(NoPositionalEncoding{}), PositionalEncoding(SinusoidalParams{}),
        PositionalEncoding(RopeParams{}), PositionalEncoding(AlibiParams{})}) {
    EXPECT_FALSE(EncodingTable(none, kLayer).has_value()) << EncodingName(none);
  }
}

TEST(EncodingTablesTest, AnAttachedTableOfTheNamedShapeValidates) {
  T5BiasParams t5_params;
  t5_params.num_buckets = 16;
  for (PositionalEncoding encoding : {PositionalEncoding(LearnedParams{}),
                                      PositionalEncoding(t5_params),
                                      PositionalEncoding(CopeParams{12, nullptr})}) {
    EXPECT_FALSE(ValidateEncoding(encoding, kLayer.d_model, kLayer.num_heads, kLayer.head_dim).ok())
        << EncodingName(encoding) << " without its table";
    const EncodingTableSpec spec = *EncodingTable(encoding, kLayer);
    AttachTable(std::make_shared<const std::vector<float>>(spec.rows * spec.cols, 0.5f), encoding);
    EXPECT_TRUE(ValidateEncoding(encoding, kLayer.d_model, kLayer.num_heads, kLayer.head_dim).ok())
        << EncodingName(encoding);
  }
}

// ValidateTableParams applies the table-shaping rules of ValidateEncoding, with its messages.
TEST(EncodingTablesTest, TableParamsFollowTheEncodingsOwnRules) {
  T5BiasParams t5;
  t5.num_buckets = 6;  // bidirectional: must be even and >= 4, so 6 passes; max_exact 1
  t5.max_distance = 1;
  CopeParams cope;
  cope.npos_max = 0;
  const std::pair<PositionalEncoding, std::string> cases[] = {
      {t5, "t5.max_distance=1 must be > max_exact=1 (num_buckets/4)"},
      {cope, "cope.npos_max=0 must be >= 1"}};
  for (const auto& [encoding, message] : cases) {
    const absl::Status params = ValidateTableParams(encoding);
    EXPECT_EQ(params.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(params.message(), message);
    EXPECT_EQ(params, ValidateEncoding(encoding, 48, 6, 8));
  }
  EXPECT_TRUE(ValidateTableParams(T5BiasParams{}).ok());
  EXPECT_TRUE(ValidateTableParams(AlibiParams{}).ok());
}

TEST(PositionsTest, BottomRightAlignsTheLastQueryWithTheLastKey) {
  std::vector<int64_t> q, k;
  BottomRightPositions(/*first_key=*/10, /*batch=*/2, /*q_len=*/2, /*kv_len=*/4, &q, &k);
  EXPECT_THAT(q, ElementsAre(12, 13, 12, 13));
  EXPECT_THAT(k, ElementsAre(10, 11, 12, 13, 10, 11, 12, 13));
  BottomRightPositions(0, 1, 3, 1, &q, &k);  // more queries than keys: queries start below
  EXPECT_THAT(q, ElementsAre(-2, -1, 0));
  EXPECT_THAT(k, ElementsAre(0));
}

TEST(PositionBiasMapTest, CausalMasksKeysAfterTheirQuery) {
  const std::vector<int64_t> q = {1, 2}, k = {0, 1, 2};
  std::vector<float> open(2 * 3), masked(2 * 3);
  ASSERT_TRUE(PositionBiasMap(AlibiParams{}, 1, q.data(), 2, k.data(), 3, false, open.data()).ok());
  ASSERT_TRUE(PositionBiasMap(AlibiParams{}, 1, q.data(), 2, k.data(), 3, true, masked.data()).ok());
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      if (k[j] > q[i]) {
        EXPECT_EQ(masked[i * 3 + j], -std::numeric_limits<float>::infinity());
        EXPECT_TRUE(std::isfinite(open[i * 3 + j]));
      } else {
        EXPECT_EQ(masked[i * 3 + j], open[i * 3 + j]);
      }
    }
  }
}

}  // namespace
}  // namespace attnserve
