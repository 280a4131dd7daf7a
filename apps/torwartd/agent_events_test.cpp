// Agent events -> audit events: the mapping, and the per-device rate limit that counts the
// excess into the next recorded event. Against a MemorySink and a FakeClock.
#include "agent_events.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace torwart::server {
namespace {

using nlohmann::json;

const std::string kId = "0f8fad5b-d9cb-469f-a165-70867728950e";

storage::Device Gateway() {
  storage::Device d;
  d.id = kId;
  d.name = "gw-1";
  d.site = "plant-a";
  return d;
}

DeviceMessage Event(const std::string& payload) {
  auto m = ParseDeviceMessage("torwart/d/" + kId + "/event", payload);
  EXPECT_TRUE(m) << m.error().message();
  return m ? *m : DeviceMessage{};
}

const char* kRefused =
    R"({"v":1,"type":"tunnel.request_refused","ts":1700000000,"stream":"st-0123456789abcdef",)"
    R"("grant":"ar-0123456789ab","user":"tech","target":"plc1",)"
    R"("detail":{"function":6,"unit":1,"transaction":7,"reason":"function 6 needs modbus:write"}})";

TEST(AgentEvents, RefusedRequestBecomesAFailedAuditEvent) {
  auto e = MakeAgentAuditEvent(Gateway(), Event(kRefused), FromUnix(1700000001), 0);
  EXPECT_EQ(e.type, "agent.tunnel.request_refused");
  EXPECT_EQ(e.category, "stream");
  EXPECT_EQ(e.actor_type, audit::ActorType::kDevice);
  EXPECT_EQ(e.actor, kId);
  EXPECT_EQ(e.source, "agent");
  EXPECT_EQ(e.target, "st-0123456789abcdef");
  EXPECT_EQ(e.result, audit::Result::kFailure);
  EXPECT_EQ(e.reason, "function 6 needs modbus:write");
  EXPECT_EQ(e.time, FromUnix(1700000001));
  json d = json::parse(e.details);
  EXPECT_EQ(d["device"], "gw-1");
  EXPECT_EQ(d["user"], "tech");
  EXPECT_EQ(d["grant"], "ar-0123456789ab");
  EXPECT_EQ(d["target"], "plc1");
  EXPECT_EQ(d["device_ts"], 1700000000);
  EXPECT_EQ(d["detail"]["function"], 6);
  EXPECT_FALSE(d.contains("suppressed_before"));
}

TEST(AgentEvents, OtherTypesSucceedAndTargetTheDevice) {
  auto e = MakeAgentAuditEvent(
      Gateway(), Event(R"({"v":1,"type":"consent.changed","ts":5,"detail":{"on":false}})"),
      FromUnix(10), 3);
  EXPECT_EQ(e.type, "agent.consent.changed");
  EXPECT_EQ(e.category, "device");
  EXPECT_EQ(e.result, audit::Result::kSuccess);
  EXPECT_EQ(e.target, "gw-1");
  EXPECT_EQ(json::parse(e.details)["suppressed_before"], 3);
  auto end = MakeAgentAuditEvent(
      Gateway(),
      Event(R"({"v":1,"type":"tunnel.stream_end","ts":5,"stream":"st-0123456789abcdef"})"),
      FromUnix(10), 0);
  EXPECT_EQ(end.result, audit::Result::kSuccess);
  auto sr = MakeAgentAuditEvent(
      Gateway(),
      Event(R"({"v":1,"type":"tunnel.stream_refused","ts":5,"stream":"st-0123456789abcdef"})"),
      FromUnix(10), 0);
  EXPECT_EQ(sr.result, audit::Result::kFailure);
}

TEST(AgentEvents, FloodIsCappedPerDeviceAndCountedIntoTheNextEvent) {
  audit::MemorySink sink;
  FakeClock clock(FromUnix(1700000000));
  Context ctx;
  ctx.clock = &clock;
  ctx.audit = &sink;
  AgentEventAuditor auditor(ctx);
  storage::Device other = Gateway();
  other.id = "1f8fad5b-d9cb-469f-a165-70867728950e";
  const DeviceMessage m = Event(kRefused);
  int recorded = 0;
  for (int i = 0; i < AgentEventAuditor::kPerDevicePerMinute + 50; ++i) {
    auto r = auditor.Record(Gateway(), m);
    ASSERT_TRUE(r);
    recorded += *r ? 1 : 0;
  }
  EXPECT_EQ(recorded, AgentEventAuditor::kPerDevicePerMinute);
  // Another gateway is not starved by the first one's flood.
  auto o = auditor.Record(other, m);
  ASSERT_TRUE(o);
  EXPECT_TRUE(*o);
  clock.Advance(std::chrono::seconds(61));
  auto next = auditor.Record(Gateway(), m);
  ASSERT_TRUE(next);
  EXPECT_TRUE(*next);
  auto all = sink.Find({});
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), static_cast<size_t>(AgentEventAuditor::kPerDevicePerMinute + 2));
  EXPECT_EQ(json::parse(all->back().details)["suppressed_before"], 50);
}

}  // namespace
}  // namespace torwart::server
