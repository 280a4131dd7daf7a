// The control-channel part of the storage contract: device online/offline, last seen,
// inventory and health documents. Runs over every backend (see store_test.hpp).
#include "store_test.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::storage::testing {
namespace {

const TimePoint kT0 = FromUnix(1795356412);

TEST_P(StoreTest, DeviceStatusTransitionsAreReported) {
  auto& repo = store().device_state();
  const std::string id = NewUuid();
  EXPECT_FALSE(repo.Get(id));
  auto first = repo.SetStatus(id, true, "0.1.0", kT0, true);
  ASSERT_TRUE(first) << first.error().String();
  EXPECT_TRUE(*first);
  auto again = repo.SetStatus(id, true, "", kT0 + std::chrono::seconds(5), true);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto off = repo.SetStatus(id, false, "", kT0 + std::chrono::seconds(9), false);
  ASSERT_TRUE(off);
  EXPECT_TRUE(*off);
  auto s = repo.Get(id);
  ASSERT_TRUE(s) << s.error().String();
  EXPECT_FALSE(s->online);
  EXPECT_EQ(s->agent_version, "0.1.0");                    // an empty version keeps the known one
  EXPECT_EQ(s->last_seen, kT0 + std::chrono::seconds(5));  // retained replay does not count
  EXPECT_EQ(s->status_changed, kT0 + std::chrono::seconds(9));
}

TEST_P(StoreTest, DeviceDocumentsAndMarkAllOffline) {
  auto& repo = store().device_state();
  const std::string a = NewUuid(), b = NewUuid();
  ASSERT_TRUE(repo.SetInventory(a, R"({"v":1,"hostname":"gw1"})", kT0, true));
  ASSERT_TRUE(repo.SetHealth(a, R"({"v":1,"cpu":3})", kT0 + std::chrono::seconds(1), true));
  ASSERT_TRUE(repo.SetStatus(a, true, "", kT0, true));
  ASSERT_TRUE(repo.SetStatus(b, true, "", kT0, true));
  auto n = repo.MarkAllOffline(kT0 + std::chrono::seconds(2));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2);
  auto s = repo.Get(a);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->online);
  EXPECT_EQ(s->inventory, R"({"v":1,"hostname":"gw1"})");
  EXPECT_EQ(s->health, R"({"v":1,"cpu":3})");
  EXPECT_EQ(s->health_time, kT0 + std::chrono::seconds(1));
  EXPECT_EQ(s->last_seen, kT0 + std::chrono::seconds(1));
  auto all = repo.List();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 2u);
}

}  // namespace
}  // namespace torwart::storage::testing
