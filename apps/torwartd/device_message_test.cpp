#include "device_message.hpp"

#include <gtest/gtest.h>

namespace torwart::server {
namespace {

const std::string kId = "0f8fad5b-d9cb-469f-a165-70867728950e";
std::string T(const char* leaf) { return "torwart/d/" + kId + "/" + leaf; }

TEST(DeviceMessage, Status) {
  auto m = ParseDeviceMessage(
      T("status"), R"({"v":1,"state":"online","agent_version":"0.1.0","ts":1700000000})");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->device_id, kId);
  EXPECT_EQ(m->kind, DeviceTopic::kStatus);
  EXPECT_TRUE(m->online);
  EXPECT_EQ(m->agent_version, "0.1.0");
  EXPECT_EQ(m->ts, 1700000000);
  auto off = ParseDeviceMessage(T("status"), R"({"v":1,"state":"offline"})");
  ASSERT_TRUE(off);
  EXPECT_FALSE(off->online);
}

TEST(DeviceMessage, InventoryKeepsUnknownFieldsAndHealthIsTyped) {
  auto inv = ParseDeviceMessage(
      T("inventory"), R"({"v":1,"hostname":"gw-7","os":"Debian 12","extra":{"a":[1,2]}})");
  ASSERT_TRUE(inv) << inv.error().message();
  EXPECT_NE(inv->json.find("\"extra\""), std::string::npos);
  auto h = ParseDeviceMessage(
      T("health"),
      R"({"v":1,"cpu":12.5,"mem":{"total":1000,"used":10},"disk":{"total":5,"used":1},"uptime":77})");
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_FALSE(ParseDeviceMessage(T("health"), R"({"v":1,"cpu":"high"})"));
  EXPECT_FALSE(ParseDeviceMessage(T("health"), R"({"v":1,"cpu":101})"));
  EXPECT_FALSE(ParseDeviceMessage(T("health"), R"({"v":1,"mem":{"total":-1}})"));
  EXPECT_FALSE(ParseDeviceMessage(T("health"), R"({"v":1,"uptime":-3})"));
  EXPECT_FALSE(ParseDeviceMessage(T("inventory"), R"({"v":1,"hostname":7})"));
}

TEST(DeviceMessage, Responses) {
  auto ok = ParseDeviceMessage(T("res"), R"({"v":1,"ok":true,"result":{"pong":true}})");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->ok);
  EXPECT_EQ(ok->result, R"({"pong":true})");
  auto bad = ParseDeviceMessage(T("res"), R"({"v":1,"ok":false,"error":"unknown command"})");
  ASSERT_TRUE(bad);
  EXPECT_FALSE(bad->ok);
  EXPECT_EQ(bad->error, "unknown command");
  EXPECT_FALSE(ParseDeviceMessage(T("res"), R"({"v":1,"ok":false})"));
  EXPECT_FALSE(ParseDeviceMessage(T("res"), R"({"v":1,"ok":"yes"})"));
}

TEST(DeviceMessage, GarbageIsRejected) {
  EXPECT_FALSE(ParseDeviceMessage(T("status"), ""));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), "not json"));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), "[1,2]"));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), R"({"state":"online"})"));        // no v
  EXPECT_FALSE(ParseDeviceMessage(T("status"), R"({"v":2,"state":"online"})"));  // wrong v
  EXPECT_FALSE(ParseDeviceMessage(T("status"), R"({"v":"1","state":"online"})"));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), R"({"v":1,"state":"maybe"})"));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), R"({"v":1,"state":"online","ts":-1})"));
  EXPECT_FALSE(ParseDeviceMessage(T("status"), "{\"v\":1,\"state\":\"online\",\"x\":\"\xff\"}"));
  std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_FALSE(ParseDeviceMessage(T("inventory"), R"({"v":1,"a":)" + deep + "}"));
  std::string big = R"({"v":1,"pad":")" + std::string(70000, 'x') + "\"}";
  auto m = ParseDeviceMessage(T("inventory"), big);
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("64 KiB"), std::string::npos);
  EXPECT_FALSE(ParseDeviceMessage("torwart/d/not-a-uuid/status", R"({"v":1,"state":"online"})"));
  EXPECT_FALSE(ParseDeviceMessage(T("cmd"), R"({"v":1})"));
  EXPECT_FALSE(ParseDeviceMessage("elsewhere", R"({"v":1})"));
}

}  // namespace
}  // namespace torwart::server
