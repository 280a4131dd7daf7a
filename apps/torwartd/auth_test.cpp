// AuthService against an in-memory SQLite store and a fake clock: password + TOTP login,
// replay refusal, lockout by failed codes, idle timeout, MFA-only handlers, admin actions.
#include "auth.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "totp.hpp"

namespace torwart::server {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

audit::Query TypeQuery(std::string prefix) {
  audit::Query q;
  q.type_prefix = std::move(prefix);
  return q;
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    auto s = storage::OpenSqlite({.path = ":memory:"});
    ASSERT_TRUE(s) << s.error().String();
    store_ = std::move(*s);
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.clock = &clock_;
    ctx_.auth = &auth_;
    auth_.SetSealingKey(RandomBytes(32));
    auto pw = auth_.BootstrapAdmin();
    ASSERT_TRUE(pw && *pw);
    admin_.user_id = store_->users().GetByName("admin")->id;
    admin_.name = "admin";
    admin_.role = "admin";
  }

  // Creates `name` with a known password (no change pending) and returns it.
  void MakeUser(const std::string& name, const std::string& role = "technician") {
    auto pw = auth_.CreateUser(admin_, name, role, "Acme", req_);
    ASSERT_TRUE(pw) << pw.error().String();
    auto u = store_->users().GetByName(name);
    u->password_hash = *auth_.HashPassword(kPassword);
    u->must_change_password = false;
    ASSERT_TRUE(store_->users().Update(*u));
  }

  // Logs in without TOTP and enrolls + confirms a second factor; returns the raw secret.
  std::string EnrollTotp(const std::string& name) {
    auto login = auth_.Login(name, kPassword, "", req_);
    EXPECT_TRUE(login && !login->totp_required);
    http::Request authed = WithToken(login->token);
    auto who = auth_.Authenticate(authed);
    EXPECT_TRUE(who);
    auto enr = auth_.EnrollMfa(*who, authed);
    EXPECT_TRUE(enr) << enr.error().String();
    std::string secret = *totp::Base32Decode(enr->secret);
    EXPECT_TRUE(enr->uri.starts_with("otpauth://totp/torwart:" + name + "?secret=" + enr->secret));
    EXPECT_FALSE(auth_.Authenticate(authed)->mfa);
    auto confirmed = auth_.ConfirmMfa(*who, Code(secret), authed);
    EXPECT_TRUE(confirmed) << confirmed.error().String();
    EXPECT_TRUE(auth_.Authenticate(authed)->mfa);  // confirming upgrades the session
    return secret;
  }

  std::string Code(const std::string& secret, int step_offset = 0) {
    int64_t step = totp::StepAt(clock_.Now()) + step_offset;
    return *totp::Hotp(secret, static_cast<uint64_t>(step));
  }

  http::Request WithToken(const std::string& token) {
    http::Request r = req_;
    r.headers["authorization"] = "Bearer " + token;
    return r;
  }

  static constexpr const char* kPassword = "a long enough password";
  ServerConfig config_;
  std::unique_ptr<storage::Store> store_;
  FakeClock clock_{FromUnix(1795356412)};
  Context ctx_;
  AuthService auth_{ctx_};
  Principal admin_;
  http::Request req_ = [] {
    http::Request r;
    r.method = "POST";
    r.path = "/api/v1/auth/login";
    r.peer = "192.0.2.7:5000";
    return r;
  }();
};

TEST_F(AuthTest, WithoutMfaPasswordAloneGivesANonMfaSession) {
  MakeUser("tom");
  auto r = auth_.Login("tom", kPassword, "", req_);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->totp_required);
  EXPECT_FALSE(r->who.mfa);
  EXPECT_EQ(r->who.organisation, "Acme");
  EXPECT_EQ(*auth_.MfaState(r->who.user_id), "none");
}

TEST_F(AuthTest, ActiveMfaNeedsTheCodeAndMarksTheSession) {
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  clock_.Advance(seconds(30));

  auto need = auth_.Login("tom", kPassword, "", req_);
  ASSERT_TRUE(need);
  EXPECT_TRUE(need->totp_required);
  EXPECT_TRUE(need->token.empty());

  auto ok = auth_.Login("tom", kPassword, Code(secret), req_);
  ASSERT_TRUE(ok) << ok.error().String();
  EXPECT_FALSE(ok->totp_required);
  EXPECT_TRUE(ok->who.mfa);
  auto who = auth_.Authenticate(WithToken(ok->token));
  ASSERT_TRUE(who);
  EXPECT_TRUE(who->mfa);
  EXPECT_TRUE(store_->users().GetByName("tom")->failed_logins == 0);

  // A right code with a wrong password is still a wrong password.
  clock_.Advance(seconds(30));
  auto bad = auth_.Login("tom", "wrong password here", Code(secret), req_);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "wrong user name or password");
}

TEST_F(AuthTest, AReplayedCodeIsRefused) {
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  clock_.Advance(seconds(30));
  std::string code = Code(secret);
  ASSERT_TRUE(auth_.Login("tom", kPassword, code, req_));
  auto replay = auth_.Login("tom", kPassword, code, req_);
  ASSERT_FALSE(replay);
  EXPECT_TRUE(replay.error().Is(Errc::kUnauthenticated));
  EXPECT_NE(replay.error().message().find("already used"), std::string::npos);
  // Still refused 20 s later (same step, inside the window), and so is the previous step's code.
  clock_.Advance(seconds(20));
  EXPECT_FALSE(auth_.Login("tom", kPassword, code, req_));
  EXPECT_FALSE(auth_.Login("tom", kPassword, Code(secret, -1), req_));
  // The code used to confirm the enrolment cannot log in either.
  auto events = store_->audit().Find(TypeQuery("auth.login"));
  ASSERT_TRUE(events);
  EXPECT_EQ(events->back().reason, "replayed TOTP code");
  // The next step works.
  clock_.Advance(seconds(30));
  EXPECT_TRUE(auth_.Login("tom", kPassword, Code(secret), req_));
}

TEST_F(AuthTest, TheConfirmationCodeCannotBeReusedToLogIn) {
  MakeUser("tom");
  auto login = auth_.Login("tom", kPassword, "", req_);
  http::Request authed = WithToken(login->token);
  auto who = auth_.Authenticate(authed);
  auto enr = auth_.EnrollMfa(*who, authed);
  std::string secret = *totp::Base32Decode(enr->secret);
  std::string code = Code(secret);
  ASSERT_TRUE(auth_.ConfirmMfa(*who, code, authed));
  EXPECT_FALSE(auth_.Login("tom", kPassword, code, req_));
  EXPECT_TRUE(auth_.Login("tom", kPassword, Code(secret, 1), req_));  // next step, in window
}

TEST_F(AuthTest, TenWrongCodesLockTheAccountForThirtyMinutes) {
  ASSERT_EQ(config_.max_failed_logins, 10);
  ASSERT_EQ(config_.lockout, minutes(30));
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  std::string good = Code(secret, 1);
  std::string wrong = good == "000000" ? "000001" : "000000";
  for (int i = 0; i < 10; ++i) {
    auto r = auth_.Login("tom", kPassword, wrong, req_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message(), "wrong one-time code") << i;
  }
  // Locked: even the right password with the right code is refused.
  auto locked = auth_.Login("tom", kPassword, good, req_);
  ASSERT_FALSE(locked);
  EXPECT_TRUE(locked.error().Is(Errc::kPermissionDenied));
  EXPECT_NE(locked.error().message().find("locked"), std::string::npos);
  auto lockouts = store_->audit().Find(TypeQuery("auth.lockout"));
  ASSERT_TRUE(lockouts);
  EXPECT_EQ(lockouts->size(), 1u);

  clock_.Advance(minutes(29));
  EXPECT_FALSE(auth_.Login("tom", kPassword, Code(secret), req_));
  clock_.Advance(minutes(1) + seconds(1));
  auto after = auth_.Login("tom", kPassword, Code(secret), req_);
  EXPECT_TRUE(after) << after.error().String();
}

TEST_F(AuthTest, MissingCodesAndWrongPasswordsCountTowardsTheSameLockout) {
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(auth_.Login("tom", kPassword, "", req_)->totp_required);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(auth_.Login("tom", "wrong password!!", "", req_));
  auto locked = auth_.Login("tom", kPassword, Code(secret, 1), req_);
  ASSERT_FALSE(locked);
  EXPECT_TRUE(locked.error().Is(Errc::kPermissionDenied));
}

TEST_F(AuthTest, ASuccessfulLoginResetsTheFailureCount) {
  MakeUser("tom");
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(auth_.Login("tom", "wrong password!!", "", req_));
  EXPECT_TRUE(auth_.Login("tom", kPassword, "", req_));
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(auth_.Login("tom", "wrong password!!", "", req_));
  EXPECT_TRUE(auth_.Login("tom", kPassword, "", req_));
}

TEST_F(AuthTest, IdleSessionsNeedANewLogin) {
  config_.idle_timeout = minutes(30);
  config_.session_ttl = std::chrono::hours(12);
  MakeUser("tom");
  auto r = auth_.Login("tom", kPassword, "", req_);
  ASSERT_TRUE(r);
  http::Request authed = WithToken(r->token);
  // Activity keeps the session alive well past one idle period...
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(minutes(29));
    ASSERT_TRUE(auth_.Authenticate(authed)) << i;
  }
  // ...but 30 idle minutes end it, for good.
  clock_.Advance(minutes(30));
  auto idle = auth_.Authenticate(authed);
  ASSERT_FALSE(idle);
  EXPECT_NE(idle.error().message().find("expired"), std::string::npos);
  clock_.Advance(-minutes(20));
  EXPECT_FALSE(auth_.Authenticate(authed));
}

TEST_F(AuthTest, SessionsEndAfterTheirLifetimeEvenWhenActive) {
  config_.session_ttl = std::chrono::hours(1);
  MakeUser("tom");
  auto r = auth_.Login("tom", kPassword, "", req_);
  http::Request authed = WithToken(r->token);
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(minutes(11));
    ASSERT_TRUE(auth_.Authenticate(authed));
  }
  clock_.Advance(minutes(6));
  EXPECT_FALSE(auth_.Authenticate(authed));
}

TEST_F(AuthTest, RequireMfaRefusesPasswordOnlySessions) {
  MakeUser("tom");
  int called = 0;
  http::Handler h = RequireMfa(ctx_, {"technician"}, [&](const http::Request&, const Principal&) {
    ++called;
    return http::Response::Json(200, "{}");
  });
  auto plain = auth_.Login("tom", kPassword, "", req_);
  auto resp = h(WithToken(plain->token));
  EXPECT_EQ(resp.status, 403);
  EXPECT_EQ(nlohmann::json::parse(resp.body)["error"]["code"], "mfa_required");
  EXPECT_EQ(called, 0);
  auto denied = store_->audit().Find(TypeQuery("auth.forbidden"));
  ASSERT_TRUE(denied && !denied->empty());
  EXPECT_EQ(denied->back().reason, "session without second factor");

  std::string secret = EnrollTotp("tom");
  auto mfa = auth_.Login("tom", kPassword, Code(secret, 1), req_);
  ASSERT_TRUE(mfa);
  EXPECT_EQ(h(WithToken(mfa->token)).status, 200);
  EXPECT_EQ(called, 1);

  // The role check still applies to MFA sessions.
  http::Handler admin_only = RequireRole(
      ctx_, {"admin"}, [](auto&, auto&) { return http::Response::Json(200, "{}"); },
      AuthOptions{.mfa = true});
  EXPECT_EQ(admin_only(WithToken(mfa->token)).status, 403);
}

TEST_F(AuthTest, EnrolmentIsRefusedWhileActiveAndTheSecretIsSealed) {
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  auto u = store_->users().GetByName("tom");
  auto stored = store_->mfa().Get(u->id);
  ASSERT_TRUE(stored);
  EXPECT_TRUE(stored->sealed_secret.starts_with("v1:"));
  EXPECT_EQ(stored->sealed_secret.find(totp::Base32Encode(secret)), std::string::npos);
  EXPECT_EQ(stored->sealed_secret.find(Base64Encode(secret)), std::string::npos);
  Principal tom;
  tom.user_id = u->id;
  tom.name = "tom";
  tom.role = "technician";
  auto again = auth_.EnrollMfa(tom, req_);
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kFailedPrecondition));

  // A server with another key cannot use the stored secret (fails closed).
  AuthService other(ctx_);
  other.SetSealingKey(RandomBytes(32));
  auto r = other.Login("tom", kPassword, Code(secret, 1), req_);
  EXPECT_FALSE(r);
  // Secrets are bound to their user: a row copied to another user does not open.
  MakeUser("eve");
  auto eve = store_->users().GetByName("eve");
  storage::MfaSecret copied = *stored;
  copied.user_id = eve->id;
  ASSERT_TRUE(store_->mfa().PutPending(copied));
  ASSERT_TRUE(store_->mfa().ConsumeStep(eve->id, 0, true, clock_.Now()));
  EXPECT_FALSE(auth_.Login("eve", kPassword, Code(secret, 1), req_));
}

TEST_F(AuthTest, ConfirmNeedsAValidCode) {
  MakeUser("tom");
  auto login = auth_.Login("tom", kPassword, "", req_);
  http::Request authed = WithToken(login->token);
  auto who = *auth_.Authenticate(authed);
  EXPECT_FALSE(auth_.ConfirmMfa(who, "123456", authed));  // nothing pending
  auto enr = auth_.EnrollMfa(who, authed);
  std::string secret = *totp::Base32Decode(enr->secret);
  EXPECT_FALSE(auth_.ConfirmMfa(who, Code(secret, 3), authed));
  EXPECT_EQ(*auth_.MfaState(who.user_id), "pending");
  // While pending, the password alone still logs in (not yet a factor).
  EXPECT_FALSE(auth_.Login("tom", kPassword, "", req_)->totp_required);
  ASSERT_TRUE(auth_.ConfirmMfa(who, Code(secret), authed));
  EXPECT_EQ(*auth_.MfaState(who.user_id), "active");
}

TEST_F(AuthTest, DisablingEndsSessionsAndRefusesLogin) {
  MakeUser("tom");
  auto r = auth_.Login("tom", kPassword, "", req_);
  http::Request authed = WithToken(r->token);
  ASSERT_TRUE(auth_.SetDisabled(admin_, "tom", true, req_));
  EXPECT_FALSE(auth_.Authenticate(authed));
  EXPECT_FALSE(auth_.Login("tom", kPassword, "", req_));
  EXPECT_FALSE(auth_.SetDisabled(admin_, "admin", true, req_));  // not oneself
  ASSERT_TRUE(auth_.SetDisabled(admin_, "tom", false, req_));
  EXPECT_TRUE(auth_.Login("tom", kPassword, "", req_));
  auto events = store_->audit().Find(TypeQuery("user."));
  ASSERT_TRUE(events);
  std::vector<std::string> types;
  for (auto& e : *events) types.push_back(e.type);
  EXPECT_NE(std::find(types.begin(), types.end(), "user.disable"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "user.enable"), types.end());
}

TEST_F(AuthTest, PasswordAndMfaResetEndSessions) {
  MakeUser("tom");
  std::string secret = EnrollTotp("tom");
  auto r = auth_.Login("tom", kPassword, Code(secret, 1), req_);
  ASSERT_TRUE(r);
  ASSERT_TRUE(auth_.ResetMfa(admin_, "tom", req_));
  EXPECT_FALSE(auth_.Authenticate(WithToken(r->token)));
  auto plain = auth_.Login("tom", kPassword, "", req_);
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->totp_required);
  EXPECT_FALSE(plain->who.mfa);

  auto pw = auth_.ResetPassword(admin_, "tom", req_);
  ASSERT_TRUE(pw);
  EXPECT_FALSE(auth_.Authenticate(WithToken(plain->token)));
  EXPECT_FALSE(auth_.Login("tom", kPassword, "", req_));
  auto fresh = auth_.Login("tom", *pw, "", req_);
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->who.must_change_password);
}

TEST(SealingKey, IsCreatedOnceWithMode0600) {
  std::string dir = ::testing::TempDir() + "/sealing-" + NewUuid();
  std::filesystem::create_directories(dir);
  auto k1 = LoadOrCreateSealingKey(dir + "/secrets.key");
  ASSERT_TRUE(k1) << k1.error().String();
  EXPECT_EQ(k1->size(), 32u);
  auto perms = std::filesystem::status(dir + "/secrets.key").permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto k2 = LoadOrCreateSealingKey(dir + "/secrets.key");
  ASSERT_TRUE(k2);
  EXPECT_EQ(*k1, *k2);
  std::filesystem::resize_file(dir + "/secrets.key", 5);
  EXPECT_FALSE(LoadOrCreateSealingKey(dir + "/secrets.key"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torwart::server
