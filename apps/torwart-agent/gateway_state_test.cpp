#include "gateway_state.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("gw-state-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
  static inline int counter = 0;
};

TEST(Consent, SwitchIsOnOnlyUntilItsTime) {
  const int64_t now = 1'800'000'000;
  EXPECT_FALSE(EvaluateConsent(std::nullopt, std::nullopt, now).on);
  auto on = EvaluateConsent(R"({"v":1,"until":1800003600})", std::nullopt, now);
  EXPECT_TRUE(on.on);
  EXPECT_TRUE(on.switch_on);
  EXPECT_EQ(on.until, 1'800'003'600);
  auto past = EvaluateConsent(R"({"v":1,"until":1799999999})", std::nullopt, now);
  EXPECT_FALSE(past.on);
  EXPECT_EQ(past.until, 0);
  auto exact = EvaluateConsent(R"({"v":1,"until":1800000000})", std::nullopt, now);
  EXPECT_FALSE(exact.on) << "until is exclusive";
  for (const char* corrupt : {"", "{", "[]", R"({"until":"tomorrow"})", R"({"v":1})"}) {
    auto c = EvaluateConsent(std::string(corrupt), std::nullopt, now);
    EXPECT_FALSE(c.on) << corrupt;
    EXPECT_FALSE(c.problem.empty()) << corrupt;
  }
}

TEST(Consent, InputReadsOneAsOn) {
  const int64_t now = 1'800'000'000;
  for (const char* on : {"1", "1\n", " 1 \n", "1\r\n"}) {
    auto c = EvaluateConsent(std::nullopt, std::string(on), now);
    EXPECT_TRUE(c.on) << on;
    EXPECT_TRUE(c.input_on);
    EXPECT_FALSE(c.switch_on);
  }
  for (const char* off : {"0", "0\n", "", "11", "true", "on", "1 1", "\n1"}) {
    EXPECT_FALSE(EvaluateConsent(std::nullopt, std::string(off), now).on) << off;
  }
  // Either source suffices.
  auto both = EvaluateConsent(R"({"until":1})", std::string("1"), now);
  EXPECT_TRUE(both.on);
  EXPECT_FALSE(both.switch_on);
}

TEST(Consent, FilesOnDisk) {
  TempDir d;
  const int64_t now = 1'800'000'000;
  EXPECT_FALSE(ReadConsent(d.str(), "", now).on);
  ASSERT_TRUE(WriteConsentOn(d.str(), now + 7200, now));
  auto c = ReadConsent(d.str(), "", now);
  EXPECT_TRUE(c.on);
  EXPECT_EQ(c.until, now + 7200);
  EXPECT_FALSE(ReadConsent(d.str(), "", now + 7200).on) << "expires by itself";
  ASSERT_TRUE(WriteConsentOff(d.str()));
  EXPECT_FALSE(ReadConsent(d.str(), "", now).on);
  ASSERT_TRUE(WriteConsentOff(d.str())) << "off twice is fine";

  std::string input = (d.path / "gpio17").string();
  auto missing = ReadConsent(d.str(), input, now);
  EXPECT_FALSE(missing.on);
  EXPECT_NE(missing.problem.find("not readable"), std::string::npos);
  std::ofstream(input) << "1\n";
  EXPECT_TRUE(ReadConsent(d.str(), input, now).on);
  std::ofstream(input) << "0\n";
  EXPECT_FALSE(ReadConsent(d.str(), input, now).on);
}

TEST(Quarantine, PersistsAndFailsClosed) {
  TempDir d;
  EXPECT_FALSE(ReadQuarantine(d.str()).on);
  ASSERT_TRUE(WriteQuarantine(d.str(), {true, "CVE-2026-1234", 1'800'000'000}));
  auto q = ReadQuarantine(d.str());
  EXPECT_TRUE(q.on);
  EXPECT_EQ(q.reason, "CVE-2026-1234");
  EXPECT_EQ(q.since, 1'800'000'000);
  EXPECT_EQ(fs::status(d.path / "quarantine.json").permissions() & fs::perms::others_read,
            fs::perms::none);
  ASSERT_TRUE(WriteQuarantine(d.str(), {false, "patched", 1'800'000'100}));
  EXPECT_FALSE(ReadQuarantine(d.str()).on);
  for (const char* corrupt : {"", "garbage", R"({"on":"yes"})", "[]"}) {
    auto c = ParseQuarantine(std::string(corrupt));
    EXPECT_TRUE(c.on) << corrupt;
    EXPECT_NE(c.reason.find("corrupt"), std::string::npos);
  }
}

}  // namespace
}  // namespace torwart::agent
