// Secrets: token files (parsing, several tokens, rotation, refused rotations keeping the tokens in
// use and counted once per content) and the constant-time comparison. TLS files are exercised
// with real certificates in tests/e2e/tls_auth_e2e_test.py.
#include "server/rpc/secrets.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseTokensTest, OnePerLineWithoutBlanksAndComments) {
  absl::StatusOr<std::vector<std::string>> tokens =
      ParseTokens("# current and next\n  alpha \r\n\n\tbeta\n#gamma\n");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(*tokens, ElementsAre("alpha", "beta"));
  EXPECT_EQ(ParseTokens(" \n# none\n").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConstantTimeEqualsTest, EqualOnlyWhenBytesAndLengthsAgree) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secret2", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_FALSE(ConstantTimeEquals("x", ""));
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("attnserve_tokens_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { std::filesystem::remove(path_); }

  void Write(const std::string& content) { std::ofstream(path_) << content; }

  std::unique_ptr<Secrets> Load() {
    absl::StatusOr<std::unique_ptr<Secrets>> secrets =
        Secrets::Load(SecretFiles{.auth_token_file = path_.string()},
                      [this](absl::string_view group, bool ok) {
                        reloads_.emplace_back(std::string(group), ok);
                      });
    EXPECT_TRUE(secrets.ok()) << secrets.status();
    return secrets.ok() ? *std::move(secrets) : nullptr;
  }

  static absl::StatusCode Code(const Secrets& secrets, absl::string_view authorization) {
    return secrets.CheckToken(authorization).code();
  }

  std::filesystem::path path_;
  std::vector<std::pair<std::string, bool>> reloads_;
};

TEST_F(TokenFileTest, EveryListedTokenIsAccepted) {
  Write("alpha\nbeta\n");
  std::unique_ptr<Secrets> secrets = Load();
  ASSERT_NE(secrets, nullptr);
  EXPECT_TRUE(secrets->tokens_required());
  EXPECT_TRUE(secrets->CheckToken("Bearer alpha").ok());
  EXPECT_TRUE(secrets->CheckToken("Bearer beta").ok());
  EXPECT_EQ(Code(*secrets, "Bearer gamma"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Code(*secrets, "Bearer alph"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Code(*secrets, "Basic alpha"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Code(*secrets, "alpha"), absl::StatusCode::kUnauthenticated);
  const absl::Status missing = secrets->CheckToken(std::nullopt);
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.message(), HasSubstr("authorization is missing"));
  // What the client sent is never echoed.
  EXPECT_THAT(secrets->CheckToken("Bearer leaked-guess").message(),
              ::testing::Not(HasSubstr("leaked-guess")));
}

TEST_F(TokenFileTest, WithoutATokenFileEveryCallIsLetIn) {
  absl::StatusOr<std::unique_ptr<Secrets>> secrets = Secrets::Load(SecretFiles{});
  ASSERT_TRUE(secrets.ok()) << secrets.status();
  EXPECT_FALSE((*secrets)->tokens_required());
  EXPECT_TRUE((*secrets)->CheckToken(std::nullopt).ok());
}

TEST_F(TokenFileTest, ARotationReplacesTheTokens) {
  Write("old\n");
  std::unique_ptr<Secrets> secrets = Load();
  ASSERT_NE(secrets, nullptr);
  secrets->Reload();  // unchanged: nothing happens
  EXPECT_TRUE(reloads_.empty());
  Write("old\nnew\n");
  secrets->Reload();
  EXPECT_TRUE(secrets->CheckToken("Bearer old").ok());
  EXPECT_TRUE(secrets->CheckToken("Bearer new").ok());
  Write("new\n");
  secrets->Reload();
  EXPECT_EQ(Code(*secrets, "Bearer old"), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(secrets->CheckToken("Bearer new").ok());
  EXPECT_THAT(reloads_, ElementsAre(std::pair<std::string, bool>("tokens", true),
                                    std::pair<std::string, bool>("tokens", true)));
}

TEST_F(TokenFileTest, ARefusedRotationKeepsTheTokensAndIsCountedOncePerContent) {
  Write("kept\n");
  std::unique_ptr<Secrets> secrets = Load();
  ASSERT_NE(secrets, nullptr);
  Write("# emptied\n");
  secrets->Reload();
  secrets->Reload();  // the same refused content: not counted again
  EXPECT_TRUE(secrets->CheckToken("Bearer kept").ok());
  EXPECT_THAT(reloads_, ElementsAre(std::pair<std::string, bool>("tokens", false)));
  std::filesystem::remove(path_);  // unreadable: counted each time (it may come back)
  secrets->Reload();
  secrets->Reload();
  EXPECT_TRUE(secrets->CheckToken("Bearer kept").ok());
  EXPECT_EQ(reloads_.size(), 3u);
  Write("kept\nadded\n");
  secrets->Reload();
  EXPECT_TRUE(secrets->CheckToken("Bearer added").ok());
  EXPECT_EQ(reloads_.back(), (std::pair<std::string, bool>("tokens", true)));
}

TEST(SecretsLoadTest, BadSettingsNameTheFlag) {
  EXPECT_THAT(Secrets::Load(SecretFiles{.tls_cert_file = "c.pem"}).status().message(),
              HasSubstr("--tls_cert_file and --tls_key_file go together"));
  EXPECT_THAT(Secrets::Load(SecretFiles{.tls_client_ca_file = "ca.pem"}).status().message(),
              HasSubstr("--tls_client_ca_file needs"));
  EXPECT_THAT(Secrets::Load(SecretFiles{.auth_token_file = "/nonexistent/tokens"})
                  .status()
                  .message(),
              HasSubstr("--auth_token_file=/nonexistent/tokens: cannot be read"));
}

}  // namespace
}  // namespace attnserve
