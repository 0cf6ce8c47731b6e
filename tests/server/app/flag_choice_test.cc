#include "server/app/flag_choice.h"

#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

enum class Level { kLow, kHigh };

absl::StatusOr<std::optional<Level>> ParseLevel(absl::string_view value) {
  return ParseFlagChoice<std::optional<Level>>(
      "level", value, {{"low", Level::kLow}, {"high", Level::kHigh}, {"off", std::nullopt}});
}

TEST(FlagChoiceTest, NamesAreReadInAnyCase) {
  EXPECT_EQ(*ParseLevel("low"), Level::kLow);
  EXPECT_EQ(*ParseLevel("HIGH"), Level::kHigh);
  EXPECT_EQ(*ParseLevel("Off"), std::nullopt);
}

TEST(FlagChoiceTest, AnythingElseIsRefusedNamingEveryChoice) {
  for (const char* value : {"", "lo", "highest", "o ff"}) {
    const absl::StatusOr<std::optional<Level>> parsed = ParseLevel(value);
    ASSERT_FALSE(parsed.ok()) << value;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(parsed.status().message()),
              absl::StrCat("--level=", value, " must be one of low, high, off (in any case)"));
  }
}

}  // namespace
}  // namespace attnserve
