// The storage contract for the hash-chained audit log: batches, chain hashes, checkpoints,
// retention purge with legal holds, and what the database itself refuses. Run over every backend.
#include <thread>

#include "store_test.hpp"
#include "torwart/audit/verify.hpp"

namespace torwart::storage::testing {
namespace {

const TimePoint kT0 = FromUnix(1795356412);  // 2026-11-22T14:06:52Z

audit::Event Ev(TimePoint t, std::string category, std::string type, std::string target = "") {
  audit::Event e;
  e.time = t;
  e.actor_type = audit::ActorType::kUser;
  e.actor = "alice";
  e.category = std::move(category);
  e.type = std::move(type);
  e.target = std::move(target);
  e.details = R"({"k":1})";
  return e;
}

audit::VerifyReport VerifyStore(AuditStore& a, const audit::CheckpointVerifier* key = nullptr) {
  auto cps = a.Checkpoints();
  EXPECT_TRUE(cps);
  audit::ChainVerifier v(key, cps ? *cps : std::vector<audit::Checkpoint>{});
  int64_t after = 0;
  while (true) {
    auto page = a.ReadRecords(after, 100);
    EXPECT_TRUE(page);
    if (!page || page->empty()) break;
    for (const auto& r : *page) v.Add(r);
    after = page->back().event.seq;
  }
  return v.Finish();
}

TEST_P(StoreTest, AuditBatchAssignsSeqAndChainsHashes) {
  std::vector<audit::Event> batch = {Ev(kT0, "auth", "auth.login"), Ev(kT0, "device", "device.add")};
  ASSERT_TRUE(store().audit().AppendBatch(batch));
  EXPECT_EQ(batch[0].seq, 1);
  EXPECT_EQ(batch[1].seq, 2);
  EXPECT_EQ(batch[0].hash, audit::ChainHash(audit::kGenesisHash, audit::ContentHash(batch[0])));
  EXPECT_EQ(batch[1].hash, audit::ChainHash(batch[0].hash, audit::ContentHash(batch[1])));
  ASSERT_TRUE(store().audit().Append(Ev(kT0, "auth", "auth.logout")));
  auto head = store().audit().Head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->first, 3);
  auto found = store().audit().Find({});
  ASSERT_TRUE(found);
  ASSERT_EQ(found->size(), 3u);
  EXPECT_EQ((*found)[1].hash, batch[1].hash);
  EXPECT_EQ((*found)[1].schema, audit::kSchemaVersion);
  EXPECT_TRUE(VerifyStore(store().audit()).ok());
}

TEST_P(StoreTest, AuditChainHoldsAcrossStoresAndThreads) {
  auto second = Open();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      AuditStore& a = t % 2 ? second->audit() : store().audit();
      for (int i = 0; i < 10; ++i) {
        std::vector<audit::Event> b = {Ev(kT0, "auth", "auth.login"), Ev(kT0, "auth", "x")};
        EXPECT_TRUE(a.AppendBatch(b));
      }
    });
  }
  for (auto& th : threads) th.join();
  auto report = VerifyStore(store().audit());
  EXPECT_TRUE(report.ok()) << audit::ToJson(report);
  EXPECT_EQ(report.records, 80);
}

TEST_P(StoreTest, AuditCheckpointsAreStoredAndAppendOnly) {
  ASSERT_TRUE(store().audit().Append(Ev(kT0, "auth", "auth.login")));
  auto pem = audit::CheckpointSigner::GeneratePrivateKeyPem();
  auto signer = audit::CheckpointSigner::FromPrivateKeyPem(*pem);
  ASSERT_TRUE(signer);
  auto head = store().audit().Head();
  auto cp = signer->Sign(head->first, head->second, kT0);
  ASSERT_TRUE(cp);
  ASSERT_TRUE(store().audit().AddCheckpoint(*cp));
  auto cps = store().audit().Checkpoints();
  ASSERT_TRUE(cps);
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ((*cps)[0].signature, cp->signature);
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(signer->public_key_pem());
  auto report = VerifyStore(store().audit(), &*verifier);
  EXPECT_TRUE(report.ok()) << audit::ToJson(report);
  EXPECT_EQ(report.anchored_through, 1);
  EXPECT_FALSE(RawSql("UPDATE audit_checkpoints SET hash = 'x'"));
  EXPECT_FALSE(RawSql("DELETE FROM audit_checkpoints"));
}

TEST_P(StoreTest, AuditPurgeBlanksExpiredRecordsExceptHeldOnesAndKeepsTheChain) {
  const TimePoint old = kT0 - std::chrono::hours(24 * 400);
  ASSERT_TRUE(store().audit().Append(Ev(old, "access", "access.granted", "plc-1")));   // 1
  ASSERT_TRUE(store().audit().Append(Ev(old, "access", "access.granted", "plc-2")));   // 2
  ASSERT_TRUE(store().audit().Append(Ev(old, "device", "device.add", "plc-1")));       // 3
  ASSERT_TRUE(store().audit().Append(Ev(kT0, "access", "access.granted", "plc-1")));   // 4
  AuditHold hold;
  hold.target = "plc-2";
  hold.reason = "litigation 42";
  hold.created_by = "auditor";
  hold.created = kT0;
  auto id = store().audit().AddHold(hold);
  ASSERT_TRUE(id);
  auto purged = store().audit().Purge("access", kT0 - std::chrono::hours(24 * 365));
  ASSERT_TRUE(purged) << purged.error().String();
  EXPECT_EQ(purged->count, 1);
  EXPECT_EQ(purged->held, 1);
  EXPECT_EQ(purged->first_seq, 1);
  auto left = store().audit().Find({});
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 3u);  // 2 (held), 3 (other category), 4 (young)
  EXPECT_EQ((*left)[0].seq, 2);

  // Without the audit.purged event the blanked record is reported; with it the chain verifies.
  auto bare = VerifyStore(store().audit());
  ASSERT_EQ(bare.problems.size(), 1u);
  EXPECT_EQ(bare.problems[0].seq, 1);
  audit::Event p = Ev(kT0, "audit", "audit.purged");
  p.details = R"({"category":"access","before_us":)" +
              std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                 (kT0 - std::chrono::hours(24 * 365)).time_since_epoch())
                                 .count()) +
              "}";
  ASSERT_TRUE(store().audit().Append(p));
  auto report = VerifyStore(store().audit());
  EXPECT_TRUE(report.ok()) << audit::ToJson(report);
  EXPECT_EQ(report.purged, 1);

  // Holds can be listed and removed; the purge gate is closed again afterwards.
  auto holds = store().audit().ListHolds();
  ASSERT_TRUE(holds);
  ASSERT_EQ(holds->size(), 1u);
  EXPECT_EQ((*holds)[0].reason, "litigation 42");
  ASSERT_TRUE(store().audit().RemoveHold(*id));
  EXPECT_FALSE(store().audit().RemoveHold(*id));
  EXPECT_FALSE(RawSql("UPDATE audit SET actor = 'mallory', purged = 1 WHERE seq = 2"));
}

TEST_P(StoreTest, AuditSizeIsMeasuredAndCapped) {
  auto used = store().audit().UsedBytes();
  ASSERT_TRUE(used);
  EXPECT_GT(*used, 0);
  ASSERT_TRUE(store().audit().SetMaxBytes(*used + 8192));
  audit::Event big = Ev(kT0, "auth", "auth.login");
  big.reason = std::string(64 * 1024, 'x');
  auto r = store().audit().Append(big);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kResourceExhausted)) << r.error().String();
  ASSERT_TRUE(store().audit().SetMaxBytes(0));
  EXPECT_TRUE(store().audit().Append(big));
  EXPECT_TRUE(VerifyStore(store().audit()).ok());
}

}  // namespace
}  // namespace torwart::storage::testing
