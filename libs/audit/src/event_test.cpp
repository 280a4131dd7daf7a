#include "torwart/audit/event.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace torwart::audit {
namespace {

using nlohmann::json;
using std::chrono::seconds;

TimePoint At(int64_t unix_seconds) { return FromUnix(unix_seconds); }

Event MakeEvent(TimePoint t, std::string actor, std::string type, std::string target,
                std::string category = "device") {
  Event e;
  e.time = t;
  e.actor_type = ActorType::kUser;
  e.actor = std::move(actor);
  e.type = std::move(type);
  e.target = std::move(target);
  e.category = std::move(category);
  e.details = "{}";
  return e;
}

std::vector<int64_t> Seqs(const Expected<std::vector<Event>>& events) {
  std::vector<int64_t> out;
  if (!events) return {-1};
  for (const Event& e : *events) out.push_back(e.seq);
  return out;
}

TEST(AuditEnumTest, StringsRoundTrip) {
  for (ActorType t :
       {ActorType::kUser, ActorType::kDevice, ActorType::kSystem, ActorType::kAnonymous}) {
    EXPECT_EQ(ActorTypeFromString(ToString(t)), t);
  }
  for (Result r : {Result::kSuccess, Result::kFailure, Result::kDenied}) {
    EXPECT_EQ(ResultFromString(ToString(r)), r);
  }
  EXPECT_EQ(ToString(ActorType::kAnonymous), "anonymous");
  EXPECT_EQ(ToString(Result::kDenied), "denied");
  EXPECT_FALSE(ActorTypeFromString("root"));
  EXPECT_FALSE(ResultFromString(""));
}

TEST(AuditJsonTest, StableFieldsAndRfc3339Time) {
  Event e;
  e.seq = 42;
  e.time = At(1795356412);  // 2026-11-22T14:06:52Z
  e.actor_type = ActorType::kDevice;
  e.actor = "5f0c6a0e-1a2b-4c3d-8e9f-001122334455";
  e.organisation = "acme";
  e.source = "192.0.2.7:51234";
  e.category = "pki";
  e.type = "pki.cmp.ir";
  e.target = "01ab";
  e.result = Result::kFailure;
  e.reason = "bad MAC";
  e.details = R"({"serial":"01ab","n":3})";

  json j = json::parse(ToJson(e), nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["seq"], 42);
  EXPECT_EQ(j["time"], "2026-11-22T14:06:52Z");
  EXPECT_EQ(j["actor_type"], "device");
  EXPECT_EQ(j["actor"], e.actor);
  EXPECT_EQ(j["organisation"], "acme");
  EXPECT_EQ(j["source"], "192.0.2.7:51234");
  EXPECT_EQ(j["category"], "pki");
  EXPECT_EQ(j["type"], "pki.cmp.ir");
  EXPECT_EQ(j["target"], "01ab");
  EXPECT_EQ(j["result"], "failure");
  EXPECT_EQ(j["reason"], "bad MAC");
  ASSERT_TRUE(j["details"].is_object());
  EXPECT_EQ(j["details"]["serial"], "01ab");
  EXPECT_EQ(j["details"]["n"], 3);
  EXPECT_EQ(j.size(), 13u);  // + schema (v2)
  EXPECT_EQ(j["schema"], kSchemaVersion);
  // Field order is the declaration order, so records diff and read well.
  EXPECT_TRUE(ToJson(e).starts_with(R"({"seq":42,"time":"2026-11-22T14:06:52Z","actor_type")"));
}

TEST(AuditJsonTest, DetailsThatAreNotAnObjectBecomeAString) {
  Event e;
  e.details = "not json {";
  json j = json::parse(ToJson(e), nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["details"], "not json {");

  e.details = "[1,2]";
  j = json::parse(ToJson(e), nullptr, false);
  EXPECT_EQ(j["details"], "[1,2]");

  e.details = "";
  j = json::parse(ToJson(e), nullptr, false);
  EXPECT_EQ(j["details"], json::object());
}

TEST(AuditJsonTest, InvalidUtf8DoesNotThrow) {
  Event e;
  e.actor = "bad\xff\xfe";
  e.details = "\xc3\x28";
  std::string text;
  ASSERT_NO_THROW(text = ToJson(e));
  json j = json::parse(text, nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j["actor"].get<std::string>().starts_with("bad"));
}

TEST(MemorySinkTest, AssignsSequenceNumbers) {
  MemorySink sink;
  Event e = MakeEvent(At(100), "alice", "auth.login", "alice", "auth");
  e.seq = 99;  // ignored: the sink assigns
  ASSERT_TRUE(sink.Append(e));
  ASSERT_TRUE(sink.Append(e));
  auto events = sink.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].seq, 1);
  EXPECT_EQ(events[1].seq, 2);
  EXPECT_EQ(events[1].actor, "alice");
}

TEST(MemorySinkTest, QueryFilters) {
  MemorySink sink;
  ASSERT_TRUE(sink.Append(MakeEvent(At(100), "alice", "device.create", "plc-1")));       // 1
  ASSERT_TRUE(sink.Append(MakeEvent(At(200), "bob", "device.revoke", "plc-1")));         // 2
  ASSERT_TRUE(sink.Append(MakeEvent(At(300), "alice", "pki.cmp.ir", "01ab", "pki")));    // 3
  ASSERT_TRUE(sink.Append(MakeEvent(At(400), "alice", "pki.crl", "", "pki")));           // 4
  ASSERT_TRUE(sink.Append(MakeEvent(At(500), "carol", "auth.login", "carol", "auth")));  // 5

  EXPECT_EQ(Seqs(sink.Find({})), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  Query q;
  q.actor = "alice";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{1, 3, 4}));
  q = {};
  q.target = "plc-1";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{1, 2}));
  q = {};
  q.type_prefix = "pki.";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{3, 4}));
  q.type_prefix = "device.rev";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{2}));
  q = {};
  q.category = "auth";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{5}));
  q = {};
  q.since = At(200);
  q.until = At(400);  // exclusive
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{2, 3}));
  q = {};
  q.after_seq = 2;
  q.limit = 2;
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{3, 4}));
  q = {};
  q.actor = "alice";
  q.category = "pki";
  q.since = At(350);
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{4}));
  q = {};
  q.actor = "nobody";
  EXPECT_EQ(Seqs(sink.Find(q)), (std::vector<int64_t>{}));
  q = {};
  q.limit = 0;
  auto bad = sink.Find(q);
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().Is(Errc::kInvalidArgument));
}

TEST(MemorySinkTest, ConcurrentAppendsGetDistinctSequenceNumbers) {
  MemorySink sink;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&sink] {
      for (int i = 0; i < 100; ++i) {
        ASSERT_TRUE(sink.Append(MakeEvent(At(i), "t", "x", "y")));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<int64_t> seqs;
  for (const Event& e : sink.events()) seqs.insert(e.seq);
  EXPECT_EQ(seqs.size(), 800u);
  EXPECT_EQ(*seqs.begin(), 1);
  EXPECT_EQ(*seqs.rbegin(), 800);
}

}  // namespace
}  // namespace torwart::audit
