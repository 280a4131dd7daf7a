// Reports: calendar months in UTC, which audit events concern a site or a person, the monthly
// and Art. 15 reports assembled from a real SQLite store (exact sessions, month boundaries,
// empty months, grants, recordings, redaction, who may read, the report.generated record) and
// the HTML rendering of hostile text.
#include "reports.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "access.hpp"
#include "policy_api.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, t)) << rfc3339;
  return t;
}

// --- months ---

TEST(ReportMonth, IsTheUtcCalendarMonth) {
  auto m = ParseReportMonth("2026-03");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->text, "2026-03");
  EXPECT_EQ(m->begin, At("2026-03-01T00:00:00Z"));
  EXPECT_EQ(m->end, At("2026-04-01T00:00:00Z"));
  auto dec = ParseReportMonth("2026-12");
  ASSERT_TRUE(dec);
  EXPECT_EQ(dec->end, At("2027-01-01T00:00:00Z"));
  auto leap = ParseReportMonth("2024-02");
  ASSERT_TRUE(leap);
  EXPECT_EQ(leap->end - leap->begin, std::chrono::hours(24 * 29));
  for (const char* bad : {"", "2026-3", "2026-13", "2026-00", "26-03", "2026/03", "2026-03-01",
                          "abcd-ef", "1969-12", "2026-0a", " 2026-03"}) {
    auto r = ParseReportMonth(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_TRUE(r.error().Is(Errc::kInvalidArgument));
    }
  }
}

// --- which events concern what ---

audit::Event Ev(std::string type, std::string target,
                audit::Result result = audit::Result::kSuccess, std::string details = "{}") {
  audit::Event e;
  e.type = std::move(type);
  e.category = "stream";
  e.target = std::move(target);
  e.result = result;
  e.details = std::move(details);
  e.actor_type = audit::ActorType::kUser;
  e.actor = "someone";
  return e;
}

TEST(ReportEvents, MonthlyKindsFollowTheSiteNotAPrefixOfIt) {
  const std::set<std::string> devices{"gw-north"};
  EXPECT_EQ(MonthlyEventKind(Ev("tunnel.refused", "north/plc-1"), "north", devices),
            "refused_streams");
  // "north-2" starts with "north" but is another site.
  EXPECT_EQ(MonthlyEventKind(Ev("tunnel.refused", "north-2/plc-1"), "north", devices), "");
  EXPECT_EQ(MonthlyEventKind(Ev("tunnel.kill", "north/plc-1"), "north", devices), "kills");
  EXPECT_EQ(MonthlyEventKind(Ev("tunnel.open", "north/plc-1"), "north", devices), "");
  EXPECT_EQ(MonthlyEventKind(Ev("access.request", "north/plc-1", audit::Result::kDenied), "north",
                             devices),
            "refused_requests");
  EXPECT_EQ(MonthlyEventKind(Ev("access.request", "north/plc-1"), "north", devices), "");
  EXPECT_EQ(MonthlyEventKind(Ev("device.quarantine", "gw-north"), "north", devices), "quarantines");
  EXPECT_EQ(MonthlyEventKind(Ev("device.release", "gw-south"), "north", devices), "");
  const std::string at_north = R"({"site":"north","device":"gw-north","detail":{"function":6}})";
  EXPECT_EQ(MonthlyEventKind(Ev("agent.tunnel.request_refused", "st-0000000000000001",
                                audit::Result::kFailure, at_north),
                             "north", devices),
            "refused_modbus");
  EXPECT_EQ(MonthlyEventKind(Ev("agent.tunnel.stream_refused", "st-0000000000000001",
                                audit::Result::kFailure, at_north),
                             "north", devices),
            "refused_streams");
  EXPECT_EQ(MonthlyEventKind(Ev("agent.tunnel.request_refused", "st-0000000000000001",
                                audit::Result::kFailure, R"({"site":"south"})"),
                             "north", devices),
            "");
  EXPECT_EQ(
      MonthlyEventKind(Ev("agent.tunnel.request_refused", "x", audit::Result::kFailure, "not json"),
                       "north", devices),
      "");
}

TEST(ReportEvents, SubjectRelationIsExactNotASubstring) {
  audit::Event e = Ev("auth.login", "");
  e.actor = "anna";
  EXPECT_EQ(SubjectRelation(e, "anna"), "actor");
  EXPECT_EQ(SubjectRelation(e, "ann"), "");
  e.actor_type = audit::ActorType::kDevice;  // a device id that happens to equal a name
  EXPECT_EQ(SubjectRelation(e, "anna"), "");
  e = Ev("user.disable", "anna");
  EXPECT_EQ(SubjectRelation(e, "anna"), "target");
  e = Ev("access.approve", "north/plc-1", audit::Result::kSuccess, R"({"requester":"anna"})");
  EXPECT_EQ(SubjectRelation(e, "anna"), "subject");
  EXPECT_EQ(SubjectRelation(e, "ann"), "");
  e = Ev("tunnel.kill", "north/plc-1", audit::Result::kSuccess, R"({"user":"anna"})");
  EXPECT_EQ(SubjectRelation(e, "anna"), "subject");
  e = Ev("tunnel.kill", "north/plc-1", audit::Result::kSuccess, R"({"reason":"anna said so"})");
  EXPECT_EQ(SubjectRelation(e, "anna"), "");
  EXPECT_EQ(SubjectRelation(e, ""), "");
}

// --- HTML ---

TEST(ReportHtml, EscapesMarkupAndReplacesBrokenUtf8AndControls) {
  EXPECT_EQ(HtmlEscape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
  EXPECT_EQ(HtmlEscape("M\xC3\xBCller \xE2\x82\xAC"), "M\xC3\xBCller \xE2\x82\xAC");  // ü €
  EXPECT_EQ(HtmlEscape("a\xFF"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(HtmlEscape("\xC0\xBC"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong '<'
  EXPECT_EQ(HtmlEscape("\xE2\x82"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // cut short
  EXPECT_EQ(HtmlEscape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(HtmlEscape(std::string("a\0b\x1b"
                                   "c",
                                   5)),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD"
            "c");
  EXPECT_EQ(HtmlEscape("line\nnext\ttab"), "line\nnext\ttab");
}

// --- assembled from a real store ---

class ReportsTest : public ::testing::Test {
 protected:
  ReportsTest() : clock_(At("2026-04-02T10:00:00Z")) {
    dir_ = fs::temp_directory_path() / ("reports_test_" + RandomToken(8));
    fs::create_directories(dir_);
    auto s = storage::OpenSqlite({.path = (dir_ / "t.db").string()});
    EXPECT_TRUE(s) << s.error().String();
    store_ = std::move(*s);
    config_.organisation = "Example Service GmbH";
    config_.audit.retention = {{"stream", std::chrono::hours(24 * 365)}};
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.clock = &clock_;
    AddUser("admin", "admin", "");
    AddUser("auditor", "auditor", "");
    AddUser("anna", "technician", "Maschinenbau AG");
    AddUser("ben", "technician", "Other Service KG");
    AddUser("approver", "approver", "Werk Nord");
    for (auto [name, site] : {std::pair{"gw-north", "north"}, {"gw-south", "south"}}) {
      storage::Device d;
      d.id = NewUuid();
      d.name = name;
      d.site = site;
      d.created = clock_.Now();
      EXPECT_TRUE(store_->devices().Create(d));
      devices_[site] = d.id;
    }
    req_.peer = "192.0.2.1:4443";
  }
  ~ReportsTest() override {
    service_.reset();
    access_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void AddUser(const std::string& name, const std::string& role, const std::string& org) {
    storage::User u;
    u.id = NewUuid();
    u.name = name;
    u.role = role;
    u.organisation = org;
    u.password_hash = "$argon2id$secret-hash";
    u.created = At("2026-01-05T08:00:00Z");
    EXPECT_TRUE(store_->users().Create(u));
  }

  std::string Grant(const std::string& user, const std::string& site, TimePoint created,
                    const std::string& reason, bool break_glass = false) {
    storage::AccessRequest r;
    r.id = "ar-" + HexEncode(RandomBytes(6));
    r.requester = user;
    r.site = site;
    r.target = "plc-1";
    r.reason = reason;
    r.duration = 2h;
    r.status = "active";
    r.break_glass = break_glass;
    r.created = created;
    r.starts = created + 1min;
    r.ends = created + 2h;
    r.approvals_required = break_glass ? 0 : 1;
    if (!break_glass) r.approvals.push_back({"approver", created + 1min, std::nullopt, "ok"});
    EXPECT_TRUE(store_->access().Create(r));
    return r.id;
  }

  std::string Session(const std::string& user, const std::string& site, const std::string& grant,
                      TimePoint opened, std::optional<TimePoint> closed) {
    storage::TunnelSession s;
    s.id = "st-" + HexEncode(RandomBytes(8));
    s.grant_id = grant;
    s.user = user;
    s.device_id = devices_[site];
    s.site = site;
    s.target = "plc-1";
    s.client = "198.51.100.7:50000";
    s.opened = opened;
    EXPECT_TRUE(store_->tunnels().Open(s));
    if (closed) {
      EXPECT_TRUE(store_->tunnels().Close(s.id, *closed, 1000, 20000, "closed by client"));
    }
    return s.id;
  }

  void Event(audit::Event e, TimePoint at) {
    e.time = at;
    if (e.category.empty()) e.category = "stream";
    EXPECT_TRUE(store_->audit().Append(e));
  }

  ReportService& Service() {
    if (!service_) {
      policies_ = std::make_unique<PolicyService>(ctx_);
      access_ = std::make_unique<AccessService>(ctx_, *policies_, nullptr);
      service_ = std::make_unique<ReportService>(ctx_, *access_, [] {
        audit::VerifyReport v;
        v.records = 42;
        v.last_seq = 42;
        v.anchored_through = 40;
        return Expected<audit::VerifyReport>(v);
      });
    }
    return *service_;
  }

  Principal Who(const std::string& name, const std::string& role) {
    Principal p;
    p.name = name;
    p.role = role;
    return p;
  }

  static std::vector<std::string> SessionIds(const ReportJson& r) {
    std::vector<std::string> ids;
    for (const auto& s : r["sessions"]) ids.push_back(s["id"].get<std::string>());
    return ids;
  }

  fs::path dir_;
  FakeClock clock_;
  ServerConfig config_;
  std::unique_ptr<storage::Store> store_;
  Context ctx_;
  std::map<std::string, std::string> devices_;
  http::Request req_;
  std::unique_ptr<PolicyService> policies_;
  std::unique_ptr<AccessService> access_;
  std::unique_ptr<ReportService> service_;
};

TEST_F(ReportsTest, MonthlyListsExactlyTheSiteSessionsOpenedInTheMonth) {
  const std::string g1 = Grant("anna", "north", At("2026-02-28T22:00:00Z"), "PLC firmware");
  const std::string g2 = Grant("ben", "north", At("2026-03-10T08:00:00Z"), "sensor swap");
  const std::string g3 = Grant("anna", "south", At("2026-03-11T08:00:00Z"), "south job");
  const std::string bg = Grant("anna", "north", At("2026-03-20T08:00:00Z"), "line down", true);
  // Opened on the last instant of February: February's, not March's.
  const std::string feb =
      Session("anna", "north", g1, At("2026-02-28T23:59:59Z"), At("2026-03-01T00:30:00Z"));
  // Opened in March on a grant from February: March's.
  const std::string m1 =
      Session("anna", "north", g1, At("2026-03-01T00:00:00Z"), At("2026-03-01T01:00:00Z"));
  const std::string m2 =
      Session("ben", "north", g2, At("2026-03-10T08:05:00Z"), At("2026-03-10T08:35:00Z"));
  const std::string other_site =
      Session("anna", "south", g3, At("2026-03-11T09:00:00Z"), At("2026-03-11T10:00:00Z"));
  const std::string bg_s = Session("anna", "north", bg, At("2026-03-20T08:01:00Z"), std::nullopt);
  // Opened in the last second of March, ended in April: March's.
  const std::string span =
      Session("ben", "north", g2, At("2026-03-31T23:59:59Z"), At("2026-04-01T02:00:00Z"));
  const std::string april =
      Session("ben", "north", g2, At("2026-04-01T00:00:00Z"), At("2026-04-01T00:10:00Z"));
  storage::StoredRecording rec;
  rec.id = m1;
  rec.device_id = devices_["north"];
  rec.user = "anna";
  rec.size = 4096;
  rec.sha256 = std::string(64, 'a');
  rec.uploaded = At("2026-03-01T01:05:00Z");
  rec.status = "verified";
  ASSERT_TRUE(store_->recordings().Insert(rec));

  // Audit events: refusals and kills at north, one at south, one outside the month.
  Event(Ev("tunnel.refused", "north/plc-1", audit::Result::kDenied), At("2026-03-05T10:00:00Z"));
  Event(Ev("tunnel.refused", "south/plc-1", audit::Result::kDenied), At("2026-03-05T10:00:00Z"));
  Event(Ev("tunnel.refused", "north/plc-1", audit::Result::kDenied), At("2026-04-01T00:00:00Z"));
  audit::Event modbus = Ev("agent.tunnel.request_refused", m2, audit::Result::kFailure,
                           R"({"site":"north","detail":{"function":6,"reason":"read-only"}})");
  modbus.actor_type = audit::ActorType::kDevice;
  modbus.actor = devices_["north"];
  Event(modbus, At("2026-03-10T08:10:00Z"));
  Event(Ev("tunnel.kill", "north/plc-1"), At("2026-03-10T08:35:00Z"));
  audit::Event q = Ev("device.quarantine", "gw-north");
  q.category = "device";
  Event(q, At("2026-03-15T12:00:00Z"));
  audit::Event denied = Ev("access.request", "north/plc-1", audit::Result::kDenied);
  denied.category = "access";
  Event(denied, At("2026-03-16T12:00:00Z"));

  auto r = Service().Monthly(req_, Who("auditor", "auditor"), "north", *ParseReportMonth("2026-03"),
                             false);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["schema"], "torwart.report.monthly/1");
  EXPECT_EQ(SessionIds(*r), (std::vector<std::string>{m1, m2, bg_s, span}));
  (void)feb, (void)other_site, (void)april;
  EXPECT_EQ((*r)["period"]["time_zone"], "UTC");
  EXPECT_EQ((*r)["period"]["from"], "2026-03-01T00:00:00Z");
  EXPECT_EQ((*r)["totals"]["sessions"], 4);
  EXPECT_EQ((*r)["totals"]["live_sessions"], 1);
  EXPECT_EQ((*r)["totals"]["users"], 2);
  EXPECT_EQ((*r)["totals"]["break_glass_sessions"], 1);
  EXPECT_EQ((*r)["totals"]["unreviewed_break_glass_sessions"], 1);
  EXPECT_EQ((*r)["totals"]["sessions_with_recording"], 1);
  EXPECT_EQ((*r)["totals"]["recordings_verified"], 1);
  EXPECT_EQ((*r)["totals"]["duration_seconds"], 3600 + 1800 + 7201);

  const ReportJson& s1 = (*r)["sessions"][0];
  EXPECT_EQ(s1["user"], "anna");
  EXPECT_EQ(s1["organisation"], "Maschinenbau AG");
  EXPECT_EQ(s1["device"], "gw-north");
  EXPECT_EQ(s1["duration_seconds"], 3600);
  EXPECT_EQ(s1["bytes_down"], 20000);
  EXPECT_EQ(s1["grant"]["id"], g1);
  EXPECT_EQ(s1["grant"]["reason"], "PLC firmware");
  EXPECT_EQ(s1["grant"]["approvals"][0]["approver"], "approver");
  EXPECT_EQ(s1["recording"]["id"], m1);
  EXPECT_EQ(s1["recording"]["verified"], true);
  EXPECT_TRUE((*r)["sessions"][1]["recording"].is_null());
  const ReportJson& live = (*r)["sessions"][2];
  EXPECT_EQ(live["state"], "live");
  EXPECT_TRUE(live["duration_seconds"].is_null());
  EXPECT_EQ(live["grant"]["break_glass"], true);
  EXPECT_EQ(live["grant"]["review"]["reviewed"], false);
  EXPECT_EQ((*r)["sessions"][3]["closed"], "2026-04-01T02:00:00Z");

  // Requests created in March at north: g2 and the break-glass one (g1 is February's).
  std::vector<std::string> req_ids;
  for (const auto& x : (*r)["access_requests"]) req_ids.push_back(x["id"].get<std::string>());
  EXPECT_EQ(req_ids, (std::vector<std::string>{g2, bg}));
  const ReportJson& ev = (*r)["audit_events"];
  EXPECT_EQ(ev["refused_streams"]["count"], 1);
  EXPECT_EQ(ev["refused_modbus"]["count"], 1);
  EXPECT_EQ(ev["refused_modbus"]["events"][0]["details"]["detail"]["function"], 6);
  EXPECT_EQ(ev["kills"]["count"], 1);
  EXPECT_EQ(ev["quarantines"]["count"], 1);
  EXPECT_EQ(ev["refused_requests"]["count"], 1);
  EXPECT_EQ((*r)["evidence"]["audit_chain"]["ok"], true);
  EXPECT_EQ((*r)["evidence"]["audit_chain"]["anchored_through"], 40);

  // Generating it was recorded, with what was asked for.
  audit::Query aq;
  aq.type_prefix = "report.generated";
  auto gen = store_->audit().Find(aq);
  ASSERT_TRUE(gen);
  ASSERT_EQ(gen->size(), 1u);
  EXPECT_EQ((*gen)[0].actor, "auditor");
  EXPECT_EQ((*gen)[0].target, "north");
  EXPECT_NE((*gen)[0].details.find("\"month\":\"2026-03\""), std::string::npos);

  // The south report of the same month has only its own session.
  auto south =
      Service().Monthly(req_, Who("admin", "admin"), "south", *ParseReportMonth("2026-03"), false);
  ASSERT_TRUE(south);
  EXPECT_EQ(SessionIds(*south), std::vector<std::string>{other_site});
  EXPECT_EQ((*south)["audit_events"]["refused_streams"]["count"], 1);
  EXPECT_EQ((*south)["audit_events"]["quarantines"]["count"], 0);

  // HTML carries the same sessions.
  const std::string html = RenderReportHtml(*r);
  for (const auto& id : {m1, m2, bg_s, span}) EXPECT_NE(html.find(id), std::string::npos) << id;
  EXPECT_EQ(html.find(feb), std::string::npos);
  EXPECT_EQ(html.find(april), std::string::npos);
  EXPECT_NE(html.find("BREAK-GLASS"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST_F(ReportsTest, AnEmptyMonthIsAnEmptyReportNotAnError) {
  const std::string g = Grant("anna", "north", At("2026-03-10T08:00:00Z"), "x");
  Session("anna", "north", g, At("2026-03-10T08:05:00Z"), At("2026-03-10T09:00:00Z"));
  auto r =
      Service().Monthly(req_, Who("admin", "admin"), "north", *ParseReportMonth("2026-02"), false);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE((*r)["sessions"].empty());
  EXPECT_TRUE((*r)["access_requests"].empty());
  EXPECT_EQ((*r)["totals"]["sessions"], 0);
  EXPECT_EQ((*r)["totals"]["bytes_up"], 0);
  EXPECT_EQ((*r)["sessions_truncated"], false);
  const std::string html = RenderReportHtml(*r);
  EXPECT_NE(html.find("No sessions."), std::string::npos);
  // An unknown site is an empty report too (sites live in the policy, which may have changed).
  auto unknown = Service().Monthly(req_, Who("admin", "admin"), "nowhere",
                                   *ParseReportMonth("2026-03"), false);
  ASSERT_TRUE(unknown);
  EXPECT_TRUE((*unknown)["sessions"].empty());
}

TEST_F(ReportsTest, OnlyAdminsAndAuditorsReadMonthlyReportsAndOthersOnlyTheirOwnSubject) {
  const auto march = *ParseReportMonth("2026-03");
  for (const char* role : {"operator", "approver", "technician", "vendor"}) {
    auto r = Service().Monthly(req_, Who("anna", role), "north", march, false);
    ASSERT_FALSE(r) << role;
    EXPECT_TRUE(r.error().Is(Errc::kPermissionDenied));
  }
  auto bad_site = Service().Monthly(req_, Who("admin", "admin"), "north/../x", march, false);
  ASSERT_FALSE(bad_site);
  EXPECT_TRUE(bad_site.error().Is(Errc::kInvalidArgument));
  auto other = Service().Subject(req_, Who("anna", "technician"), "ben", false);
  ASSERT_FALSE(other);
  EXPECT_TRUE(other.error().Is(Errc::kPermissionDenied));
  EXPECT_TRUE(Service().Subject(req_, Who("anna", "technician"), "anna", false));
  EXPECT_TRUE(Service().Subject(req_, Who("auditor", "auditor"), "ben", false));
  auto unknown = Service().Subject(req_, Who("auditor", "auditor"), "nobody", false);
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().Is(Errc::kNotFound));
  // Refusals are not reports: only the two granted ones were recorded.
  audit::Query aq;
  aq.type_prefix = "report.generated";
  auto gen = store_->audit().Find(aq);
  ASSERT_TRUE(gen);
  EXPECT_EQ(gen->size(), 2u);
}

TEST_F(ReportsTest, SubjectReportHasThePersonsDataAndNothingOfOthers) {
  const std::string ga = Grant("anna", "north", At("2026-03-01T08:00:00Z"), "PLC firmware");
  const std::string gb = Grant("ben", "north", At("2026-03-02T08:00:00Z"), "ben's job");
  const std::string a1 =
      Session("anna", "north", ga, At("2026-03-01T08:05:00Z"), At("2026-03-01T08:35:00Z"));
  const std::string a2 = Session("anna", "south", ga, At("2026-04-01T08:05:00Z"), std::nullopt);
  const std::string b1 =
      Session("ben", "north", gb, At("2026-03-02T08:05:00Z"), At("2026-03-02T09:00:00Z"));
  audit::Event login = Ev("auth.login", "");
  login.category = "auth";
  login.actor = "anna";
  Event(login, At("2026-03-01T07:59:00Z"));
  audit::Event ben_login = login;
  ben_login.actor = "ben";
  Event(ben_login, At("2026-03-01T07:59:30Z"));
  audit::Event approve = Ev("access.approve", "north/plc-1", audit::Result::kSuccess,
                            R"({"request":")" + ga + R"(","requester":"anna"})");
  approve.category = "access";
  approve.actor = "approver";
  Event(approve, At("2026-03-01T08:01:00Z"));
  ASSERT_TRUE(store_->mfa().PutPending(
      {store_->users().GetByName("anna")->id, "sealed", false, -1, clock_.Now(), std::nullopt}));

  auto r = Service().Subject(req_, Who("auditor", "auditor"), "anna", false);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["schema"], "torwart.report.subject/1");
  EXPECT_EQ(SessionIds(*r), (std::vector<std::string>{a1, a2}));
  EXPECT_EQ((*r)["account"]["organisation"], "Maschinenbau AG");
  EXPECT_EQ((*r)["account"]["mfa"], false);  // pending, not confirmed
  ASSERT_EQ((*r)["access_requests"].size(), 1u);
  EXPECT_EQ((*r)["access_requests"][0]["id"], ga);
  EXPECT_EQ((*r)["purposes"][0]["reason"], "PLC firmware");
  EXPECT_EQ((*r)["audit_events"]["by_type"]["auth.login"], 1);
  EXPECT_EQ((*r)["audit_events"]["by_type"]["access.approve"], 1);
  EXPECT_EQ((*r)["audit_events"]["by_type"]["report.generated"], 1);  // this very report
  EXPECT_EQ((*r)["retention"]["audit"][0]["category"], "stream");
  bool site_recipient = false;
  for (const auto& x : (*r)["recipients"]) {
    if (x["kind"] == "site operator" && x["name"] == "north") site_recipient = true;
  }
  EXPECT_TRUE(site_recipient);
  const std::string text = r->dump();
  EXPECT_EQ(text.find("ben"), std::string::npos);
  EXPECT_EQ(text.find(b1), std::string::npos);
  EXPECT_EQ(text.find(gb), std::string::npos);
  EXPECT_EQ(text.find("argon2id"), std::string::npos);  // never the password hash
  EXPECT_EQ(text.find("sealed"), std::string::npos);

  // Redacted: other persons become pseudonyms, the subject stays.
  auto red = Service().Subject(req_, Who("auditor", "auditor"), "anna", true);
  ASSERT_TRUE(red);
  const std::string red_text = red->dump();
  EXPECT_EQ(red_text.find("\"approver\":\"approver\""), std::string::npos);
  EXPECT_NE(red_text.find("person 1"), std::string::npos);
  EXPECT_EQ((*red)["subject"], "anna");
  EXPECT_EQ((*red)["header"]["generated_by"], "person 1");

  const std::string html = RenderReportHtml(*r);
  EXPECT_NE(html.find(a1), std::string::npos);
  EXPECT_NE(html.find(a2), std::string::npos);
  EXPECT_EQ(html.find(b1), std::string::npos);
}

TEST_F(ReportsTest, HostileTextIsEscapedInTheHtml) {
  AddUser("mallory", "technician", "\"><img src=x onerror=alert(1)>");
  const std::string g = Grant("mallory", "north", At("2026-03-03T08:00:00Z"),
                              "<script>alert(document.cookie)</script>");
  const std::string s =
      Session("mallory", "north", g, At("2026-03-03T08:05:00Z"), At("2026-03-03T08:06:00Z"));
  audit::Event e = Ev("tunnel.refused", "north/plc-1", audit::Result::kDenied);
  e.reason = "</td></tr></table><script>x()</script>";
  Event(e, At("2026-03-03T08:07:00Z"));
  auto r =
      Service().Monthly(req_, Who("admin", "admin"), "north", *ParseReportMonth("2026-03"), false);
  ASSERT_TRUE(r);
  const std::string html = RenderReportHtml(*r);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;x()&lt;/script&gt;"),
            std::string::npos);
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<table"), count("</table>"));  // the hostile reason closed none of ours
  EXPECT_EQ(count("<tr>"), count("</tr>"));
  EXPECT_NE(html.find("&lt;script&gt;alert(document.cookie)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);
  EXPECT_NE(html.find(s), std::string::npos);
  // One document, self-contained: no external references, no script, balanced end.
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(html.find("src="), html.find("src=x"));  // only inside escaped text
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

TEST(ReportBuild, TruncationAndRedactionAreStatedInTheReport) {
  MonthlyInput in;
  in.site = "north";
  in.month = *ParseReportMonth("2026-03");
  in.header.generated = At("2026-04-02T10:00:00Z");
  in.header.generated_by = "auditor";
  in.header.redact = true;
  storage::TunnelSession s;
  s.id = "st-0000000000000001";
  s.user = "anna";
  s.site = "north";
  s.client = "198.51.100.7:50000";
  s.opened = At("2026-03-02T10:00:00Z");
  in.sessions = {s};
  in.sessions_truncated = true;
  in.organisations["anna"] = "Maschinenbau AG";
  in.event_counts["kills"] = 12;
  in.events.push_back(Ev("tunnel.kill", "north/plc-1"));
  auto r = BuildMonthlyReport(in);
  EXPECT_EQ(r["sessions_truncated"], true);
  EXPECT_EQ(r["audit_events"]["kills"]["count"], 12);
  EXPECT_EQ(r["audit_events"]["kills"]["listed"], 1);
  const std::string text = r.dump();
  EXPECT_NE(text.find("TRUNCATED"), std::string::npos);
  EXPECT_NE(text.find("only the first 1 of 12"), std::string::npos);
  EXPECT_EQ(text.find("anna"), std::string::npos);
  EXPECT_EQ(text.find("someone"), std::string::npos);
  EXPECT_EQ(text.find("198.51.100.7"), std::string::npos);
  EXPECT_EQ(r["sessions"][0]["organisation"], "Maschinenbau AG");  // organisations stay
  EXPECT_EQ(r["evidence"]["audit_chain"]["verified"], false);      // nothing verified it
  EXPECT_NE(RenderReportHtml(r).find("TRUNCATED"), std::string::npos);
}

}  // namespace
}  // namespace torwart::server
