// The identity part of the storage contract: organisation, MFA sessions, TOTP secrets with
// replay-proof step consumption. Runs over every backend (see store_test.hpp).
#include <atomic>
#include <thread>
#include <vector>

#include "store_test.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::storage::testing {
namespace {

using std::chrono::hours;

const TimePoint kT0 = FromUnix(1795356412);  // 2026-11-22T14:06:52Z

User NewUser(std::string name) {
  User u;
  u.id = NewUuid();
  u.name = std::move(name);
  u.role = "technician";
  u.password_hash = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA";
  u.created = kT0;
  return u;
}

MfaSecret Pending(const std::string& user_id, const std::string& sealed) {
  MfaSecret m;
  m.user_id = user_id;
  m.sealed_secret = sealed;
  m.created = kT0;
  return m;
}

TEST_P(StoreTest, UserOrganisationRoundTrips) {
  User u = NewUser("anna");
  u.organisation = "Maschinenbau Nord GmbH";
  ASSERT_TRUE(store().users().Create(u));
  EXPECT_EQ(store().users().GetByName("anna")->organisation, "Maschinenbau Nord GmbH");
  u.organisation = "Contractor AG";
  ASSERT_TRUE(store().users().Update(u));
  EXPECT_EQ(store().users().GetById(u.id)->organisation, "Contractor AG");
  EXPECT_EQ(store().users().List()->at(0).organisation, "Contractor AG");
}

TEST_P(StoreTest, SessionRemembersMfa) {
  User u = NewUser("anna");
  ASSERT_TRUE(store().users().Create(u));
  Session s{.token_hash = std::string(64, 'c'),
            .user_id = u.id,
            .created = kT0,
            .expires = kT0 + hours(1),
            .last_used = kT0,
            .mfa = false};
  ASSERT_TRUE(store().sessions().Create(s));
  EXPECT_FALSE(store().sessions().Get(s.token_hash)->mfa);
  ASSERT_TRUE(store().sessions().SetMfa(s.token_hash, true));
  EXPECT_TRUE(store().sessions().Get(s.token_hash)->mfa);
  auto gone = store().sessions().SetMfa("unknown", true);
  ASSERT_FALSE(gone);
  EXPECT_TRUE(gone.error().Is(Errc::kNotFound));
}

TEST_P(StoreTest, MfaSecretLifecycle) {
  User u = NewUser("anna");
  ASSERT_TRUE(store().users().Create(u));
  auto none = store().mfa().Get(u.id);
  ASSERT_FALSE(none);
  EXPECT_TRUE(none.error().Is(Errc::kNotFound));

  MfaSecret m = Pending(u.id, "v1:abc");
  ASSERT_TRUE(store().mfa().PutPending(m));
  auto got = store().mfa().Get(u.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->sealed_secret, "v1:abc");
  EXPECT_FALSE(got->active);
  EXPECT_EQ(got->last_step, -1);
  EXPECT_FALSE(got->activated);

  // Confirmation consumes the step and activates.
  ASSERT_TRUE(store().mfa().ConsumeStep(u.id, 100, true, kT0 + hours(1)));
  got = store().mfa().Get(u.id);
  EXPECT_TRUE(got->active);
  EXPECT_EQ(got->last_step, 100);
  EXPECT_EQ(got->activated, kT0 + hours(1));

  // The same step, or an older one, never again; a later one once.
  for (int64_t step : {100, 99}) {
    auto again = store().mfa().ConsumeStep(u.id, step, false, kT0);
    ASSERT_FALSE(again);
    EXPECT_TRUE(again.error().Is(Errc::kFailedPrecondition));
  }
  ASSERT_TRUE(store().mfa().ConsumeStep(u.id, 101, false, kT0 + hours(2)));
  got = store().mfa().Get(u.id);
  EXPECT_EQ(got->last_step, 101);
  EXPECT_EQ(got->activated, kT0 + hours(1));  // unchanged by later logins

  // Re-enrolment replaces the secret and starts inactive again.
  m.sealed_secret = "v1:def";
  ASSERT_TRUE(store().mfa().PutPending(m));
  got = store().mfa().Get(u.id);
  EXPECT_EQ(got->sealed_secret, "v1:def");
  EXPECT_FALSE(got->active);
  EXPECT_EQ(got->last_step, -1);

  ASSERT_TRUE(store().mfa().Delete(u.id));
  EXPECT_FALSE(store().mfa().Get(u.id));
  EXPECT_TRUE(store().mfa().Delete(u.id));  // idempotent
}

TEST_P(StoreTest, MfaSecretNeedsAnExistingUser) {
  EXPECT_FALSE(store().mfa().PutPending(Pending(NewUuid(), "x")));
}

TEST_P(StoreTest, ConcurrentUseOfOneCodeHasExactlyOneWinner) {
  User u = NewUser("anna");
  ASSERT_TRUE(store().users().Create(u));
  ASSERT_TRUE(store().mfa().PutPending(Pending(u.id, "x")));
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto other = Open();  // its own connection where the backend has several
      if (other && other->mfa().ConsumeStep(u.id, 42, false, kT0)) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
}

}  // namespace
}  // namespace torwart::storage::testing
