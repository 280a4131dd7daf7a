#include "plugin_state.hpp"

#include <gtest/gtest.h>

namespace torwart::broker_plugin {
namespace {

constexpr char kUuid[] = "0f8fad5b-d9cb-469f-a165-70867728950e";
constexpr char kOther[] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

TEST(PluginState, RoundTrips) {
  State s;
  s.generated = 1700000000;
  s.certs["ab01"] = {kUuid, 1800000000};
  s.server_fingerprints.insert(std::string(64, 'a'));
  State back;
  std::string error;
  ASSERT_TRUE(ParseState(FormatState(s), back, error)) << error;
  EXPECT_EQ(back.generated, 1700000000);
  ASSERT_EQ(back.certs.count("ab01"), 1u);
  EXPECT_EQ(back.certs["ab01"].uuid, kUuid);
  EXPECT_EQ(back.certs["ab01"].not_after, 1800000000);
  EXPECT_EQ(back.server_fingerprints.count(std::string(64, 'a')), 1u);
}

TEST(PluginState, SerialsAreNormalised) {
  State s;
  std::string error;
  ASSERT_TRUE(ParseState(std::string("torwart-broker-state v1\ncert 00AB01 ") + kUuid + " 5\nend\n",
                         s, error))
      << error;
  EXPECT_EQ(s.certs.count("ab01"), 1u);
  EXPECT_EQ(NormalizeSerial("000"), "0");
  EXPECT_EQ(NormalizeSerial("xyz"), "");
}

TEST(PluginState, RejectsTruncatedAndMalformedFilesWithoutTouchingTheOldState) {
  State s;
  s.generated = 42;
  std::string error;
  EXPECT_FALSE(ParseState("", s, error));
  EXPECT_FALSE(ParseState("torwart-broker-state v1\n", s, error));  // no end: truncated
  EXPECT_NE(error.find("truncated"), std::string::npos);
  EXPECT_FALSE(ParseState("torwart-broker-state v2\nend\n", s, error));
  EXPECT_FALSE(
      ParseState("torwart-broker-state v1\ncert zz " + std::string(kUuid) + " 1\nend\n", s, error));
  EXPECT_FALSE(ParseState("torwart-broker-state v1\ncert ab NOT-A-UUID 1\nend\n", s, error));
  EXPECT_FALSE(ParseState("torwart-broker-state v1\nserver abc\nend\n", s, error));
  EXPECT_FALSE(ParseState("torwart-broker-state v1\nfrobnicate\nend\n", s, error));
  EXPECT_FALSE(
      ParseState("torwart-broker-state v1\nend\ncert ab " + std::string(kUuid) + " 1\n", s, error));
  EXPECT_EQ(s.generated, 42);
}

TEST(DeviceAcl, OwnTopicsOnly) {
  const std::string own = std::string("torwart/d/") + kUuid + "/";
  const std::string other = std::string("torwart/d/") + kOther + "/";
  for (const char* leaf : {"status", "inventory", "health", "res", "event"}) {
    EXPECT_TRUE(DeviceMayAccess(kUuid, own + leaf, kAclWrite)) << leaf;
    EXPECT_FALSE(DeviceMayAccess(kUuid, other + leaf, kAclWrite)) << leaf;
    EXPECT_FALSE(DeviceMayAccess(kUuid, own + leaf, kAclSubscribe)) << leaf;
    EXPECT_FALSE(DeviceMayAccess(kUuid, own + leaf, kAclRead)) << leaf;
  }
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "cmd", kAclWrite));
  EXPECT_TRUE(DeviceMayAccess(kUuid, own + "cmd", kAclSubscribe));
  EXPECT_TRUE(DeviceMayAccess(kUuid, own + "cmd", kAclRead));
  EXPECT_FALSE(DeviceMayAccess(kUuid, other + "cmd", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "#", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "+", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, "torwart/d/+/cmd", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, "#", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, "$share/x/" + own + "cmd", kAclSubscribe));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "status/x", kAclWrite));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "event/x", kAclWrite));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own + "events", kAclWrite));
  EXPECT_FALSE(DeviceMayAccess(kUuid, own, kAclWrite));
  EXPECT_FALSE(DeviceMayAccess("torwartd", "torwart/d/torwartd/status", kAclWrite));
  EXPECT_TRUE(DeviceMayAccess(kUuid, "#", kAclUnsubscribe));
}

}  // namespace
}  // namespace torwart::broker_plugin
