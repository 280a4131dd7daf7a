// The contract of every storage backend. Backend-specific tests live beside each backend.
#include "store_test.hpp"

#include <atomic>
#include <set>
#include <thread>
#include <tuple>

#include "torwart/audit/event.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::storage::testing {

void StoreTest::SetUp() {
  location_ = backend().create();
  store_ = Open();
  ASSERT_NE(store_, nullptr);
}

void StoreTest::TearDown() {
  store_.reset();
  if (!location_.empty()) backend().destroy(location_);
}

std::unique_ptr<Store> StoreTest::Open() {
  auto s = backend().open(location_);
  EXPECT_TRUE(s) << s.error().String();
  if (!s) return nullptr;
  return std::move(*s);
}

Expected<std::vector<std::string>> StoreTest::RawSql(const std::string& sql) {
  return backend().raw_sql(location_, sql);
}

namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::seconds;

const TimePoint kT0 = FromUnix(1795356412);  // 2026-11-22T14:06:52Z

#define EXPECT_OK(expr)                                      \
  do {                                                       \
    auto&& r_ = (expr);                                      \
    EXPECT_TRUE(r_) << #expr << ": " << r_.error().String(); \
  } while (0)
#define ASSERT_OK(expr)                                      \
  do {                                                       \
    auto&& r_ = (expr);                                      \
    ASSERT_TRUE(r_) << #expr << ": " << r_.error().String(); \
  } while (0)

template <class T>
void ExpectError(const Expected<T>& r, Errc code) {
  ASSERT_FALSE(r) << "expected an error";
  EXPECT_TRUE(r.error().Is(code)) << r.error().String();
}

auto Tie(const User& u) {
  return std::tie(u.id, u.name, u.role, u.password_hash, u.must_change_password, u.disabled,
                  u.failed_logins, u.locked_until, u.created);
}
auto Tie(const Device& d) {
  return std::tie(d.id, d.name, d.site, d.tags, d.status, d.machine_fingerprint, d.bind_machine,
                  d.created);
}
auto Tie(const Certificate& c) {
  return std::tie(c.serial, c.device_id, c.subject, c.not_before, c.not_after, c.pem, c.status,
                  c.revoked_at, c.revocation_reason, c.fingerprint);
}
auto Tie(const audit::Event& e) {
  return std::tie(e.seq, e.time, e.actor_type, e.actor, e.organisation, e.source, e.category,
                  e.type, e.target, e.result, e.reason, e.details);
}

User MakeUser(std::string name) {
  User u;
  u.id = NewUuid();
  u.name = std::move(name);
  u.role = "operator";
  u.password_hash = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA";
  u.created = kT0;
  return u;
}

Device MakeDevice(std::string name) {
  Device d;
  d.id = NewUuid();
  d.name = std::move(name);
  d.site = "Werk 2";
  d.tags = {"line-3", "plc"};
  d.created = kT0;
  return d;
}

Certificate MakeCert(std::string serial, const std::string& device_id, TimePoint not_after) {
  Certificate c;
  c.serial = std::move(serial);
  c.device_id = device_id;
  c.subject = "CN=" + device_id;
  c.not_before = not_after - hours(24 * 365);
  c.not_after = not_after;
  c.pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  return c;
}

audit::Event MakeEvent(TimePoint t, std::string actor, std::string type, std::string target,
                       std::string category) {
  audit::Event e;
  e.time = t;
  e.actor_type = audit::ActorType::kUser;
  e.actor = std::move(actor);
  e.organisation = "acme";
  e.source = "192.0.2.1:40000";
  e.type = std::move(type);
  e.target = std::move(target);
  e.category = std::move(category);
  e.details = R"({"k":"v"})";
  return e;
}

std::vector<int64_t> Seqs(const Expected<std::vector<audit::Event>>& events) {
  if (!events) return {-1};
  std::vector<int64_t> out;
  for (const auto& e : *events) out.push_back(e.seq);
  return out;
}

// --- users ---

TEST_P(StoreTest, UsersCreateGetUpdateList) {
  User alice = MakeUser("alice");
  alice.created = kT0 + microseconds(123456);  // sub-second times keep microseconds
  User bob = MakeUser("bob");
  bob.role = "admin";
  bob.must_change_password = true;
  ASSERT_OK(store().users().Create(bob));
  ASSERT_OK(store().users().Create(alice));

  auto got = store().users().GetByName("alice");
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(alice));
  got = store().users().GetById(bob.id);
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(bob));

  bob.failed_logins = 3;
  bob.locked_until = kT0 + seconds(900);
  bob.disabled = true;
  bob.must_change_password = false;
  bob.password_hash = "new";
  ASSERT_OK(store().users().Update(bob));
  got = store().users().GetById(bob.id);
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(bob));
  bob.locked_until.reset();
  ASSERT_OK(store().users().Update(bob));
  EXPECT_FALSE(store().users().GetById(bob.id)->locked_until);

  auto all = store().users().List();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "alice");
  EXPECT_EQ((*all)[1].name, "bob");
  auto count = store().users().Count();
  ASSERT_OK(count);
  EXPECT_EQ(*count, 2);

  ExpectError(store().users().GetByName("carol"), Errc::kNotFound);
  ExpectError(store().users().GetById(NewUuid()), Errc::kNotFound);
  ExpectError(store().users().Update(MakeUser("ghost")), Errc::kNotFound);
}

TEST_P(StoreTest, UserNamesAreUnique) {
  ASSERT_OK(store().users().Create(MakeUser("alice")));
  auto dup = store().users().Create(MakeUser("alice"));
  ExpectError(dup, Errc::kAlreadyExists);
  EXPECT_TRUE(dup.error().message().starts_with("inserting user")) << dup.error().message();

  User bob = MakeUser("bob");
  ASSERT_OK(store().users().Create(bob));
  ExpectError(store().users().Create(bob), Errc::kAlreadyExists);  // same id
  bob.name = "alice";
  ExpectError(store().users().Update(bob), Errc::kAlreadyExists);
  EXPECT_EQ(*store().users().Count(), 2);
}

// --- sessions ---

TEST_P(StoreTest, SessionsLifecycle) {
  User alice = MakeUser("alice");
  ASSERT_OK(store().users().Create(alice));
  Session s{.token_hash = std::string(64, 'a'),
            .user_id = alice.id,
            .created = kT0,
            .expires = kT0 + hours(8),
            .last_used = kT0};
  Session s2 = s;
  s2.token_hash = std::string(64, 'b');
  ASSERT_OK(store().sessions().Create(s));
  ASSERT_OK(store().sessions().Create(s2));
  ExpectError(store().sessions().Create(s), Errc::kAlreadyExists);

  auto got = store().sessions().Get(s.token_hash);
  ASSERT_OK(got);
  EXPECT_EQ(got->user_id, alice.id);
  EXPECT_EQ(got->created, kT0);
  EXPECT_EQ(got->expires, kT0 + hours(8));

  ASSERT_OK(store().sessions().Touch(s.token_hash, kT0 + seconds(60)));
  EXPECT_EQ(store().sessions().Get(s.token_hash)->last_used, kT0 + seconds(60));
  ExpectError(store().sessions().Touch("nope", kT0), Errc::kNotFound);

  ASSERT_OK(store().sessions().Delete(s.token_hash));
  ExpectError(store().sessions().Get(s.token_hash), Errc::kNotFound);
  EXPECT_OK(store().sessions().Delete(s.token_hash));  // idempotent
  EXPECT_OK(store().sessions().Get(s2.token_hash));
  ASSERT_OK(store().sessions().DeleteForUser(alice.id));
  ExpectError(store().sessions().Get(s2.token_hash), Errc::kNotFound);
}

TEST_P(StoreTest, SessionNeedsAnExistingUser) {
  Session s{
      .token_hash = "h", .user_id = NewUuid(), .created = kT0, .expires = kT0, .last_used = kT0};
  auto r = store().sessions().Create(s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kFailedPrecondition)) << r.error().String();
}

// --- devices ---

TEST_P(StoreTest, DevicesCreateGetUpdateList) {
  Device plc = MakeDevice("plc-1");
  plc.tags = {"halle \"3\"", "ümlaut", ""};
  Device hmi = MakeDevice("hmi-1");
  hmi.tags = {};
  ASSERT_OK(store().devices().Create(plc));
  ASSERT_OK(store().devices().Create(hmi));

  auto got = store().devices().GetByName("plc-1");
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(plc));
  got = store().devices().GetById(hmi.id);
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(hmi));

  plc.status = "enrolled";
  plc.machine_fingerprint = "sha256:abcd";
  plc.bind_machine = true;
  plc.tags = {"moved"};
  plc.site = "Werk 3";
  ASSERT_OK(store().devices().Update(plc));
  got = store().devices().GetById(plc.id);
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(plc));

  auto all = store().devices().List();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "hmi-1");
  EXPECT_EQ((*all)[1].name, "plc-1");

  ExpectError(store().devices().GetByName("nope"), Errc::kNotFound);
  ExpectError(store().devices().GetById(NewUuid()), Errc::kNotFound);
  ExpectError(store().devices().Update(MakeDevice("ghost")), Errc::kNotFound);
}

TEST_P(StoreTest, DeviceNamesAreUnique) {
  Device a = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(a));
  auto dup = store().devices().Create(MakeDevice("plc-1"));
  ExpectError(dup, Errc::kAlreadyExists);
  EXPECT_TRUE(dup.error().message().starts_with("inserting device")) << dup.error().message();
  Device b = MakeDevice("plc-2");
  ASSERT_OK(store().devices().Create(b));
  b.name = "plc-1";
  ExpectError(store().devices().Update(b), Errc::kAlreadyExists);
}

// --- enrollments ---

Enrollment MakeEnrollment(std::string reference, const std::string& device_id) {
  return Enrollment{.reference = std::move(reference),
                    .secret = "s3cret-s3cret",
                    .device_id = device_id,
                    .created = kT0,
                    .expires = kT0 + hours(24),
                    .used = std::nullopt};
}

TEST_P(StoreTest, EnrollmentConsumeOnceClearsTheSecret) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-1", device.id)));
  ExpectError(store().enrollments().Create(MakeEnrollment("ref-1", device.id)),
              Errc::kAlreadyExists);
  auto got = store().enrollments().Get("ref-1");
  ASSERT_OK(got);
  EXPECT_EQ(got->secret, "s3cret-s3cret");
  EXPECT_EQ(got->device_id, device.id);
  EXPECT_EQ(got->expires, kT0 + hours(24));
  EXPECT_FALSE(got->used);

  ASSERT_OK(store().enrollments().Consume("ref-1", kT0 + seconds(10)));
  got = store().enrollments().Get("ref-1");
  ASSERT_OK(got);
  EXPECT_EQ(got->secret, "");
  EXPECT_EQ(got->used, kT0 + seconds(10));

  ExpectError(store().enrollments().Consume("ref-1", kT0 + seconds(20)), Errc::kFailedPrecondition);
  EXPECT_EQ(store().enrollments().Get("ref-1")->used, kT0 + seconds(10));
  ExpectError(store().enrollments().Consume("nope", kT0), Errc::kNotFound);
  ExpectError(store().enrollments().Get("nope"), Errc::kNotFound);
}

TEST_P(StoreTest, ExpiredEnrollmentCannotBeConsumed) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-1", device.id)));
  ExpectError(store().enrollments().Consume("ref-1", kT0 + hours(24)), Errc::kExpired);
  auto got = store().enrollments().Get("ref-1");
  ASSERT_OK(got);
  EXPECT_FALSE(got->used);
}

TEST_P(StoreTest, EnrollmentNeedsAnExistingDevice) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  Enrollment e = MakeEnrollment("ref-1", device.id);
  e.device_id = NewUuid();
  ExpectError(store().enrollments().Create(e), Errc::kFailedPrecondition);
}

TEST_P(StoreTest, EnrollmentCancelForDeviceInvalidatesUnusedOnly) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  Device other = MakeDevice("plc-2");
  ASSERT_OK(store().devices().Create(other));
  Enrollment theirs = MakeEnrollment("ref-other", other.id);
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-used", device.id)));
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-open", device.id)));
  ASSERT_OK(store().enrollments().Create(theirs));
  ASSERT_OK(store().enrollments().Consume("ref-used", kT0 + seconds(1)));

  ASSERT_OK(store().enrollments().CancelForDevice(device.id, kT0 + seconds(5)));
  EXPECT_EQ(store().enrollments().Get("ref-used")->used, kT0 + seconds(1));
  auto open = store().enrollments().Get("ref-open");
  ASSERT_OK(open);
  EXPECT_EQ(open->used, kT0 + seconds(5));
  EXPECT_EQ(open->secret, "");
  ExpectError(store().enrollments().Consume("ref-open", kT0 + seconds(6)),
              Errc::kFailedPrecondition);
  EXPECT_OK(store().enrollments().Consume("ref-other", kT0 + seconds(6)));
}

// Counts winners and losers of 8 threads consuming one enrollment through `stores[i % n]`.
void RaceConsume(const std::vector<Store*>& stores, int* winners, int* losers, int* others) {
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::atomic<int> win{0}, lose{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    Store* s = stores[static_cast<size_t>(i) % stores.size()];
    threads.emplace_back([s, &go, &win, &lose, &other] {
      while (!go.load()) std::this_thread::yield();
      auto r = s->enrollments().Consume("ref-race", kT0 + seconds(1));
      if (r) {
        ++win;
      } else if (r.error().Is(Errc::kFailedPrecondition)) {
        ++lose;
      } else {
        ++other;
        ADD_FAILURE() << r.error().String();
      }
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  *winners = win;
  *losers = lose;
  *others = other;
}

TEST_P(StoreTest, EnrollmentConcurrentConsumeHasExactlyOneWinner) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-race", device.id)));
  int winners = 0, losers = 0, others = 0;
  RaceConsume({&store()}, &winners, &losers, &others);
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(losers, 7);
  EXPECT_EQ(others, 0);
}

TEST_P(StoreTest, EnrollmentConcurrentConsumeAcrossConnectionsHasExactlyOneWinner) {
  Device device = MakeDevice("plc-1");
  ASSERT_OK(store().devices().Create(device));
  ASSERT_OK(store().enrollments().Create(MakeEnrollment("ref-race", device.id)));
  std::vector<std::unique_ptr<Store>> owned;
  std::vector<Store*> stores;
  for (int i = 0; i < 8; ++i) {
    owned.push_back(Open());
    ASSERT_NE(owned.back(), nullptr);
    stores.push_back(owned.back().get());
  }
  int winners = 0, losers = 0, others = 0;
  RaceConsume(stores, &winners, &losers, &others);
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(losers, 7);
  EXPECT_EQ(others, 0);
  EXPECT_EQ(store().enrollments().Get("ref-race")->secret, "");
}

// --- certificates ---

TEST_P(StoreTest, CertificatesInsertRevokeAndListRevoked) {
  const TimePoint now = kT0;
  const std::string dev = NewUuid();
  Certificate valid = MakeCert("0a", dev, now + hours(24 * 30));
  Certificate revoked = MakeCert("0b", dev, now + hours(24 * 30));
  revoked.fingerprint = "sha256:ffff";
  Certificate expired = MakeCert("0c", dev, now - hours(1));
  Certificate foreign = MakeCert("0d", NewUuid(), now + hours(1));
  for (const auto& c : {valid, revoked, expired, foreign})
    ASSERT_OK(store().certificates().Insert(c));
  ExpectError(store().certificates().Insert(valid), Errc::kAlreadyExists);

  auto got = store().certificates().GetBySerial("0b");
  ASSERT_OK(got);
  EXPECT_EQ(Tie(*got), Tie(revoked));
  ExpectError(store().certificates().GetBySerial("ff"), Errc::kNotFound);

  auto mine = store().certificates().ListForDevice(dev);
  ASSERT_OK(mine);
  std::set<std::string> serials;
  for (const auto& c : *mine) serials.insert(c.serial);
  EXPECT_EQ(serials, (std::set<std::string>{"0a", "0b", "0c"}));

  ASSERT_OK(store().certificates().Revoke("0b", 1, now - seconds(30)));  // keyCompromise
  ASSERT_OK(store().certificates().Revoke("0c", 4, now - seconds(20)));
  // Idempotent: the first revocation's time and reason stay.
  ASSERT_OK(store().certificates().Revoke("0b", 5, now));
  got = store().certificates().GetBySerial("0b");
  ASSERT_OK(got);
  EXPECT_EQ(got->status, "revoked");
  EXPECT_EQ(got->revocation_reason, 1);
  EXPECT_EQ(got->revoked_at, now - seconds(30));
  ExpectError(store().certificates().Revoke("ff", 0, now), Errc::kNotFound);

  auto crl = store().certificates().ListRevoked(now);
  ASSERT_OK(crl);
  ASSERT_EQ(crl->size(), 1u);  // "0c" expired: it may leave the CRL
  EXPECT_EQ((*crl)[0].serial, "0b");
  crl = store().certificates().ListRevoked(now - hours(2));
  ASSERT_OK(crl);
  EXPECT_EQ(crl->size(), 2u);
  EXPECT_EQ(store().certificates().GetBySerial("0a")->status, "valid");
}

// --- kv ---

TEST_P(StoreTest, KeyValueGetPutIncrement) {
  auto missing = store().kv().Get("crl_number");
  ASSERT_OK(missing);
  EXPECT_FALSE(*missing);
  EXPECT_EQ(*store().kv().Increment("crl_number"), 1);
  EXPECT_EQ(*store().kv().Increment("crl_number"), 2);
  EXPECT_EQ(**store().kv().Get("crl_number"), "2");

  ASSERT_OK(store().kv().Put("marker", "first-start-done"));
  ASSERT_OK(store().kv().Put("marker", "again"));
  EXPECT_EQ(**store().kv().Get("marker"), "again");
  ExpectError(store().kv().Increment("marker"), Errc::kFailedPrecondition);
  EXPECT_EQ(**store().kv().Get("marker"), "again");

  ASSERT_OK(store().kv().Put("n", "41"));
  EXPECT_EQ(*store().kv().Increment("n"), 42);
}

TEST_P(StoreTest, ConcurrentIncrementsNeverRepeat) {
  std::vector<std::unique_ptr<Store>> owned;
  owned.push_back(Open());
  ASSERT_NE(owned.back(), nullptr);
  std::vector<Store*> stores{&store(), owned.back().get()};
  std::mutex mu;
  std::vector<int64_t> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    Store* s = stores[static_cast<size_t>(t) % 2];
    threads.emplace_back([s, &mu, &seen] {
      for (int i = 0; i < 25; ++i) {
        auto v = s->kv().Increment("counter");
        ASSERT_TRUE(v) << v.error().String();
        std::lock_guard lock(mu);
        seen.push_back(*v);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<int64_t> distinct(seen.begin(), seen.end());
  EXPECT_EQ(distinct.size(), 200u);
  EXPECT_EQ(*distinct.rbegin(), 200);
}

// --- audit ---

TEST_P(StoreTest, AuditAppendAssignsSeqAndRoundTrips) {
  audit::Event e = MakeEvent(kT0 + microseconds(5), "alice", "device.create", "plc-1", "device");
  e.seq = 77;  // ignored
  e.actor_type = audit::ActorType::kAnonymous;
  e.result = audit::Result::kDenied;
  e.reason = "no grant";
  ASSERT_OK(store().audit().Append(e));
  ASSERT_OK(store().audit().Append(e));
  auto found = store().audit().Find({});
  ASSERT_OK(found);
  ASSERT_EQ(found->size(), 2u);
  e.seq = 1;
  EXPECT_EQ(Tie((*found)[0]), Tie(e));
  EXPECT_EQ((*found)[1].seq, 2);
}

TEST_P(StoreTest, AuditFindFiltersLikeMemorySink) {
  audit::MemorySink memory;
  const std::vector<audit::Event> events = {
      MakeEvent(kT0 + seconds(100), "alice", "device.create", "plc-1", "device"),  // 1
      MakeEvent(kT0 + seconds(200), "bob", "device.revoke", "plc-1", "device"),    // 2
      MakeEvent(kT0 + seconds(300), "alice", "pki.cmp.ir", "01ab", "pki"),         // 3
      MakeEvent(kT0 + seconds(400), "alice", "pki.crl", "", "pki"),                // 4
      MakeEvent(kT0 + seconds(500), "carol", "auth.login", "carol", "auth"),       // 5
      MakeEvent(kT0 + seconds(500), "alice", "pkix.other", "plc-1", "pki"),        // 6
  };
  for (const auto& e : events) {
    ASSERT_OK(store().audit().Append(e));
    ASSERT_OK(memory.Append(e));
  }
  struct Case {
    audit::Query q;
    std::vector<int64_t> want;
  };
  auto q = [](auto&& set) {
    audit::Query query;
    set(query);
    return query;
  };
  const std::vector<Case> cases = {
      {{}, {1, 2, 3, 4, 5, 6}},
      {q([](auto& x) { x.actor = "alice"; }), {1, 3, 4, 6}},
      {q([](auto& x) { x.target = "plc-1"; }), {1, 2, 6}},
      {q([](auto& x) { x.type_prefix = "pki."; }), {3, 4}},
      {q([](auto& x) { x.type_prefix = "pki"; }), {3, 4, 6}},
      {q([](auto& x) { x.type_prefix = "%"; }), {}},  // no wildcard semantics
      {q([](auto& x) { x.category = "auth"; }), {5}},
      {q([](auto& x) {
         x.since = kT0 + seconds(200);
         x.until = kT0 + seconds(400);
       }),
       {2, 3}},
      {q([](auto& x) { x.since = kT0 + seconds(500); }), {5, 6}},
      {q([](auto& x) {
         x.after_seq = 2;
         x.limit = 2;
       }),
       {3, 4}},
      {q([](auto& x) {
         x.actor = "alice";
         x.category = "pki";
         x.target = "01ab";
       }),
       {3}},
      {q([](auto& x) { x.actor = "nobody"; }), {}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    EXPECT_EQ(Seqs(store().audit().Find(cases[i].q)), cases[i].want);
    EXPECT_EQ(Seqs(memory.Find(cases[i].q)), cases[i].want);
  }
  audit::Query bad;
  bad.limit = 0;
  ExpectError(store().audit().Find(bad), Errc::kInvalidArgument);
}

TEST_P(StoreTest, AuditRecordsCannotBeChangedOrDeleted) {
  ASSERT_OK(store().audit().Append(MakeEvent(kT0, "alice", "auth.login", "alice", "auth")));
  EXPECT_FALSE(RawSql("UPDATE audit SET actor = 'mallory'"));
  EXPECT_FALSE(RawSql("DELETE FROM audit"));
  auto found = store().audit().Find({});
  ASSERT_OK(found);
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].actor, "alice");
  // Appending still works afterwards.
  ASSERT_OK(store().audit().Append(MakeEvent(kT0, "bob", "auth.login", "bob", "auth")));
  EXPECT_EQ(Seqs(store().audit().Find({})), (std::vector<int64_t>{1, 2}));
}

// --- schema and persistence ---

TEST_P(StoreTest, ReopeningKeepsDataAndDoesNotRemigrate) {
  const int version = store().schema_version();
  EXPECT_GE(version, 1);
  ASSERT_OK(store().users().Create(MakeUser("alice")));
  ASSERT_OK(store().audit().Append(MakeEvent(kT0, "alice", "auth.login", "alice", "auth")));
  EXPECT_EQ(*store().kv().Increment("crl_number"), 1);
  store_.reset();

  for (int i = 0; i < 2; ++i) {
    store_ = Open();
    ASSERT_NE(store_, nullptr);
    EXPECT_EQ(store().schema_version(), version);
    EXPECT_OK(store().users().GetByName("alice"));
    EXPECT_EQ(Seqs(store().audit().Find({})), (std::vector<int64_t>{1}));
    store_.reset();
  }
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(*store().kv().Increment("crl_number"), 2);
  auto rows = RawSql("SELECT COUNT(*) FROM schema_migrations");
  ASSERT_OK(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0], std::to_string(version));  // each step recorded exactly once
}

TEST_P(StoreTest, NewerSchemaVersionIsRefused) {
  const int future = store().schema_version() + 1;
  store_.reset();
  ASSERT_OK(RawSql("INSERT INTO schema_migrations(version, description, applied_us) VALUES(" +
                   std::to_string(future) + ", 'from the future', 0)"));
  auto s = backend().open(location_);
  ASSERT_FALSE(s);
  EXPECT_TRUE(s.error().Is(Errc::kFailedPrecondition)) << s.error().String();
  EXPECT_NE(s.error().message().find("newer"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace torwart::storage::testing
