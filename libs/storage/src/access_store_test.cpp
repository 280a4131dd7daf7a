// The storage contract for policy versions, access requests and the webhook outbox, run over
// every backend (StoreTest is instantiated per backend in platform/<backend>/*_test.cpp).
#include <thread>

#include "store_test.hpp"

namespace torwart::storage::testing {
namespace {

const TimePoint kT0 = FromUnix(1795356412);  // 2026-11-22T14:06:52Z

TEST_P(StoreTest, PolicyVersionsAreNumberedAndOneIsActive) {
  auto none = store().policies().Active();
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  PolicyVersion v{0, "{\"version\": 1}", "admin", kT0, false, ""};
  auto n1 = store().policies().Add(v, true);
  ASSERT_TRUE(n1) << n1.error().String();
  EXPECT_EQ(*n1, 1);
  v.text = "{\"version\": 1, \"rules\": []}";
  auto n2 = store().policies().Add(v, false);  // stored, not active (e.g. refused later)
  ASSERT_TRUE(n2);
  EXPECT_EQ(*n2, 2);
  auto active = store().policies().Active();
  ASSERT_TRUE(active && active->has_value());
  EXPECT_EQ((*active)->version, 1);
  v.comment = "restored from version 1";
  auto n3 = store().policies().Add(v, true);
  ASSERT_TRUE(n3);
  active = store().policies().Active();
  ASSERT_TRUE(active && active->has_value());
  EXPECT_EQ((*active)->version, 3);
  EXPECT_EQ((*active)->comment, "restored from version 1");
  auto list = store().policies().List();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].version, 3);
  EXPECT_TRUE((*list)[0].active);
  EXPECT_FALSE((*list)[2].active);
  auto got = store().policies().Get(1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->text, "{\"version\": 1}");
  EXPECT_TRUE(store().policies().Get(9).error().Is(Errc::kNotFound));
}

AccessRequest SampleRequest(const std::string& id) {
  AccessRequest r;
  r.id = id;
  r.requester = "anna@example.com";
  r.site = "filiale-kiel";
  r.target = "kasse-kiel-1";
  r.scope = "modbus:read";
  r.scopes = {"modbus:read"};
  r.reason = "till frozen";
  r.duration = std::chrono::hours(2);
  r.rule_id = "stores-nord";
  r.policy_version = 3;
  r.approvals_required = 2;
  r.approver_group = "leads";
  r.created = kT0;
  return r;
}

TEST_P(StoreTest, AccessRequestsRoundTripWithOptimisticConcurrency) {
  AccessRequest r = SampleRequest("ar-0001");
  ASSERT_TRUE(store().access().Create(r));
  EXPECT_TRUE(store().access().Create(r).error().Is(Errc::kAlreadyExists));
  auto got = store().access().Get("ar-0001");
  ASSERT_TRUE(got) << got.error().String();
  EXPECT_EQ(got->scopes, r.scopes);
  EXPECT_EQ(got->duration, std::chrono::hours(2));
  EXPECT_EQ(got->revision, 0);
  EXPECT_FALSE(got->starts.has_value());

  got->approvals.push_back({"petra", kT0 + std::chrono::minutes(1), std::chrono::minutes(30), "ok"});
  got->status = "active";
  got->starts = kT0 + std::chrono::minutes(1);
  got->ends = *got->starts + std::chrono::minutes(30);
  ASSERT_TRUE(store().access().Update(*got));
  // A second writer holding the old revision loses.
  AccessRequest stale = *got;
  stale.status = "denied";
  EXPECT_TRUE(store().access().Update(stale).error().Is(Errc::kFailedPrecondition));

  auto again = store().access().Get("ar-0001");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, "active");
  EXPECT_EQ(again->revision, 1);
  ASSERT_EQ(again->approvals.size(), 1u);
  EXPECT_EQ(again->approvals[0].approver, "petra");
  EXPECT_EQ(again->approvals[0].shorten, std::chrono::minutes(30));
  EXPECT_EQ(again->ends, kT0 + std::chrono::minutes(31));

  AccessRequest other = SampleRequest("ar-0002");
  other.requester = "ben@example.com";
  other.created = kT0 + std::chrono::hours(1);
  ASSERT_TRUE(store().access().Create(other));
  auto all = store().access().List("", "", 100);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "ar-0002");  // newest first
  auto bens = store().access().List("ben@example.com", "", 100);
  ASSERT_TRUE(bens);
  ASSERT_EQ(bens->size(), 1u);
  auto pending = store().access().List("", "pending", 100);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].id, "ar-0002");
  EXPECT_TRUE(store().access().Get("nope").error().Is(Errc::kNotFound));
}

TEST_P(StoreTest, OutboxDeliversDueItemsInOrder) {
  OutboxItem a{0, "http://127.0.0.1:1/hook", "access.requested", "{}", 0, kT0, kT0, "pending", ""};
  auto ida = store().outbox().Enqueue(a);
  ASSERT_TRUE(ida);
  OutboxItem b = a;
  b.next_attempt = kT0 + std::chrono::seconds(30);
  auto idb = store().outbox().Enqueue(b);
  ASSERT_TRUE(idb);
  auto due = store().outbox().Due(kT0, 10);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].id, *ida);
  OutboxItem done = (*due)[0];
  done.attempts = 1;
  done.status = "delivered";
  ASSERT_TRUE(store().outbox().Record(done));
  due = store().outbox().Due(kT0 + std::chrono::minutes(1), 10);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].id, *idb);
  auto list = store().outbox().List(10);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].status, "delivered");
}

}  // namespace
}  // namespace torwart::storage::testing
