// The tunnel part of the storage contract: stream sessions (open, close once, list live/all,
// close everything left open by a previous run) and device quarantine. Runs over every backend
// (see store_test.hpp).
#include "store_test.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::storage::testing {
namespace {

using std::chrono::seconds;

const TimePoint kT0 = FromUnix(1795356412);

TunnelSession Session(const std::string& id, const std::string& user, TimePoint opened) {
  TunnelSession s;
  s.id = id;
  s.grant_id = "ar-0123456789ab";
  s.user = user;
  s.device_id = NewUuid();
  s.site = "werk-hamburg";
  s.target = "presse-1-plc";
  s.client = "192.0.2.7:51234";
  s.opened = opened;
  return s;
}

TEST_P(StoreTest, TunnelSessionsOpenCloseOnceAndList) {
  auto& repo = store().tunnels();
  ASSERT_TRUE(repo.Open(Session("st-0000000000000001", "anna", kT0)));
  ASSERT_TRUE(repo.Open(Session("st-0000000000000002", "ben", kT0 + seconds(1))));
  ASSERT_TRUE(repo.Open(Session("st-0000000000000003", "anna", kT0 + seconds(2))));
  auto dup = repo.Open(Session("st-0000000000000001", "anna", kT0));
  ASSERT_FALSE(dup);
  EXPECT_TRUE(dup.error().Is(Errc::kAlreadyExists)) << dup.error().String();

  auto closed = repo.Close("st-0000000000000001", kT0 + seconds(9), 100, 2000, "killed: test");
  ASSERT_TRUE(closed) << closed.error().String();
  auto again = repo.Close("st-0000000000000001", kT0 + seconds(10), 1, 1, "other");
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kFailedPrecondition));
  auto unknown = repo.Close("st-ffffffffffffffff", kT0, 0, 0, "x");
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().Is(Errc::kNotFound));

  auto s = repo.Get("st-0000000000000001");
  ASSERT_TRUE(s) << s.error().String();
  EXPECT_EQ(s->user, "anna");
  EXPECT_EQ(s->client, "192.0.2.7:51234");
  EXPECT_EQ(s->opened, kT0);
  EXPECT_EQ(s->closed, kT0 + seconds(9));  // the first close stays
  EXPECT_EQ(s->bytes_up, 100);
  EXPECT_EQ(s->bytes_down, 2000);
  EXPECT_EQ(s->end_reason, "killed: test");
  EXPECT_FALSE(repo.Get("st-ffffffffffffffff"));

  auto all = repo.List("", false, 100);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "st-0000000000000003");  // newest first
  auto live = repo.List("", true, 100);
  ASSERT_TRUE(live);
  EXPECT_EQ(live->size(), 2u);
  auto annas = repo.List("anna", false, 100);
  ASSERT_TRUE(annas);
  EXPECT_EQ(annas->size(), 2u);
  auto annas_live = repo.List("anna", true, 100);
  ASSERT_TRUE(annas_live);
  ASSERT_EQ(annas_live->size(), 1u);
  EXPECT_EQ((*annas_live)[0].id, "st-0000000000000003");
  auto one = repo.List("", false, 1);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);

  auto n = repo.CloseAllOpen(kT0 + seconds(20), "torwartd restarted");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2);
  live = repo.List("", true, 100);
  ASSERT_TRUE(live);
  EXPECT_TRUE(live->empty());
  auto b = repo.Get("st-0000000000000002");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->end_reason, "torwartd restarted");
  EXPECT_EQ(b->closed, kT0 + seconds(20));
}

TEST_P(StoreTest, DeviceQuarantineIsStoredAndSyncedPerState) {
  auto& repo = store().tunnels();
  const std::string id = NewUuid();
  auto none = repo.GetQuarantine(id);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  DeviceQuarantine q{id, true, "CVE-2026-1234 unpatched", "admin", kT0, false};
  ASSERT_TRUE(repo.SetQuarantine(q));
  // A confirmation for another state than the stored one changes nothing.
  ASSERT_TRUE(repo.MarkQuarantineSynced(id, false));
  auto got = repo.GetQuarantine(id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_TRUE((*got)->on);
  EXPECT_FALSE((*got)->synced);
  EXPECT_EQ((*got)->reason, "CVE-2026-1234 unpatched");
  EXPECT_EQ((*got)->by, "admin");
  EXPECT_EQ((*got)->since, kT0);
  ASSERT_TRUE(repo.MarkQuarantineSynced(id, true));
  got = repo.GetQuarantine(id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_TRUE((*got)->synced);

  // Lifting it replaces the record (and needs a new confirmation).
  ASSERT_TRUE(repo.SetQuarantine({id, false, "patched", "op", kT0 + seconds(60), false}));
  got = repo.GetQuarantine(id);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_FALSE((*got)->on);
  EXPECT_FALSE((*got)->synced);
  EXPECT_EQ((*got)->by, "op");

  ASSERT_TRUE(repo.SetQuarantine({NewUuid(), true, "", "admin", kT0, false}));
  auto all = repo.ListQuarantines();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 2u);
}

}  // namespace
}  // namespace torwart::storage::testing
