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

TEST(DeviceMessage, RefusalsMayCarryACode) {
  auto r = ParseDeviceMessage(
      T("res"), R"({"v":1,"ok":false,"error":"on-site consent is off","code":"consent"})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->error, "on-site consent is off");
  EXPECT_EQ(r->code, "consent");
  EXPECT_FALSE(ParseDeviceMessage(T("res"), R"({"v":1,"ok":false,"error":"x","code":7})"));
  EXPECT_FALSE(ParseDeviceMessage(
      T("res"), R"({"v":1,"ok":false,"error":"x","code":"0123456789012345678901234567890123"})"));
}

TEST(DeviceMessage, AgentEvents) {
  auto m = ParseDeviceMessage(
      T("event"),
      R"({"v":1,"type":"tunnel.request_refused","ts":1700000000,"stream":"st-0123456789abcdef",)"
      R"("grant":"ar-0123456789ab","user":"tech","target":"plc1",)"
      R"("detail":{"function":6,"unit":1,"transaction":7,"reason":"needs modbus:write","x":[1]}})");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->kind, DeviceTopic::kEvent);
  EXPECT_EQ(m->ts, 1700000000);
  EXPECT_EQ(m->event.type, "tunnel.request_refused");
  EXPECT_EQ(m->event.stream, "st-0123456789abcdef");
  EXPECT_EQ(m->event.grant, "ar-0123456789ab");
  EXPECT_EQ(m->event.user, "tech");
  EXPECT_EQ(m->event.target, "plc1");
  EXPECT_EQ(m->event.detail,
            R"({"function":6,"reason":"needs modbus:write","transaction":7,"unit":1,"x":[1]})");

  auto consent = ParseDeviceMessage(
      T("event"), R"({"v":1,"type":"consent.changed","ts":5,"detail":{"on":true,"until":null}})");
  ASSERT_TRUE(consent) << consent.error().message();
  EXPECT_EQ(consent->event.stream, "");
  auto end = ParseDeviceMessage(
      T("event"), R"({"v":1,"type":"tunnel.stream_end","ts":5,"stream":"st-0123456789abcdef",)"
                  R"("detail":{"bytes_to_target":10,"bytes_from_target":0,"reason":"expired"}})");
  ASSERT_TRUE(end) << end.error().message();
  auto minimal = ParseDeviceMessage(
      T("event"), R"({"v":1,"type":"tunnel.stream_refused","ts":5,"stream":"st-0123456789abcdef"})");
  ASSERT_TRUE(minimal) << minimal.error().message();
  EXPECT_EQ(minimal->event.detail, "{}");
  ASSERT_TRUE(ParseDeviceMessage(
      T("event"), R"({"v":1,"type":"quarantine.changed","ts":5,"detail":{"on":false}})"));
}

TEST(DeviceMessage, BadAgentEventsAreRejected) {
  const std::string s = R"("stream":"st-0123456789abcdef")";
  auto bad = [&](const std::string& payload) {
    auto m = ParseDeviceMessage(T("event"), payload);
    return m ? std::string("accepted") : m.error().message();
  };
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.bogus","ts":5,)" + s + "}").find("unknown event type"),
            std::string::npos);
  EXPECT_NE(bad(R"({"v":1,"ts":5,)" + s + "}"), "accepted");                      // no type
  EXPECT_NE(bad(R"({"v":1,"type":7,"ts":5,)" + s + "}"), "accepted");             // type not text
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end",)" + s + "}"), "accepted");  // no ts
  EXPECT_NE(bad(R"({"v":2,"type":"tunnel.stream_end","ts":5,)" + s + "}"), "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end","ts":5})"), "accepted");  // no stream
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end","ts":5,"stream":"st-XYZ"})"), "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end","ts":5,"stream":"st-0123456789ABCDEF"})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"grant":"ar-1","detail":{"on":true}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"user":"a
b","detail":{"on":true}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"user":7,"detail":{"on":true}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"user":")" + std::string(65, 'u') +
                R"(","detail":{"on":true}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"detail":[]})"), "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"detail":{}})"), "accepted");  // no on
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"detail":{"on":"yes"}})"), "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"consent.changed","ts":5,"detail":{"on":true,"until":-1}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.request_refused","ts":5,)" + s + "}"),
            "accepted");  // no function
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.request_refused","ts":5,)" + s +
                R"(,"detail":{"function":256}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.request_refused","ts":5,)" + s +
                R"(,"detail":{"function":6,"transaction":70000}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end","ts":5,)" + s +
                R"(,"detail":{"bytes_to_target":-1}})"),
            "accepted");
  EXPECT_NE(bad(R"({"v":1,"type":"tunnel.stream_end","ts":5,)" + s +
                R"(,"detail":{"reason":")" + std::string(2000, 'r') + R"("}})"),
            "accepted");
  std::string big = R"({"v":1,"type":"consent.changed","ts":5,"detail":{"on":true,"pad":")" +
                    std::string(70000, 'x') + R"("}})";
  EXPECT_NE(bad(big).find("64 KiB"), std::string::npos);
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
