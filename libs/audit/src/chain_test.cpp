#include "torwart/audit/chain.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "torwart/audit/verify.hpp"

namespace torwart::audit {
namespace {

TimePoint At(int64_t us) {
  return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::microseconds(us)));
}

// A well-formed chain of n records built the way the store builds it.
std::vector<Record> MakeChain(int n) {
  std::vector<Record> out;
  std::string prev(kGenesisHash);
  for (int i = 1; i <= n; ++i) {
    Record r;
    r.event.seq = i;
    r.event.time = At(1'700'000'000'000'000 + i);
    r.event.actor = "alice";
    r.event.category = i % 2 ? "auth" : "device";
    r.event.type = i % 2 ? "auth.login" : "device.add";
    r.event.target = "t" + std::to_string(i);
    r.event.details = "{}";
    r.content_hash = ContentHash(r.event);
    r.event.hash = ChainHash(prev, r.content_hash);
    prev = r.event.hash;
    out.push_back(r);
  }
  return out;
}

struct Keys {
  CheckpointSigner signer;
  CheckpointVerifier verifier;
};

Keys MakeKeys() {
  auto pem = CheckpointSigner::GeneratePrivateKeyPem();
  EXPECT_TRUE(pem);
  auto signer = CheckpointSigner::FromPrivateKeyPem(*pem);
  EXPECT_TRUE(signer);
  auto verifier = CheckpointVerifier::FromPublicKeyPem(signer->public_key_pem());
  EXPECT_TRUE(verifier);
  return Keys{std::move(*signer), std::move(*verifier)};
}

VerifyReport Verify(const std::vector<Record>& records, const Keys* keys = nullptr,
                    std::vector<Checkpoint> cps = {}) {
  ChainVerifier v(keys ? &keys->verifier : nullptr, std::move(cps));
  for (const Record& r : records) v.Add(r);
  return v.Finish();
}

TEST(Chain, CanonicalEncodingCoversEveryField) {
  Event a;
  a.details = "{}";
  const std::string base = ContentHash(a);
  for (int field = 0; field < 12; ++field) {
    Event b = a;
    switch (field) {
      case 0: b.seq = 1; break;
      case 1: b.time = At(1); break;
      case 2: b.actor_type = ActorType::kUser; break;
      case 3: b.actor = "x"; break;
      case 4: b.organisation = "x"; break;
      case 5: b.source = "x"; break;
      case 6: b.category = "x"; break;
      case 7: b.type = "x"; break;
      case 8: b.target = "x"; break;
      case 9: b.result = Result::kDenied; break;
      case 10: b.reason = "x"; break;
      case 11: b.schema = 1; break;
    }
    EXPECT_NE(ContentHash(b), base) << "field " << field;
  }
  // Length prefixes: moving a byte between adjacent fields changes the encoding.
  Event c = a, d = a;
  c.actor = "ab";
  d.actor = "a";
  d.organisation = "b";
  EXPECT_NE(ContentHash(c), ContentHash(d));
  // The chain hash is not part of the content.
  Event h = a;
  h.hash = "ff";
  EXPECT_EQ(ContentHash(h), base);
}

TEST(Chain, ChainHashRejectsMalformedInput) {
  EXPECT_EQ(ChainHash("abc", std::string(64, '0')), "");
  EXPECT_EQ(ChainHash(std::string(64, 'z'), std::string(64, '0')), "");
  EXPECT_EQ(ChainHash(kGenesisHash, std::string(64, '0')).size(), 64u);
}

TEST(Chain, CheckpointSignatureVerifiesAndDetectsChanges) {
  Keys k = MakeKeys();
  auto c = k.signer.Sign(7, std::string(64, 'a'), At(123));
  ASSERT_TRUE(c);
  EXPECT_TRUE(k.verifier.Verify(*c));
  Checkpoint other = *c;
  other.seq = 8;
  EXPECT_FALSE(k.verifier.Verify(other));
  other = *c;
  other.hash[0] = 'b';
  EXPECT_FALSE(k.verifier.Verify(other));
  other = *c;
  other.signature = "!!";
  EXPECT_FALSE(k.verifier.Verify(other));
  Keys k2 = MakeKeys();
  EXPECT_FALSE(k2.verifier.Verify(*c));
  EXPECT_FALSE(CheckpointSigner::FromPrivateKeyPem("not a key"));
  EXPECT_FALSE(CheckpointVerifier::FromPublicKeyPem(""));
}

TEST(Verify, IntactChainVerifies) {
  Keys k = MakeKeys();
  auto chain = MakeChain(20);
  auto cp = k.signer.Sign(10, chain[9].event.hash, At(1));
  auto r = Verify(chain, &k, {*cp});
  EXPECT_TRUE(r.ok()) << ToJson(r);
  EXPECT_EQ(r.records, 20);
  EXPECT_EQ(r.anchored_through, 10);
}

TEST(Verify, ModifiedRecordIsFoundAtItsSeq) {
  auto chain = MakeChain(20);
  chain[6].event.reason = "edited";
  auto r = Verify(chain);
  ASSERT_EQ(r.problems.size(), 1u) << ToJson(r);
  EXPECT_EQ(r.problems[0].seq, 7);
  EXPECT_EQ(r.problems[0].kind, "modified");
}

TEST(Verify, RewrittenRecordBreaksTheNextLink) {
  auto chain = MakeChain(20);
  chain[6].event.reason = "edited";
  chain[6].content_hash = ContentHash(chain[6].event);
  chain[6].event.hash = ChainHash(chain[5].event.hash, chain[6].content_hash);
  auto r = Verify(chain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 8);
  EXPECT_EQ(r.problems[0].kind, "modified");
}

TEST(Verify, FullyRecomputedChainIsCaughtByTheSignedCheckpoint) {
  Keys k = MakeKeys();
  auto chain = MakeChain(20);
  auto cp = k.signer.Sign(15, chain[14].event.hash, At(1));
  chain[6].event.reason = "edited";
  std::string prev = chain[5].event.hash;
  for (size_t i = 6; i < chain.size(); ++i) {
    chain[i].content_hash = ContentHash(chain[i].event);
    chain[i].event.hash = ChainHash(prev, chain[i].content_hash);
    prev = chain[i].event.hash;
  }
  auto r = Verify(chain, &k, {*cp});
  ASSERT_EQ(r.problems.size(), 1u) << ToJson(r);
  EXPECT_EQ(r.problems[0].seq, 15);
  EXPECT_EQ(r.problems[0].kind, "modified");
}

TEST(Verify, DeletedRecordsAreAGap) {
  auto chain = MakeChain(20);
  chain.erase(chain.begin() + 9, chain.begin() + 12);  // seq 10..12
  auto r = Verify(chain);
  ASSERT_EQ(r.problems.size(), 1u) << ToJson(r);
  EXPECT_EQ(r.problems[0].seq, 10);
  EXPECT_EQ(r.problems[0].kind, "deleted");
}

TEST(Verify, DeletedAndRenumberedRecordsAreFound) {
  auto chain = MakeChain(20);
  chain.erase(chain.begin() + 9);  // seq 10; 11.. become 10..
  for (size_t i = 9; i < chain.size(); ++i) chain[i].event.seq -= 1;
  auto r = Verify(chain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 10) << ToJson(r);
  EXPECT_EQ(r.problems[0].kind, "deleted");
}

TEST(Verify, InsertedRecordIsFoundAtItsSeq) {
  auto chain = MakeChain(20);
  Record fake = chain[4];
  fake.event.reason = "forged";
  chain.insert(chain.begin() + 5, fake);  // becomes seq 6
  for (size_t i = 5; i < chain.size(); ++i) chain[i].event.seq = static_cast<int64_t>(i) + 1;
  auto r = Verify(chain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 6) << ToJson(r);
  EXPECT_EQ(r.problems[0].kind, "inserted");
}

TEST(Verify, SwappedRecordsAreReordered) {
  auto chain = MakeChain(20);
  std::swap(chain[4], chain[8]);
  chain[4].event.seq = 5;
  chain[8].event.seq = 9;
  auto r = Verify(chain);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 5) << ToJson(r);
  EXPECT_EQ(r.problems[0].kind, "reordered");
}

TEST(Verify, TruncationIsFoundByCheckpointOrKnownHead) {
  Keys k = MakeKeys();
  auto chain = MakeChain(20);
  auto cp = k.signer.Sign(20, chain[19].event.hash, At(1));
  chain.resize(17);
  auto r = Verify(chain, &k, {*cp});
  ASSERT_EQ(r.problems.size(), 1u) << ToJson(r);
  EXPECT_EQ(r.problems[0].seq, 18);
  EXPECT_EQ(r.problems[0].kind, "truncated");

  ChainVerifier v(nullptr, {}, 20);
  for (const Record& rec : chain) v.Add(rec);
  auto r2 = v.Finish();
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.problems[0].kind, "truncated");
}

TEST(Verify, PurgedRecordsNeedAPurgeEvent) {
  auto chain = MakeChain(6);
  // Blank record 2 (a "device" record) as retention does.
  auto blank = [](Record& r) {
    Record t;
    t.event.seq = r.event.seq;
    t.event.time = r.event.time;
    t.event.category = r.event.category;
    t.event.hash = r.event.hash;
    t.content_hash = r.content_hash;
    t.purged = true;
    r = t;
  };
  blank(chain[1]);
  auto r = Verify(chain);
  ASSERT_EQ(r.problems.size(), 1u) << ToJson(r);
  EXPECT_EQ(r.problems[0].seq, 2);

  // With an audit.purged event for the category after it, the chain verifies.
  Record p;
  p.event.seq = 7;
  p.event.time = At(1'700'000'000'000'100);
  p.event.category = "audit";
  p.event.type = "audit.purged";
  p.event.details = R"({"category":"device","before_us":1700000000000050,"count":1})";
  p.content_hash = ContentHash(p.event);
  p.event.hash = ChainHash(chain.back().event.hash, p.content_hash);
  chain.push_back(p);
  auto ok = Verify(chain);
  EXPECT_TRUE(ok.ok()) << ToJson(ok);
  EXPECT_EQ(ok.purged, 1);
}

}  // namespace
}  // namespace torwart::audit
