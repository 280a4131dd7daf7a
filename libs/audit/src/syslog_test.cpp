#include "torwart/audit/syslog.hpp"

#include <gtest/gtest.h>

namespace torwart::audit {
namespace {

TEST(Syslog, FormatsRfc5424WithStructuredData) {
  Event e;
  e.seq = 42;
  e.time = TimePoint(std::chrono::seconds(1'790'000'000)) + std::chrono::microseconds(5);
  e.actor_type = ActorType::kUser;
  e.actor = "ali\"ce]";
  e.category = "auth";
  e.type = "auth.login";
  e.result = Result::kFailure;
  e.hash = std::string(64, 'a');
  e.details = "{}";
  std::string m = FormatRfc5424(e, SyslogOptions{.hostname = "srv 1"});
  // facility 13 * 8 + severity 4 = 108
  EXPECT_TRUE(m.starts_with("<108>1 2026-09-21T")) << m;
  EXPECT_NE(m.find(".000005Z srv_1 torwartd - auth.login [torwart@32473 seq=\"42\""),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(R"(actor="ali\"ce\]")"), std::string::npos) << m;
  EXPECT_NE(m.find("] \xEF\xBB\xBF{\"seq\":42"), std::string::npos) << m;
}

TEST(Syslog, OctetCountingRoundTrips) {
  std::string framed = FrameOctetCounted("hello") + FrameOctetCounted("");
  EXPECT_EQ(framed, "5 hello0 ");
  size_t used = 0;
  bool bad = false;
  auto m = ParseOctetCounted(framed, used, bad);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, "hello");
  EXPECT_EQ(used, 7u);
  EXPECT_FALSE(ParseOctetCounted("5 hel", used, bad));
  EXPECT_FALSE(bad);
  EXPECT_FALSE(ParseOctetCounted("x hello", used, bad));
  EXPECT_TRUE(bad);
  EXPECT_FALSE(ParseOctetCounted("9999999999 x", used, bad));
  EXPECT_TRUE(bad);
}

}  // namespace
}  // namespace torwart::audit
