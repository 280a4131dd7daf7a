#include "torwart/policy/policy.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "torwart/core/clock.hpp"
#include "torwart/policy/decision.hpp"

namespace torwart::policy {
namespace {

using ::testing::HasSubstr;

std::string ReadExample() {
  std::ifstream in(TORWART_POLICY_EXAMPLE);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "line:column" of the first occurrence of `needle` in the example document.
std::string PosOf(std::string_view needle) {
  std::string text = ReadExample();
  size_t at = text.find(needle);
  EXPECT_NE(at, std::string::npos) << needle;
  size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + at, '\n'));
  size_t bol = text.rfind('\n', at);
  size_t col = at - (bol == std::string::npos ? 0 : bol + 1) + 1;
  return std::to_string(line) + ":" + std::to_string(col);
}

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, t)) << rfc3339;
  return t;
}

std::string Errors(const CompileResult& r) {
  std::string out;
  for (const Diagnostic& d : r.errors) out += d.String() + "\n";
  return out;
}

class ExamplePolicy : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto p = Compile(ReadExample());
    ASSERT_TRUE(p) << p.error().message();
    policy_ = new Policy(std::move(*p));
  }
  static void TearDownTestSuite() {
    delete policy_;
    policy_ = nullptr;
  }

  // Outside shop hours and inside the OT window (Monday 21:00 in Berlin).
  static AccessQuery Q(std::string user, std::string target,
                       const char* at = "2026-05-04T21:00:00+02:00") {
    AccessQuery q;
    q.user = std::move(user);
    q.target = std::move(target);
    q.at = At(at);
    return q;
  }

  static Policy* policy_;
};
Policy* ExamplePolicy::policy_ = nullptr;

TEST_F(ExamplePolicy, DocumentTestsPass) {
  auto results = RunTests(*policy_);
  ASSERT_EQ(results.size(), 18u);
  for (const TestResult& r : results) EXPECT_TRUE(r.passed) << r.pos.String() << " " << r.message;
}

// Acceptance 1, industry: only group maintenance reaches tag:ot-gateway.
TEST_F(ExamplePolicy, OnlyMaintenanceReachesOtGateway) {
  const char* users[] = {"anna@example.com",     "ben@example.com",
                         "clara@example.com",    "techniker@it-service.example",
                         "it-admin@example.com", "petra.schulz@werk.example",
                         "stranger@evil.example"};
  for (const char* u : users) {
    Decision d = Decide(*policy_, Q(u, "ot-gw-hh"));
    EXPECT_FALSE(d.allow) << u;
  }
  for (const char* u : {"max.wagner@werk.example", "lena.hoffmann@werk.example"}) {
    Decision d = Decide(*policy_, Q(u, "ot-gw-hh"));
    EXPECT_TRUE(d.allow) << u << ": " << d.reason;
    EXPECT_EQ(d.rule_id, "ot-gateway-maintenance");
    EXPECT_EQ(d.requirements.approvals, 1);
    EXPECT_EQ(d.requirements.approver_group, "ot-leads");
    EXPECT_EQ(d.requirements.max_duration, std::chrono::hours(2));
    EXPECT_TRUE(d.requirements.reason_required);
    EXPECT_TRUE(d.requirements.on_site_consent);
    EXPECT_FALSE(d.break_glass);
  }
  // A directory group membership counts too.
  AccessQuery q = Q("new.hire@werk.example", "ot-gw-hh");
  q.user_groups = {"maintenance"};
  EXPECT_TRUE(Decide(*policy_, q).allow);
}

// Acceptance 1, retail: Anna and Ben reach northern stores only, Clara southern ones only.
TEST_F(ExamplePolicy, RegionalStoreSupport) {
  const char* north[] = {"kasse-kiel-1", "kasse-bremen-1"};
  const char* south[] = {"kasse-muenchen-1", "kasse-stuttgart-1"};
  for (const char* u : {"anna@example.com", "ben@example.com"}) {
    for (const char* t : north) EXPECT_TRUE(Decide(*policy_, Q(u, t)).allow) << u << " " << t;
    for (const char* t : south) EXPECT_FALSE(Decide(*policy_, Q(u, t)).allow) << u << " " << t;
  }
  for (const char* t : north) EXPECT_FALSE(Decide(*policy_, Q("clara@example.com", t)).allow);
  for (const char* t : south) EXPECT_TRUE(Decide(*policy_, Q("clara@example.com", t)).allow);
  // Admins reach all stores, with approval, at any hour.
  Decision d =
      Decide(*policy_, Q("it-admin@example.com", "kasse-stuttgart-1", "2026-05-04T12:00:00+02:00"));
  EXPECT_TRUE(d.allow);
  EXPECT_EQ(d.rule_id, "stores-admin");
  // Only RDP: another port is not this target.
  AccessQuery q = Q("anna@example.com", "kasse-kiel-1");
  q.port = 22;
  EXPECT_EQ(Decide(*policy_, q).cause, DenyCause::kPortMismatch);
}

// Acceptance 1, healthcare: the contractor reaches admin systems, not the patient-data server.
TEST_F(ExamplePolicy, ContractorAdminButNotPatientData) {
  const char* c = "techniker@it-service.example";
  EXPECT_TRUE(Decide(*policy_, Q(c, "praxis-admin-pc")).allow);
  EXPECT_TRUE(Decide(*policy_, Q(c, "praxis-router")).allow);
  Decision d = Decide(*policy_, Q(c, "praxis-pvs-server"));
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.cause, DenyCause::kExplicitDeny);
  EXPECT_EQ(d.rule_id, "no-patient-data-for-contractors");
}

TEST_F(ExamplePolicy, ScopesChooseTheRule) {
  AccessQuery q = Q("max.wagner@werk.example", "presse-1-plc");
  Decision any = Decide(*policy_, q);
  ASSERT_TRUE(any.allow);
  EXPECT_EQ(any.rule_id, "plc-read");  // the least demanding grant
  EXPECT_THAT(any.scopes, ::testing::ElementsAre("modbus:read"));
  q.scope = "modbus:write";
  Decision w = Decide(*policy_, q);
  ASSERT_TRUE(w.allow);
  EXPECT_EQ(w.rule_id, "plc-write");
  EXPECT_EQ(w.requirements.approvals, 2);
  q.scope = "ssh:*";
  EXPECT_EQ(Decide(*policy_, q).cause, DenyCause::kScopeInvalid);
}

TEST_F(ExamplePolicy, BreakGlassOnlyWhenInvoked) {
  AccessQuery q = Q("oncall@werk.example", "ot-gw-hh", "2026-05-05T11:00:00+02:00");
  q.user_roles = {"ot-emergency"};
  Decision d = Decide(*policy_, q);
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.cause, DenyCause::kBreakGlassOnly);
  q.break_glass = true;
  d = Decide(*policy_, q);
  ASSERT_TRUE(d.allow);
  EXPECT_TRUE(d.break_glass);
  EXPECT_EQ(d.review_group, "ot-leads");
  EXPECT_EQ(d.requirements.approvals, 0);
  EXPECT_EQ(d.requirements.max_duration, std::chrono::hours(1));
}

TEST_F(ExamplePolicy, DurationAndReasonAreCheckedWhenGiven) {
  AccessQuery q = Q("max.wagner@werk.example", "ot-gw-hh");
  q.duration = std::chrono::hours(3);
  Decision d = Decide(*policy_, q);
  EXPECT_EQ(d.cause, DenyCause::kDuration);
  EXPECT_THAT(d.reason, HasSubstr("exceeds max_duration 2h"));
  q.duration = std::chrono::hours(1);
  q.reason = "  ";
  EXPECT_EQ(Decide(*policy_, q).cause, DenyCause::kReason);
  q.reason = "replace encoder on press 1";
  EXPECT_TRUE(Decide(*policy_, q).allow);
}

TEST_F(ExamplePolicy, FourEyes) {
  Decision d = Decide(*policy_, Q("max.wagner@werk.example", "ot-gw-hh"));
  ASSERT_TRUE(d.allow);
  EXPECT_TRUE(
      MayApprove(*policy_, d.requirements, "petra.schulz@werk.example", "max.wagner@werk.example"));
  EXPECT_FALSE(MayApprove(*policy_, d.requirements, "lena.hoffmann@werk.example",
                          "max.wagner@werk.example"));  // not an approver
  EXPECT_FALSE(MayApprove(*policy_, d.requirements, "petra.schulz@werk.example",
                          "petra.schulz@werk.example"));  // never the requester
}

// Acceptance 2: outside its window a rule does not apply; DST switches keep local wall time.
TEST_F(ExamplePolicy, WindowAcrossSpringDstSwitch) {
  const char* u = "max.wagner@werk.example";
  // A span belongs to the day it starts: Thu 18:00 - Fri 06:00 is Thursday's.
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-27T04:30:00Z")).allow);
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-27T05:30:00Z")).allow);  // 06:30 CET
  // Saturday morning still belongs to Friday's span; Saturday evening is no window.
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-28T04:59:00Z")).allow);
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-28T18:00:00Z")).allow);
  // Sunday 29 March 02:00 CET -> 03:00 CEST. Monday 00:30 follows Sunday: closed.
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-29T22:30:00Z")).allow);
  // Tuesday after the switch: the same UTC time of day as Friday's 05:30 CET is 06:30 CEST.
  FakeClock clock(At("2026-03-31T04:30:00Z"));
  AccessQuery q = Q(u, "ot-gw-hh");
  q.at = clock.Now();
  Decision d = Decide(*policy_, q);
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.cause, DenyCause::kWindow);
  EXPECT_THAT(d.reason, HasSubstr("Tue 2026-03-31 06:30"));
  clock.Advance(-std::chrono::hours(1));  // 05:30 CEST
  q.at = clock.Now();
  EXPECT_TRUE(Decide(*policy_, q).allow);
  // Monday 18:00 CEST = 16:00Z opens the window.
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-30T15:59:00Z")).allow);
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-03-30T16:00:00Z")).allow);
}

TEST_F(ExamplePolicy, WindowAcrossAutumnDstSwitch) {
  const char* u = "max.wagner@werk.example";
  // Friday 23 October: CEST, 06:00 local = 04:00Z.
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-23T03:59:00Z")).allow);
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-23T04:00:00Z")).allow);
  // Sunday 25 October 03:00 CEST -> 02:00 CET. Tuesday 27: 06:00 CET = 05:00Z.
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-27T04:30:00Z")).allow);
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-27T05:00:00Z")).allow);
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-26T04:30:00Z")).allow);  // Sun span
  // Monday 18:00 CET = 17:00Z.
  EXPECT_FALSE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-26T16:59:00Z")).allow);
  EXPECT_TRUE(Decide(*policy_, Q(u, "ot-gw-hh", "2026-10-26T17:00:00Z")).allow);
}

constexpr const char* kNightPolicy = R"({
  "version": 1,
  "groups": {"ops": ["o@x"]},
  "sites": {"s": {"gateways": ["g"]}},
  "targets": {"t": {"site": "s", "gateway": "g", "address": "10.0.0.1:22", "protocol": "ssh"}},
  "windows": {"night": {"time_zone": "Europe/Berlin",
                        "spans": [{"days": "sun", "from": "02:00", "to": "03:00"}]}},
  "rules": [{"id": "r", "src": ["group:ops"], "dst": ["t"], "window": "night"}],
})";

// Step a fake clock through both switch nights in 15-minute steps and count open steps.
int OpenQuarterHours(const Policy& p, const char* start) {
  FakeClock clock(At(start));
  int open = 0;
  for (int i = 0; i < 4 * 6; ++i) {
    AccessQuery q;
    q.user = "o@x";
    q.target = "t";
    q.at = clock.Now();
    if (Decide(p, q).allow) ++open;
    clock.Advance(std::chrono::minutes(15));
  }
  return open;
}

TEST(PolicyWindows, LocalHourThatDoesNotExistOrHappensTwice) {
  auto p = Compile(kNightPolicy);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(OpenQuarterHours(*p, "2026-03-28T23:00:00Z"), 0);  // 02:00-03:00 skipped
  EXPECT_EQ(OpenQuarterHours(*p, "2026-10-24T22:00:00Z"), 8);  // 02:00-03:00 twice
  EXPECT_EQ(OpenQuarterHours(*p, "2026-06-06T22:00:00Z"), 4);  // an ordinary Sunday
}

// Acceptance 5: every error, each with its position.
TEST(PolicyValidation, ReportsAllErrorsWithPositions) {
  const char* text =
      "{\n"                                                                              // 1
      "  \"version\": 1,\n"                                                              // 2
      "  \"groups\": {\"ops\": [\"o@x\"]},\n"                                            // 3
      "  \"sites\": {\"s\": {\"gateways\": [\"g\"]}},\n"                                 // 4
      "  \"targets\": {\"t\": {\"site\": \"s\", \"gateway\": \"g\",\n"                   // 5
      "     \"address\": \"10.0.0.1:22\", \"protocol\": \"ssh\", \"colour\": 1}},\n"     // 6
      "  \"rules\": [\n"                                                                 // 7
      "    {\"id\": \"r\", \"src\": [\"group:opps\"], \"dst\": [\"t\"]},\n"              // 8
      "    {\"id\": \"r2\", \"src\": [\"user:o@x\"], \"dst\": [\"t\"]},\n"               // 9
      "  ],\n"                                                                           // 10
      "  \"tests\": [{\"user\": \"o@x\", \"target\": \"t\", \"expect\": \"allow\"}],\n"  // 11
      "  \"polcy\": {},\n"                                                               // 12
      "}\n";
  CompileResult r = CompileDetailed(text);
  ASSERT_FALSE(r.policy);
  ASSERT_EQ(r.errors.size(), 3u) << Errors(r);
  EXPECT_EQ(r.errors[0].String().substr(0, 6), "6:51: ");
  EXPECT_THAT(r.errors[0].message, HasSubstr("unknown key 'colour'"));
  EXPECT_EQ(r.errors[1].String().substr(0, 6), "8:25: ");
  EXPECT_THAT(r.errors[1].message, HasSubstr("unknown group 'opps'"));
  EXPECT_EQ(r.errors[2].String().substr(0, 6), "12:3: ");
  EXPECT_THAT(r.errors[2].message, HasSubstr("unknown key 'polcy'"));

  // Without the structural errors the failing test is reported at the test's position.
  std::string fixed = text;
  fixed.replace(fixed.find(", \"colour\": 1"), 13, "");
  fixed.replace(fixed.find("\"polcy\": {},"), 12, "");
  fixed.replace(fixed.find("\"expect\": \"allow\""), 17, "\"expect\": \"deny\"");
  fixed.replace(fixed.find("group:opps"), 10, "group:ops");
  CompileResult r2 = CompileDetailed(fixed);
  ASSERT_FALSE(r2.policy);
  ASSERT_EQ(r2.errors.size(), 1u) << Errors(r2);
  EXPECT_EQ(r2.errors[0].pos.line, 11u);
  EXPECT_EQ(r2.errors[0].pos.column, 13u);
  EXPECT_THAT(r2.errors[0].message, HasSubstr("test 1"));
}

TEST(PolicyValidation, TopLevelUnknownKeyAndManyErrorsAtOnce) {
  const char* text = R"({
  "version": 2,
  "polcy": {},
  "groups": {"a": ["u@x", "u@x"], "bad name": []},
  "roles": {"r": {"descr": ""}},
  "tags": {},
  "sites": {"s": {"gateways": ["g"], "tags": ["nope"]}},
  "targets": {"t": {"site": "s2", "address": "nohost", "protocol": "telnet"}},
  "windows": {"w": {"time_zone": "Mars/Olympus", "spans": [{"days": "mon-xyz", "from": "25:00", "to": "06:00"}]}},
  "rules": [
    {"id": "x", "src": ["anna"], "dst": ["tag:missing"], "window": "w2", "scopes": ["modbus:erase"]},
    {"id": "x", "src": ["group:a"], "dst": ["t"], "approval": {"count": 3, "group": "a"}, "max_duration": "90d"},
    {"id": "d", "action": "deny", "src": ["*"], "dst": ["*"], "approval": {"count": 1, "group": "a"}},
    {"id": "bg", "src": ["group:a"], "dst": ["t"], "break_glass": {"review_group": "zz"}},
  ],
  "tests": [{"user": "u@x", "target": "t9", "expect": "maybe"}],
})";
  CompileResult r = CompileDetailed(text);
  ASSERT_FALSE(r.policy);
  std::string all = Errors(r);
  for (const char* want : {"2:14: unsupported policy version",
                           "3:3: unknown key 'polcy'",
                           "lists 'u@x' twice",
                           "invalid name 'bad name'",
                           "unknown key 'descr'",
                           "unknown tag 'nope'",
                           "unknown site 's2'",
                           "needs 'gateway'",
                           "is not host:port",
                           "unknown protocol 'telnet'",
                           "unknown time zone 'Mars/Olympus'",
                           "'mon-xyz' is not a day",
                           "\"from\" must be HH:MM",
                           "must be \"user:NAME\"",
                           "unknown tag 'missing'",
                           "unknown window 'w2'",
                           "unknown scope 'modbus:erase'",
                           "id already used",
                           "must be more than 0 and at most 30d",
                           "approval needs 3 approver(s)",
                           "a deny rule takes no 'approval'",
                           "break-glass rules are for named roles",
                           "unknown review group 'zz'",
                           "unknown target 't9'",
                           "expect must be \"allow\" or \"deny\""}) {
    EXPECT_THAT(all, HasSubstr(want));
  }
  // Sorted by position.
  for (size_t i = 1; i < r.errors.size(); ++i) {
    EXPECT_LE(r.errors[i - 1].pos.line, r.errors[i].pos.line);
  }
  auto e = Compile(text);
  ASSERT_FALSE(e);
  EXPECT_TRUE(e.error().Is(Errc::kInvalidArgument));
  EXPECT_EQ(e.error().message(), all.substr(0, all.size() - 1));
}

std::string MiniPolicy(const std::string& rules) {
  return R"({
  "version": 1,
  "groups": {"ops": ["o@x", "p@x"], "leads": ["l1@x", "l2@x"], "all": ["o@x", "l1@x"]},
  "tags": {"plc": {}},
  "sites": {"s": {"gateways": ["g"]}},
  "targets": {
    "t": {"site": "s", "gateway": "g", "address": "10.0.0.1:22", "protocol": "ssh"},
    "m": {"site": "s", "gateway": "g", "address": "10.0.0.2:502", "protocol": "modbus",
          "tags": ["plc"]}},
  "rules": [)" +
         rules + "]}";
}

TEST(PolicyValidation, ConflictingRules) {
  CompileResult dup = CompileDetailed(MiniPolicy(R"(
    {"id": "a", "src": ["group:ops"], "dst": ["t"], "max_duration": "1h"},
    {"id": "b", "src": ["group:ops"], "dst": ["t"], "max_duration": "2h"})"));
  ASSERT_EQ(dup.errors.size(), 1u) << Errors(dup);
  EXPECT_THAT(dup.errors[0].String(), HasSubstr("12:5: rule 'b' conflicts with rule 'a' at 11:5"));

  CompileResult shadow = CompileDetailed(MiniPolicy(R"(
    {"id": "a", "src": ["group:ops"], "dst": ["site:s"]},
    {"id": "no", "action": "deny", "src": ["group:ops", "group:leads"], "dst": ["*"]})"));
  ASSERT_EQ(shadow.errors.size(), 1u) << Errors(shadow);
  EXPECT_THAT(shadow.errors[0].String(), HasSubstr("rule 'a' can never allow anything"));

  CompileResult port = CompileDetailed(MiniPolicy(R"(
    {"id": "a", "src": ["group:ops"], "dst": ["site:s"], "ports": [3389]})"));
  ASSERT_EQ(port.errors.size(), 1u) << Errors(port);
  EXPECT_THAT(port.errors[0].String(), HasSubstr("ports match no target"));

  CompileResult scope = CompileDetailed(MiniPolicy(R"(
    {"id": "a", "src": ["group:ops"], "dst": ["t"], "scopes": ["modbus:read"]})"));
  ASSERT_EQ(scope.errors.size(), 1u) << Errors(scope);
  EXPECT_THAT(scope.errors[0].String(), HasSubstr("fit no target's protocol"));

  // Four eyes: a requester who is also an approver needs one more approver listed.
  CompileResult eyes = CompileDetailed(MiniPolicy(R"(
    {"id": "a", "src": ["group:all"], "dst": ["t"], "approval": {"count": 2, "group": "all"}})"));
  ASSERT_EQ(eyes.errors.size(), 1u) << Errors(eyes);
  EXPECT_THAT(eyes.errors[0].String(), HasSubstr("never the requester"));
}

TEST(PolicyDecision, DenyByDefaultAndDenyWins) {
  auto p = Compile(MiniPolicy(R"(
    {"id": "ops-all", "src": ["group:ops"], "dst": ["*"]},
    {"id": "no-plc-for-p", "action": "deny", "src": ["user:p@x"], "dst": ["tag:plc"]})"));
  ASSERT_TRUE(p) << p.error().message();
  AccessQuery q;
  q.user = "o@x";
  q.target = "m";
  EXPECT_TRUE(Decide(*p, q).allow);
  q.user = "p@x";
  Decision d = Decide(*p, q);
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.rule_id, "no-plc-for-p");
  ASSERT_EQ(d.trace.size(), 2u);
  EXPECT_TRUE(d.trace[0].matched);
  EXPECT_TRUE(d.trace[1].matched);
  q.user = "l1@x";
  d = Decide(*p, q);
  EXPECT_EQ(d.cause, DenyCause::kSource);
  q.target = "nope";
  EXPECT_EQ(Decide(*p, q).cause, DenyCause::kUnknownTarget);

  auto empty = Compile(MiniPolicy(""));
  ASSERT_TRUE(empty) << empty.error().message();
  q.user = "o@x";
  q.target = "t";
  d = Decide(*empty, q);
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.cause, DenyCause::kNoRule);
}

// Acceptance 6: explain names the deciding rule for an allow and what is missing for a deny.
TEST_F(ExamplePolicy, ExplainNamesRuleOrMissingRequirement) {
  std::string allow = Explain(*policy_, Q("max.wagner@werk.example", "ot-gw-hh"));
  EXPECT_THAT(allow, HasSubstr("ALLOW"));
  EXPECT_THAT(allow, HasSubstr("by rule 'ot-gateway-maintenance' (" +
                               PosOf("{ \"id\": \"ot-gateway-maintenance\"") + ")"));
  EXPECT_THAT(allow, HasSubstr("1 approval(s) from group 'ot-leads' (never the requester)"));
  EXPECT_THAT(allow, HasSubstr("on-site consent"));

  std::string window =
      Explain(*policy_, Q("max.wagner@werk.example", "ot-gw-hh", "2026-05-05T10:00:00+02:00"));
  EXPECT_THAT(window, HasSubstr("DENY"));
  EXPECT_THAT(window, HasSubstr("outside window 'ot-after-hours' (mon,tue,wed,thu,fri "
                                "18:00-06:00 Europe/Berlin)"));
  EXPECT_THAT(window, HasSubstr("local time Tue 2026-05-05 10:00"));

  std::string src = Explain(*policy_, Q("anna@example.com", "kasse-muenchen-1"));
  EXPECT_THAT(src, HasSubstr("user 'anna@example.com' is not in the src of rule 'stores-sued'"));
  EXPECT_THAT(src, HasSubstr("rules considered:"));

  std::string none = Explain(*policy_, Q("anna@example.com", "kein-ziel"));
  EXPECT_THAT(none, HasSubstr("no target named 'kein-ziel'"));
}

TEST(PolicyValidation, UntrustedInputNeverCrashes) {
  // Every prefix of the example must be refused cleanly or compile.
  std::string text = ReadExample();
  ASSERT_FALSE(text.empty());
  for (size_t n = 0; n < text.size(); n += 97) {
    CompileResult r = CompileDetailed(std::string_view(text).substr(0, n));
    EXPECT_FALSE(r.policy);
    EXPECT_FALSE(r.errors.empty());
  }
}

}  // namespace
}  // namespace torwart::policy
