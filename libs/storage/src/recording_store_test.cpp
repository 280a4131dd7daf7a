// The recordings index: insert once per stream, get, list newest first (per user), delete.
// Runs over every backend (see store_test.hpp).
#include "store_test.hpp"

namespace torwart::storage::testing {
namespace {

const TimePoint kT0 = FromUnix(1795356412);

StoredRecording Rec(const std::string& id, const std::string& user, TimePoint uploaded) {
  StoredRecording r;
  r.id = id;
  r.device_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  r.user = user;
  r.grant_id = "ar-0123456789ab";
  r.site = "plant-a";
  r.target = "plc1";
  r.protocol = "modbus";
  r.size = 1234;
  r.sha256 = std::string(64, 'a');
  r.uploaded = uploaded;
  r.status = "verified";
  r.cert_serial = "1f";
  return r;
}

TEST_P(StoreTest, RecordingsAreStoredOncePerStream) {
  auto& repo = store().recordings();
  StoredRecording a = Rec("st-0000000000000001", "tech", kT0);
  a.started = kT0 - std::chrono::seconds(60);
  ASSERT_TRUE(repo.Insert(a));
  auto again = repo.Insert(Rec("st-0000000000000001", "other", kT0));
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kAlreadyExists));
  auto got = repo.Get("st-0000000000000001");
  ASSERT_TRUE(got) << got.error().String();
  EXPECT_EQ(got->user, "tech");
  EXPECT_EQ(got->device_id, a.device_id);
  EXPECT_EQ(got->grant_id, "ar-0123456789ab");
  EXPECT_EQ(got->site, "plant-a");
  EXPECT_EQ(got->target, "plc1");
  EXPECT_EQ(got->protocol, "modbus");
  EXPECT_EQ(got->size, 1234);
  EXPECT_EQ(got->sha256, std::string(64, 'a'));
  EXPECT_EQ(got->uploaded, kT0);
  EXPECT_EQ(got->started, kT0 - std::chrono::seconds(60));
  EXPECT_EQ(got->status, "verified");
  EXPECT_EQ(got->cert_serial, "1f");
  auto missing = repo.Get("st-ffffffffffffffff");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().Is(Errc::kNotFound));
}

TEST_P(StoreTest, RecordingsListNewestFirstAndByUser) {
  auto& repo = store().recordings();
  StoredRecording t = Rec("st-0000000000000002", "tech", kT0 + std::chrono::seconds(2));
  t.status = "tampered_on_upload";
  t.problem = "chunk 3 does not chain";
  ASSERT_TRUE(repo.Insert(Rec("st-0000000000000001", "tech", kT0)));
  ASSERT_TRUE(repo.Insert(t));
  ASSERT_TRUE(repo.Insert(Rec("st-0000000000000003", "other", kT0 + std::chrono::seconds(1))));
  auto all = repo.List("", 100);
  ASSERT_TRUE(all) << all.error().String();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "st-0000000000000002");
  EXPECT_EQ((*all)[0].problem, "chunk 3 does not chain");
  EXPECT_FALSE((*all)[0].started.has_value());
  EXPECT_EQ((*all)[1].id, "st-0000000000000003");
  EXPECT_EQ((*all)[2].id, "st-0000000000000001");
  auto mine = repo.List("tech", 100);
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 2u);
  for (auto& r : *mine) EXPECT_EQ(r.user, "tech");
  auto one = repo.List("", 1);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);
  ASSERT_TRUE(repo.Delete("st-0000000000000002"));
  EXPECT_FALSE(repo.Get("st-0000000000000002"));
  auto gone = repo.Delete("st-0000000000000002");
  ASSERT_FALSE(gone);
  EXPECT_TRUE(gone.error().Is(Errc::kNotFound));
}

}  // namespace
}  // namespace torwart::storage::testing
