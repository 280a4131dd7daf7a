#include <gtest/gtest.h>

#include "torwart/core/clock.hpp"
#include "torwart/core/config.hpp"
#include "torwart/core/error.hpp"
#include "torwart/core/ids.hpp"

namespace torwart {
namespace {

Expected<int> Half(int v) {
  if (v % 2) return MakeError(Errc::kInvalidArgument, "odd");
  return v / 2;
}

TEST(ErrorTest, ExpectedCarriesValueOrError) {
  auto ok = Half(4);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 2);
  auto bad = Half(3);
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().Is(Errc::kInvalidArgument));
  EXPECT_EQ(bad.error().WithContext("halving").message(), "halving: odd");
}

TEST(IdsTest, UuidAndEncodings) {
  std::string u = NewUuid();
  EXPECT_TRUE(IsUuid(u));
  EXPECT_EQ(u[14], '4');
  EXPECT_NE(NewUuid(), u);
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(*Base64Decode("Zm9v\r\nYmFy"), "foobar");
  EXPECT_FALSE(Base64Decode("Zm9v*"));
  EXPECT_EQ(HexEncode("\x01\xab"), "01ab");
  EXPECT_EQ(*HexDecode("01ab"), "\x01\xab");
  EXPECT_FALSE(HexDecode("0g"));
}

TEST(IdsTest, Durations) {
  EXPECT_EQ(ParseDuration("90")->count(), 90);
  EXPECT_EQ(ParseDuration("1h30m")->count(), 5400);
  EXPECT_EQ(ParseDuration("30d")->count(), 30 * 86400);
  EXPECT_FALSE(ParseDuration("h"));
  EXPECT_FALSE(ParseDuration("5x"));
  EXPECT_EQ(FormatDuration(std::chrono::seconds(5400)), "1h30m");
}

TEST(ClockTest, Rfc3339RoundTrip) {
  TimePoint t;
  ASSERT_TRUE(ParseRfc3339("2026-03-29T01:30:00Z", t));
  EXPECT_EQ(FormatRfc3339(t), "2026-03-29T01:30:00Z");
  ASSERT_TRUE(ParseRfc3339("2026-03-29T03:30:00+02:00", t));
  EXPECT_EQ(FormatRfc3339(t), "2026-03-29T01:30:00Z");
  EXPECT_FALSE(ParseRfc3339("2026-13-29T03:30:00Z", t));
  // Far-future certificate times clamp instead of overflowing.
  ASSERT_TRUE(ParseRfc3339("9999-12-31T23:59:59Z", t));
  EXPECT_GT(t, FromUnix(ToUnix(SystemClock::Instance().Now()) + 100LL * 365 * 86400));
  ASSERT_TRUE(ParseRfc3339("2026-03-29T01:30:00Z", t));
  FakeClock c(t);
  c.Advance(std::chrono::seconds(30));
  EXPECT_EQ(FormatRfc3339(c.Now()), "2026-03-29T01:30:30Z");
}

TEST(ConfigTest, UnknownKeysAndBadValuesNameFileLineAndKey) {
  auto r = ConfigReader::FromString("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n[pki]\ndevice_lifetime = \"5x\"\n",
                                    "t.toml");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->String("server.listen", ""), "127.0.0.1:1");
  r->Seconds("pki.device_lifetime", std::chrono::seconds(1), std::chrono::seconds(1));
  auto f = r->Finish();
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("t.toml:3:1: unknown key 'server.lisen'"), std::string::npos)
      << f.error().message();
  EXPECT_NE(f.error().message().find("t.toml:5:1: key 'pki.device_lifetime'"), std::string::npos)
      << f.error().message();
}

TEST(ConfigTest, SyntaxErrorHasPosition) {
  auto r = ConfigReader::FromString("[server\n", "bad.toml");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().rfind("bad.toml:1:", 0), 0u) << r.error().message();
}

}  // namespace
}  // namespace torwart
