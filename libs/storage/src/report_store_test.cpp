// The report queries of the storage contract: tunnel sessions by time range (from inclusive,
// until exclusive), site and user, paged by (opened, id); access request ids of a site created
// in a range. Runs over every backend (see store_test.hpp).
#include "store_test.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::storage::testing {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::seconds;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, t)) << rfc3339;
  return t;
}

TunnelSession Session(const std::string& id, const std::string& user, const std::string& site,
                      TimePoint opened) {
  TunnelSession s;
  s.id = id;
  s.grant_id = "ar-0123456789ab";
  s.user = user;
  s.device_id = "d-" + site;
  s.site = site;
  s.target = "plc-1";
  s.client = "192.0.2.7:51234";
  s.opened = opened;
  return s;
}

std::vector<std::string> Ids(const std::vector<TunnelSession>& v) {
  std::vector<std::string> out;
  for (const auto& s : v) out.push_back(s.id);
  return out;
}

TEST_P(StoreTest, ReportSessionsByRangeSiteAndUserOldestFirst) {
  auto& t = store().tunnels();
  const TimePoint march = At("2026-03-01T00:00:00Z"), april = At("2026-04-01T00:00:00Z");
  ASSERT_TRUE(t.Open(Session("st-0000000000000001", "anna", "north", march - microseconds(1))));
  ASSERT_TRUE(t.Open(Session("st-0000000000000002", "anna", "north", march)));  // first instant
  ASSERT_TRUE(t.Open(Session("st-0000000000000003", "ben", "north", march + hours(5))));
  ASSERT_TRUE(t.Open(Session("st-0000000000000004", "anna", "south", march + hours(6))));
  ASSERT_TRUE(t.Open(Session("st-0000000000000005", "anna", "north", april - microseconds(1))));
  ASSERT_TRUE(t.Open(Session("st-0000000000000006", "anna", "north", april)));  // next month
  // Spans the boundary: it belongs to the month it was opened in.
  ASSERT_TRUE(t.Close("st-0000000000000005", april + hours(2), 10, 20, "closed"));

  SessionRange r;
  r.from = march;
  r.until = april;
  auto all = store().reports().Sessions(r);
  ASSERT_TRUE(all) << all.error().String();
  EXPECT_EQ(Ids(*all), (std::vector<std::string>{"st-0000000000000002", "st-0000000000000003",
                                                 "st-0000000000000004", "st-0000000000000005"}));
  EXPECT_EQ((*all)[3].closed, april + hours(2));
  EXPECT_EQ((*all)[3].bytes_down, 20);

  r.site = "north";
  auto north = store().reports().Sessions(r);
  ASSERT_TRUE(north);
  EXPECT_EQ(Ids(*north), (std::vector<std::string>{"st-0000000000000002", "st-0000000000000003",
                                                   "st-0000000000000005"}));
  r.user = "anna";
  auto anna_north = store().reports().Sessions(r);
  ASSERT_TRUE(anna_north);
  EXPECT_EQ(Ids(*anna_north),
            (std::vector<std::string>{"st-0000000000000002", "st-0000000000000005"}));

  SessionRange everything;
  everything.user = "anna";
  auto anna = store().reports().Sessions(everything);
  ASSERT_TRUE(anna);
  EXPECT_EQ(anna->size(), 5u);

  SessionRange empty;
  empty.from = april + hours(1);
  empty.until = april + hours(2);
  auto none = store().reports().Sessions(empty);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  empty.limit = 0;
  EXPECT_FALSE(store().reports().Sessions(empty));
}

TEST_P(StoreTest, ReportSessionsPageWithoutGapsOrRepeatsAlsoForEqualTimes) {
  auto& t = store().tunnels();
  const TimePoint t0 = At("2026-05-10T08:00:00Z");
  std::vector<std::string> want;
  for (int i = 0; i < 7; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "st-%016x", 0x10 + i);
    want.push_back(id);
    // Pairs share an opened time: the cursor must use the id as tie-breaker.
    ASSERT_TRUE(t.Open(Session(id, "anna", "north", t0 + seconds(i / 2))));
  }
  SessionRange r;
  r.limit = 2;
  std::vector<std::string> got;
  for (int page = 0; page < 10; ++page) {
    auto rows = store().reports().Sessions(r);
    ASSERT_TRUE(rows) << rows.error().String();
    for (const auto& s : *rows) got.push_back(s.id);
    if (static_cast<int>(rows->size()) < r.limit) break;
    r.after = std::make_pair(rows->back().opened, rows->back().id);
  }
  EXPECT_EQ(got, want);
}

TEST_P(StoreTest, ReportAccessRequestIdsBySiteAndCreation) {
  const TimePoint march = At("2026-03-01T00:00:00Z"), april = At("2026-04-01T00:00:00Z");
  auto add = [&](const std::string& id, const std::string& site, TimePoint created) {
    AccessRequest r;
    r.id = id;
    r.requester = "anna";
    r.site = site;
    r.target = "plc-1";
    r.reason = "maintenance";
    r.duration = hours(1);
    r.created = created;
    auto ok = store().access().Create(r);
    ASSERT_TRUE(ok) << ok.error().String();
  };
  add("ar-000000000001", "north", march - seconds(1));
  add("ar-000000000002", "north", march);
  add("ar-000000000003", "south", march + hours(1));
  add("ar-000000000004", "north", april - seconds(1));
  add("ar-000000000005", "north", april);
  auto north = store().reports().AccessRequestIds("north", march, april, 100);
  ASSERT_TRUE(north) << north.error().String();
  EXPECT_EQ(*north, (std::vector<std::string>{"ar-000000000002", "ar-000000000004"}));
  auto any = store().reports().AccessRequestIds("", march, april, 100);
  ASSERT_TRUE(any);
  EXPECT_EQ(any->size(), 3u);
  auto capped = store().reports().AccessRequestIds("", march, april, 1);
  ASSERT_TRUE(capped);
  EXPECT_EQ(*capped, std::vector<std::string>{"ar-000000000002"});
}

}  // namespace
}  // namespace torwart::storage::testing
