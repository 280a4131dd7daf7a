// Policy versions and the access workflow (requests, four eyes, grants, shorten, revoke,
// break-glass, certificates' preconditions) against a real SQLite store and a FakeClock.
#include "access.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "policy_api.hpp"
#include "torwart/core/ids.hpp"
#include "webhooks.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string ExamplePolicy() {
  std::ifstream f(std::string(TORWART_SOURCE_DIR) + "/api/examples/policy.jsonc");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, t)) << rfc3339;
  return t;
}

class AccessTest : public ::testing::Test {
 protected:
  AccessTest() : clock_(At("2026-03-31T05:00:00+02:00")) {  // Tuesday, inside ot-after-hours
    dir_ = fs::temp_directory_path() / ("access_test_" + RandomToken(8));
    fs::create_directories(dir_);
    auto s = storage::OpenSqlite({.path = (dir_ / "t.db").string()});
    EXPECT_TRUE(s) << s.error().String();
    store_ = std::move(*s);
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.clock = &clock_;
    for (auto [name, role] : {std::pair{"admin", "admin"},
                              {"max.wagner@werk.example", "technician"},
                              {"lena.hoffmann@werk.example", "technician"},
                              {"petra.schulz@werk.example", "approver"},
                              {"jonas.weber@werk.example", "approver"},
                              {"anna@example.com", "technician"},
                              {"ben@example.com", "technician"},
                              {"clara@example.com", "technician"},
                              {"techniker@it-service.example", "technician"},
                              {"dr.mueller@praxis-mueller.example", "approver"},
                              {"oncall@werk.example", "ot-emergency"}}) {
      storage::User u;
      u.id = NewUuid();
      u.name = name;
      u.role = role;
      u.password_hash = "x";
      u.created = clock_.Now();
      EXPECT_TRUE(store_->users().Create(u));
    }
  }
  ~AccessTest() override {
    access_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void ApplyExample() {
    std::vector<policy::Diagnostic> errors;
    auto r = policies_.Apply(ExamplePolicy(), admin_, "", req_, &errors);
    ASSERT_TRUE(r) << r.error().message();
  }

  Actor A(const std::string& name) {
    auto u = store_->users().GetByName(name);
    return Actor{name, u ? u->role : "technician", "127.0.0.1:1"};
  }

  Expected<storage::AccessRequest> Ask(const std::string& who, const std::string& site,
                                       const std::string& target, std::string reason = "fix it",
                                       std::optional<std::chrono::seconds> duration = {},
                                       std::string scope = "", bool break_glass = false) {
    return access_->Request(A(who), {site, target, scope, reason, duration, break_glass});
  }

  fs::path dir_;
  FakeClock clock_;
  ServerConfig config_;
  std::unique_ptr<storage::Store> store_;
  Context ctx_;
  PolicyService policies_{ctx_};
  std::vector<std::string> revoked_;
  std::unique_ptr<AccessService> access_ = std::make_unique<AccessService>(
      ctx_, policies_, nullptr, [this](const storage::AccessRequest& r) { revoked_.push_back(r.id); });
  Principal admin_{"id", "admin", "admin", false};
  http::Request req_;
};

TEST_F(AccessTest, DenyByDefaultWithoutPolicy) {
  auto r = Ask("anna@example.com", "filiale-kiel", "kasse-kiel-1");
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kPermissionDenied));
  EXPECT_NE(r.error().message().find("no access policy"), std::string::npos);
}

TEST_F(AccessTest, InvalidPolicyIsRefusedWithEveryErrorAndThePreviousStaysActive) {
  ApplyExample();
  ASSERT_EQ(policies_.Active()->version, 1);
  std::string bad = R"({
  "version": 1,
  "colour": "blue",
  "rules": [ { "id": "r", "src": ["group:nobody"], "dst": ["*"] } ],
})";
  std::vector<policy::Diagnostic> errors;
  auto r = policies_.Apply(bad, admin_, "", req_, &errors);
  ASSERT_FALSE(r);
  ASSERT_GE(errors.size(), 2u);
  std::string all = r.error().message();
  EXPECT_NE(all.find("3:3:"), std::string::npos) << all;   // unknown key "colour"
  EXPECT_NE(all.find("4:35:"), std::string::npos) << all;  // dangling group
  EXPECT_EQ(policies_.Active()->version, 1);
  auto active = store_->policies().Active();
  ASSERT_TRUE(active && active->has_value());
  EXPECT_EQ((*active)->version, 1);

  // A failing embedded test also refuses the policy.
  std::string failing = ExamplePolicy();
  size_t p = failing.find(R"("target": "kasse-muenchen-1", "expect": "deny")");
  ASSERT_NE(p, std::string::npos);
  failing.replace(failing.find("deny", p), 4, "allow");
  errors.clear();
  EXPECT_FALSE(policies_.Apply(failing, admin_, "", req_, &errors));
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(policies_.Active()->version, 1);

  // Restore makes an old text the active one again, as a new version.
  ApplyExample();
  auto restored = policies_.Restore(1, admin_, req_, &errors);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->version, 3);
  EXPECT_EQ(policies_.Active()->version, 3);
}

TEST_F(AccessTest, SeedScenariosEndToEnd) {
  ApplyExample();
  clock_.Set(At("2026-05-04T21:00:00+02:00"));  // Monday evening: stores closed
  // Retail: Anna and Ben reach the north only, Clara the south only. No approval needed.
  auto a = Ask("anna@example.com", "filiale-kiel", "kasse-kiel-1");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->rule_id, "stores-nord");
  EXPECT_EQ(access_->State(*a), "active");
  EXPECT_TRUE(Ask("ben@example.com", "filiale-bremen", "kasse-bremen-1"));
  EXPECT_FALSE(Ask("anna@example.com", "filiale-muenchen", "kasse-muenchen-1"));
  EXPECT_FALSE(Ask("ben@example.com", "filiale-stuttgart", "kasse-stuttgart-1"));
  EXPECT_TRUE(Ask("clara@example.com", "filiale-muenchen", "kasse-muenchen-1"));
  EXPECT_FALSE(Ask("clara@example.com", "filiale-kiel", "kasse-kiel-1"));
  // Wrong site for the target.
  EXPECT_FALSE(Ask("anna@example.com", "filiale-bremen", "kasse-kiel-1"));
  // Healthcare: admin systems with the owner's approval, never patient data.
  auto t = Ask("techniker@it-service.example", "praxis-mueller", "praxis-admin-pc");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(access_->State(*t), "pending");
  EXPECT_EQ(t->approver_group, "praxis-inhaber");
  auto pvs = Ask("techniker@it-service.example", "praxis-mueller", "praxis-pvs-server");
  ASSERT_FALSE(pvs);
  EXPECT_NE(pvs.error().message().find("no-patient-data-for-contractors"), std::string::npos);
  // Industry: only group maintenance reaches tag:ot-gateway.
  EXPECT_FALSE(Ask("anna@example.com", "werk-hamburg", "ot-gw-hh"));
  clock_.Set(At("2026-05-05T05:00:00+02:00"));
  auto m = Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->rule_id, "ot-gateway-maintenance");
  EXPECT_TRUE(m->on_site_consent);
}

TEST_F(AccessTest, WindowsFollowTheWallClockAcrossDaylightSaving) {
  ApplyExample();
  // 2026-03-29 Europe/Berlin switches to CEST. Tue 05:30 CEST is inside Monday's 18:00-06:00.
  clock_.Set(At("2026-03-31T03:30:00Z"));
  EXPECT_TRUE(Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh"));
  // 06:30 CEST (04:30Z) is outside; a fixed +01:00 offset would wrongly say 05:30, inside.
  clock_.Set(At("2026-03-31T04:30:00Z"));
  auto late = Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh");
  ASSERT_FALSE(late);
  EXPECT_NE(late.error().message().find("outside window 'ot-after-hours'"), std::string::npos)
      << late.error().message();
  // Before the switch, Fri 05:30 CET is 04:30Z: inside.
  clock_.Set(At("2026-03-27T04:30:00Z"));
  EXPECT_TRUE(Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh"));
}

TEST_F(AccessTest, FourEyesAndTwoApprovals) {
  ApplyExample();
  auto r = Ask("max.wagner@werk.example", "werk-hamburg", "presse-1-plc", "valve", 1h,
               "modbus:write");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->rule_id, "plc-write");
  EXPECT_EQ(r->approvals_required, 2);
  // Never the requester.
  auto self = access_->Approve(A("max.wagner@werk.example"), r->id, {}, "");
  ASSERT_FALSE(self);
  EXPECT_TRUE(self.error().Is(Errc::kPermissionDenied));
  // Not in the approver group.
  EXPECT_FALSE(access_->Approve(A("anna@example.com"), r->id, {}, ""));
  // One approval is not enough.
  auto one = access_->Approve(A("petra.schulz@werk.example"), r->id, {}, "ok");
  ASSERT_TRUE(one) << one.error().message();
  EXPECT_EQ(access_->State(*one), "pending");
  EXPECT_FALSE(access_->CertificateClaims(A("max.wagner@werk.example"), r->id));
  // The same approver twice is still one pair of eyes.
  auto again = access_->Approve(A("petra.schulz@werk.example"), r->id, {}, "");
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kAlreadyExists));
  clock_.Advance(5min);
  auto two = access_->Approve(A("jonas.weber@werk.example"), r->id, {}, "ok");
  ASSERT_TRUE(two) << two.error().message();
  EXPECT_EQ(access_->State(*two), "active");
  EXPECT_EQ(two->starts, clock_.Now());  // validity starts at the (last) approval
  EXPECT_EQ(two->ends, clock_.Now() + 1h);
  EXPECT_EQ(two->scopes, std::vector<std::string>{"modbus:write"});
}

TEST_F(AccessTest, ShortenedGrantEndsAfterThirtyMinutesAndEndedGrantsGetNoCertificate) {
  ApplyExample();
  auto r = Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh", "update", 2h);
  ASSERT_TRUE(r) << r.error().message();
  // More than max_duration (2h) is refused; so is a missing reason.
  EXPECT_FALSE(Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh", "update", 3h));
  EXPECT_FALSE(Ask("max.wagner@werk.example", "werk-hamburg", "ot-gw-hh", " ", 1h));
  clock_.Advance(10min);
  EXPECT_FALSE(access_->Approve(A("petra.schulz@werk.example"), r->id, 3h, ""));  // > request
  auto g = access_->Approve(A("petra.schulz@werk.example"), r->id, 30min, "only 30 minutes");
  ASSERT_TRUE(g) << g.error().message();
  const TimePoint approved = clock_.Now();
  EXPECT_EQ(g->ends, approved + 30min);
  clock_.Advance(29min);
  EXPECT_EQ(access_->State(*g), "active");
  auto claims = access_->CertificateClaims(A("max.wagner@werk.example"), r->id);
  ASSERT_TRUE(claims) << claims.error().message();
  EXPECT_EQ(claims->not_after, approved + 30min);
  EXPECT_EQ(claims->target, "ot-gw-hh");
  EXPECT_EQ(claims->site, "werk-hamburg");
  // Only the requester obtains it.
  EXPECT_FALSE(access_->CertificateClaims(A("petra.schulz@werk.example"), r->id));
  clock_.Advance(1min);
  EXPECT_EQ(access_->State(*g), "expired");
  auto late = access_->CertificateClaims(A("max.wagner@werk.example"), r->id);
  ASSERT_FALSE(late);
  EXPECT_TRUE(late.error().Is(Errc::kExpired));
  // Nothing to revoke any more.
  EXPECT_FALSE(access_->Revoke(A("admin"), r->id, "too late"));
}

TEST_F(AccessTest, RevokeEndsAtOnceAndDisabledUsersGrantsEnd) {
  ApplyExample();
  clock_.Set(At("2026-05-04T21:00:00+02:00"));
  auto r = Ask("anna@example.com", "filiale-kiel", "kasse-kiel-1", "till", 2h);
  ASSERT_TRUE(r);
  EXPECT_FALSE(access_->Revoke(A("clara@example.com"), r->id, "not mine"));
  auto v = access_->Revoke(A("admin"), r->id, "done");
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(access_->State(*v), "revoked");
  EXPECT_EQ(v->ends, clock_.Now());
  EXPECT_EQ(revoked_, std::vector<std::string>{r->id});
  auto c = access_->CertificateClaims(A("anna@example.com"), r->id);
  ASSERT_FALSE(c);
  EXPECT_TRUE(c.error().Is(Errc::kRevoked));

  auto b = Ask("ben@example.com", "filiale-bremen", "kasse-bremen-1", "till", 2h);
  ASSERT_TRUE(b);
  auto ben = store_->users().GetByName("ben@example.com");
  ASSERT_TRUE(ben);
  ben->disabled = true;
  ASSERT_TRUE(store_->users().Update(*ben));
  EXPECT_EQ(access_->State(*b), "ended");
  EXPECT_FALSE(access_->CertificateClaims(A("ben@example.com"), b->id));
}

TEST_F(AccessTest, DenyNeedsAnApproverAndAReason) {
  ApplyExample();
  auto r = Ask("techniker@it-service.example", "praxis-mueller", "praxis-router");
  ASSERT_TRUE(r);
  EXPECT_FALSE(access_->Deny(A("techniker@it-service.example"), r->id, "no"));
  EXPECT_FALSE(access_->Deny(A("dr.mueller@praxis-mueller.example"), r->id, ""));
  auto d = access_->Deny(A("dr.mueller@praxis-mueller.example"), r->id, "not today");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(access_->State(*d), "denied");
  EXPECT_FALSE(access_->Approve(A("dr.mueller@praxis-mueller.example"), r->id, {}, ""));
}

TEST_F(AccessTest, BreakGlassIsImmediateAndNeedsAReviewByTheReviewGroup) {
  ApplyExample();
  clock_.Set(At("2026-05-05T12:00:00+02:00"));  // outside any window: break-glass has none
  EXPECT_FALSE(Ask("oncall@werk.example", "werk-hamburg", "ot-gw-hh", "fire", 1h));
  auto r = Ask("oncall@werk.example", "werk-hamburg", "ot-gw-hh", "fire", 1h, "", true);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(access_->State(*r), "active");
  EXPECT_EQ(r->review_group, "ot-leads");
  auto open = access_->List(A("admin"), "unreviewed");
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_FALSE(access_->Review(A("oncall@werk.example"), r->id, "fine"));
  EXPECT_FALSE(access_->Review(A("anna@example.com"), r->id, "fine"));
  ASSERT_TRUE(access_->Review(A("petra.schulz@werk.example"), r->id, "justified"));
  open = access_->List(A("admin"), "unreviewed");
  ASSERT_TRUE(open);
  EXPECT_TRUE(open->empty());
  // Break-glass without a reason is refused (the rule requires one).
  EXPECT_FALSE(Ask("oncall@werk.example", "werk-hamburg", "ot-gw-hh", "", 1h, "", true));
}

TEST_F(AccessTest, TechniciansSeeOnlyTheirOwnRequests) {
  ApplyExample();
  clock_.Set(At("2026-05-04T21:00:00+02:00"));
  ASSERT_TRUE(Ask("anna@example.com", "filiale-kiel", "kasse-kiel-1"));
  auto b = Ask("ben@example.com", "filiale-bremen", "kasse-bremen-1");
  ASSERT_TRUE(b);
  auto mine = access_->List(A("anna@example.com"), "");
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_FALSE(access_->Get(A("anna@example.com"), b->id));
  auto all = access_->List(A("petra.schulz@werk.example"), "active");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(AccessTest, EveryStepFailsClosedWithoutAudit) {
  ApplyExample();
  clock_.Set(At("2026-05-04T21:00:00+02:00"));
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "t.db").c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "ALTER TABLE audit RENAME TO audit_gone", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);
  auto r = Ask("anna@example.com", "filiale-kiel", "kasse-kiel-1");
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kUnavailable)) << r.error().message();
  auto list = store_->access().List("", "", 10);
  ASSERT_TRUE(list);
  EXPECT_TRUE(list->empty());
}

TEST(WebhookSignatureTest, IsHmacSha256OfTheBody) {
  // RFC 4231, test case 2.
  EXPECT_EQ(WebhookSignature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_F(AccessTest, RequestsQueueSignedWebhooksForApproversAndDecisionsForTheRequester) {
  config_.webhooks.push_back({"http://127.0.0.1:9/hook", "0123456789abcdef", {"access.*"}, ""});
  Webhooks hooks(ctx_);
  AccessService access(ctx_, policies_, &hooks);
  ApplyExample();
  auto r = access.Request(A("techniker@it-service.example"),
                          {"praxis-mueller", "praxis-admin-pc", "", "printer", 1h, false});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(access.Approve(A("dr.mueller@praxis-mueller.example"), r->id, {}, "ok"));
  auto items = store_->outbox().List(10);
  ASSERT_TRUE(items);
  ASSERT_EQ(items->size(), 2u);
  auto requested = nlohmann::json::parse((*items)[1].body);
  EXPECT_EQ(requested["event"], "access.requested");
  EXPECT_EQ(requested["data"]["recipients"],
            nlohmann::json::array({"dr.mueller@praxis-mueller.example"}));
  auto granted = nlohmann::json::parse((*items)[0].body);
  EXPECT_EQ(granted["event"], "access.granted");
  EXPECT_EQ(granted["data"]["recipients"], nlohmann::json::array({"techniker@it-service.example"}));
  // Undeliverable (nothing listens on port 9): retried later, not lost.
  hooks.DeliverDue();
  items = store_->outbox().List(10);
  ASSERT_TRUE(items);
  for (const auto& i : *items) {
    EXPECT_EQ(i.status, "pending");
    EXPECT_EQ(i.attempts, 1);
    EXPECT_GT(i.next_attempt, clock_.Now());
  }
}

}  // namespace
}  // namespace torwart::server
