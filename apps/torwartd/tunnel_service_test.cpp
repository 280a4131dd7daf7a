// The tunnel service's decisions against a real SQLite store, a real CA (for grant and device
// certificates), the example policy, a fake relay and a fake control channel: who may open a
// stream, what the gateway is told, what is recorded and audited, and the kill paths.
#include "tunnel_service.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "policy_api.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/tunnel/wire.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

std::string ExamplePolicy() {
  std::ifstream f(std::string(TORWART_SOURCE_DIR) + "/api/examples/policy.jsonc");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class FakeRelay final : public tunnel::Relay {
 public:
  uint16_t port() const override { return 8444; }
  size_t Kill(const std::string& id, const std::string& reason) override {
    return Remove([&](const tunnel::LiveStream& s) { return s.plan.stream_id == id; }, "stream", id,
                  reason);
  }
  size_t KillGrant(const std::string& id, const std::string& reason) override {
    return Remove([&](const tunnel::LiveStream& s) { return s.plan.grant_id == id; }, "grant", id,
                  reason);
  }
  size_t KillDevice(const std::string& id, const std::string& reason) override {
    return Remove([&](const tunnel::LiveStream& s) { return s.plan.device_id == id; }, "device", id,
                  reason);
  }
  std::vector<tunnel::LiveStream> List() const override {
    std::lock_guard lock(mu_);
    return live_;
  }
  void Stop() override {}

  void Add(const tunnel::StreamPlan& p) {
    std::lock_guard lock(mu_);
    tunnel::LiveStream s;
    s.plan = p;
    s.paired = true;
    s.bytes_up = 7;
    s.bytes_down = 11;
    live_.push_back(s);
  }
  // "stream st-…: reason" for every kill that ended at least one stream.
  std::vector<std::string> kills() const {
    std::lock_guard lock(mu_);
    return kills_;
  }

 private:
  template <class Pred>
  size_t Remove(Pred pred, const char* what, const std::string& id, const std::string& reason) {
    std::lock_guard lock(mu_);
    size_t before = live_.size();
    std::erase_if(live_, pred);
    size_t n = before - live_.size();
    if (n > 0) kills_.push_back(std::string(what) + " " + id + ": " + reason);
    return n;
  }
  mutable std::mutex mu_;
  std::vector<tunnel::LiveStream> live_;
  std::vector<std::string> kills_;
};

class FailingSink final : public audit::Sink {
 public:
  Expected<void> Append(audit::Event) override { return MakeError(Errc::kIo, "disk full"); }
};

struct SentCommand {
  std::string device, cmd;
  json args;
};

class TunnelServiceTest : public ::testing::Test {
 protected:
  TunnelServiceTest() : clock_(FromUnix(1795356412)) {
    dir_ = fs::temp_directory_path() / ("tunnel_test_" + RandomToken(8));
    fs::create_directories(dir_);
    auto s = storage::OpenSqlite({.path = (dir_ / "t.db").string()});
    EXPECT_TRUE(s) << s.error().String();
    store_ = std::move(*s);
    config_.data_dir = dir_.string();
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.clock = &clock_;
    for (auto [name, role] : {std::pair{"admin", "admin"},
                              {"olga", "operator"},
                              {"anna@example.com", "technician"},
                              {"ben@example.com", "technician"},
                              {"audrey", "auditor"}}) {
      storage::User u;
      u.id = NewUuid();
      u.name = name;
      u.role = role;
      u.password_hash = "x";
      u.created = clock_.Now();
      EXPECT_TRUE(store_->users().Create(u));
    }
    std::vector<policy::Diagnostic> errors;
    http::Request req;
    auto applied =
        policies_.Apply(ExamplePolicy(), Principal{"id", "admin", "admin"}, "", req, &errors);
    EXPECT_TRUE(applied) << applied.error().message();

    // gw-kiel carries kasse-kiel-1 (filiale-kiel) in the example policy.
    gateway_ = AddDevice("gw-kiel", true);
    grant_ = AddGrant("ar-00000000000a", "anna@example.com", 1h);

    pki::CaSettings cs;
    cs.dir = dir_ / "ca";
    auto ca = pki::CertificateAuthority::OpenOrCreate(cs, clock_);
    EXPECT_TRUE(ca) << ca.error().String();
    ca_ = std::move(*ca);

    service_ = std::make_unique<TunnelService>(ctx_, *access_, policies_);
    service_->SetCommandSender([this](const std::string& device, const std::string& cmd,
                                      const std::string& args,
                                      std::chrono::milliseconds) -> Expected<PingResult> {
      std::lock_guard lock(mu_);
      sent_.push_back({device, cmd, json::parse(args)});
      if (answer_) return *answer_;
      PingResult ok;
      ok.ok = true;
      return ok;
    });
    auto relay = std::make_unique<FakeRelay>();
    relay_ = relay.get();
    service_->StartWith(std::move(relay), "relay.example", 8444);
  }

  ~TunnelServiceTest() override {
    service_.reset();
    access_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  storage::Device AddDevice(const std::string& name, bool online) {
    storage::Device d;
    d.id = NewUuid();
    d.name = name;
    d.site = "filiale-kiel";
    d.status = "enrolled";
    d.created = clock_.Now();
    EXPECT_TRUE(store_->devices().Create(d));
    EXPECT_TRUE(store_->device_state().SetStatus(d.id, online, "test", clock_.Now(), true));
    return d;
  }

  storage::AccessRequest AddGrant(const std::string& id, const std::string& user,
                                  std::chrono::seconds length) {
    storage::AccessRequest r;
    r.id = id;
    r.requester = user;
    r.site = "filiale-kiel";
    r.target = "kasse-kiel-1";
    r.scopes = {"rdp"};
    r.reason = "till hangs";
    r.duration = length;
    r.status = "active";
    r.on_site_consent = true;
    r.created = clock_.Now();
    r.starts = clock_.Now();
    r.ends = clock_.Now() + length;
    EXPECT_TRUE(store_->access().Create(r));
    return r;
  }

  tunnel::Leg GrantLeg(const storage::AccessRequest& r) {
    pki::GrantClaims c;
    c.grant_id = r.id;
    c.user = r.requester;
    c.site = r.site;
    c.target = r.target;
    c.scopes = r.scopes;
    c.not_after = std::chrono::time_point_cast<std::chrono::seconds>(*r.ends);
    auto key = pki::GenerateP256Key();
    EXPECT_TRUE(key);
    auto cert = ca_->IssueGrantCertificate(key->get(), c);
    EXPECT_TRUE(cert) << cert.error().String();
    auto der = pki::CertToDer(cert->get());
    EXPECT_TRUE(der);
    return tunnel::Leg{"192.0.2.7:50001", *der};
  }

  tunnel::Leg DeviceLeg(const std::string& uuid) {
    auto key = pki::GenerateP256Key();
    EXPECT_TRUE(key);
    auto cert = ca_->IssueDeviceCertificate(key->get(), uuid, 1h, "");
    EXPECT_TRUE(cert) << cert.error().String();
    return tunnel::Leg{"192.0.2.9:40000", *pki::CertToDer(cert->get())};
  }

  std::vector<audit::Event> Events(const std::string& type) {
    audit::Query q;
    q.type_prefix = type;
    auto e = store_->audit().Find(q);
    EXPECT_TRUE(e);
    return e ? *e : std::vector<audit::Event>{};
  }

  std::vector<SentCommand> Sent() {
    service_->Flush();
    std::lock_guard lock(mu_);
    return sent_;
  }

  Actor A(const std::string& name) {
    auto u = store_->users().GetByName(name);
    return Actor{name, u ? u->role : "technician", "127.0.0.1:1"};
  }

  fs::path dir_;
  FakeClock clock_;
  ServerConfig config_;
  std::unique_ptr<storage::Store> store_;
  Context ctx_;
  PolicyService policies_{ctx_};
  std::unique_ptr<TunnelService> service_;
  std::unique_ptr<AccessService> access_ = std::make_unique<AccessService>(
      ctx_, policies_, nullptr,
      [this](const storage::AccessRequest& r) { service_->OnGrantRevoked(r); });
  std::unique_ptr<pki::CertificateAuthority> ca_;
  FakeRelay* relay_ = nullptr;
  storage::Device gateway_;
  storage::AccessRequest grant_;
  std::mutex mu_;
  std::vector<SentCommand> sent_;
  std::optional<Expected<PingResult>> answer_;
};

TEST_F(TunnelServiceTest, AnActiveGrantOpensAStreamToItsGateway) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan) << plan.error().String();
  EXPECT_TRUE(tunnel::IsStreamId(plan->stream_id));
  EXPECT_EQ(plan->device_id, gateway_.id);
  EXPECT_EQ(plan->grant_id, grant_.id);
  EXPECT_EQ(plan->user, "anna@example.com");
  EXPECT_EQ(plan->target, "kasse-kiel-1");
  EXPECT_EQ(plan->deadline, *grant_.ends);

  auto row = store_->tunnels().Get(plan->stream_id);
  ASSERT_TRUE(row) << row.error().String();
  EXPECT_EQ(row->client, "192.0.2.7:50001");
  EXPECT_EQ(row->site, "filiale-kiel");
  EXPECT_FALSE(row->closed);

  auto opened = Events("tunnel.open");
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].actor, "anna@example.com");
  EXPECT_EQ(opened[0].target, "filiale-kiel/kasse-kiel-1");
  EXPECT_EQ(opened[0].source, "192.0.2.7:50001");
  EXPECT_NE(opened[0].details.find(plan->stream_id), std::string::npos);
  EXPECT_NE(opened[0].details.find(gateway_.id), std::string::npos);
}

TEST_F(TunnelServiceTest, RefusalsSayWhyAndAreAudited) {
  auto expect_refused = [&](const tunnel::Leg& leg, Errc code, const std::string& text) {
    auto plan = service_->Authorize(leg);
    ASSERT_FALSE(plan) << "expected a refusal containing: " << text;
    EXPECT_TRUE(plan.error().Is(code)) << plan.error().String();
    EXPECT_NE(plan.error().message().find(text), std::string::npos) << plan.error().message();
  };
  // A device certificate is no grant.
  expect_refused(DeviceLeg(gateway_.id), Errc::kPermissionDenied, "not a grant certificate");
  // Gateway offline, quarantined, revoked.
  ASSERT_TRUE(store_->device_state().SetStatus(gateway_.id, false, "", clock_.Now(), true));
  expect_refused(GrantLeg(grant_), Errc::kUnavailable, "gateway gw-kiel is offline");
  ASSERT_TRUE(store_->device_state().SetStatus(gateway_.id, true, "", clock_.Now(), true));
  ASSERT_TRUE(store_->tunnels().SetQuarantine(
      {gateway_.id, true, "CVE-2026-0001", "admin", clock_.Now(), false}));
  expect_refused(GrantLeg(grant_), Errc::kPermissionDenied, "quarantined: CVE-2026-0001");
  ASSERT_TRUE(
      store_->tunnels().SetQuarantine({gateway_.id, false, "", "admin", clock_.Now(), false}));
  ASSERT_TRUE(service_->Authorize(GrantLeg(grant_)));  // positive control
  // The user is disabled.
  auto u = store_->users().GetByName("anna@example.com");
  u->disabled = true;
  ASSERT_TRUE(store_->users().Update(*u));
  expect_refused(GrantLeg(grant_), Errc::kPermissionDenied, "disabled");
  u->disabled = false;
  ASSERT_TRUE(store_->users().Update(*u));
  // Revoked, then (another grant) expired.
  auto revoked = access_->Revoke(A("admin"), grant_.id, "done");
  ASSERT_TRUE(revoked) << revoked.error().String();
  expect_refused(GrantLeg(grant_), Errc::kPermissionDenied, "was revoked");
  auto short_grant = AddGrant("ar-00000000000b", "anna@example.com", 60s);
  tunnel::Leg leg = GrantLeg(short_grant);
  clock_.Advance(61s);
  expect_refused(leg, Errc::kExpired, "has expired");

  auto refused = Events("tunnel.refused");
  EXPECT_EQ(refused.size(), 6u);
  for (const auto& e : refused) EXPECT_EQ(e.result, audit::Result::kDenied);
  EXPECT_EQ(Events("tunnel.open").size(), 1u);
}

TEST_F(TunnelServiceTest, OpeningFailsClosedWhenTheAuditTrailCannotBeWritten) {
  FailingSink failing;
  ctx_.audit = &failing;
  auto plan = service_->Authorize(GrantLeg(grant_));
  ctx_.audit = nullptr;
  ASSERT_FALSE(plan);
  EXPECT_TRUE(plan.error().Is(Errc::kUnavailable)) << plan.error().String();
  auto live = store_->tunnels().List("", true, 10);
  ASSERT_TRUE(live);
  EXPECT_TRUE(live->empty());  // the row was closed again
  auto all = store_->tunnels().List("", false, 10);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_NE((*all)[0].end_reason.find("audit"), std::string::npos);
}

TEST_F(TunnelServiceTest, TheGatewayIsToldEverythingItChecksAndItsRefusalReachesTheTechnician) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  ASSERT_TRUE(service_->NotifyGateway(*plan));
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].device, gateway_.id);
  EXPECT_EQ(sent[0].cmd, "stream.open");
  EXPECT_EQ(sent[0].args, (json{{"stream", plan->stream_id},
                                {"relay", "relay.example:8444"},
                                {"relay_name", "relay.example"},
                                {"grant", grant_.id},
                                {"user", "anna@example.com"},
                                {"site", "filiale-kiel"},
                                {"target", "kasse-kiel-1"},
                                {"scopes", {"rdp"}},
                                {"consent_required", true},
                                {"deadline", ToUnix(*grant_.ends)}}));

  PingResult no;
  no.ok = false;
  no.error = "on-site consent is off";
  no.code = "consent";
  answer_ = no;
  auto refused = service_->NotifyGateway(*plan);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().Is(Errc::kPermissionDenied)) << refused.error().String();
  EXPECT_NE(refused.error().message().find("on-site consent is off"), std::string::npos);
  auto audited = Events("tunnel.refused");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].actor, gateway_.id);
  EXPECT_EQ(audited[0].reason, "on-site consent is off");

  answer_ = Expected<PingResult>(MakeError(Errc::kTimeout, "device did not answer in time"));
  auto silent = service_->NotifyGateway(*plan);
  ASSERT_FALSE(silent);
  EXPECT_TRUE(silent.error().Is(Errc::kUnavailable));
  EXPECT_NE(silent.error().message().find("did not answer"), std::string::npos);
}

TEST_F(TunnelServiceTest, TheEndIsRecordedWithBytesAndReason) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  clock_.Advance(90s);
  tunnel::StreamEnd end;
  end.plan = *plan;
  end.bytes_up = 1234;
  end.bytes_down = 56789;
  end.paired = true;
  end.reason = "closed by technician";
  service_->OnEnd(end);
  auto row = store_->tunnels().Get(plan->stream_id);
  ASSERT_TRUE(row);
  ASSERT_TRUE(row->closed);
  EXPECT_EQ(*row->closed, clock_.Now());
  EXPECT_EQ(row->bytes_up, 1234);
  EXPECT_EQ(row->bytes_down, 56789);
  EXPECT_EQ(row->end_reason, "closed by technician");
  auto closed = Events("tunnel.close");
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].reason, "closed by technician");
  EXPECT_NE(closed[0].details.find("\"seconds\":90"), std::string::npos) << closed[0].details;

  auto listed = service_->List(A("audrey"), false);
  ASSERT_TRUE(listed);
  ASSERT_EQ((*listed)["tunnels"].size(), 1u);
  EXPECT_EQ((*listed)["tunnels"][0]["state"], "ended");
  EXPECT_EQ((*listed)["tunnels"][0]["device"], "gw-kiel");
  EXPECT_EQ((*listed)["tunnels"][0]["bytes_down"], 56789);
}

TEST_F(TunnelServiceTest, OwnersAndOperatorsKillStreamsOthersDoNotSeeThem) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  relay_->Add(*plan);

  // Ben neither sees nor kills Anna's stream.
  auto bens = service_->List(A("ben@example.com"), true);
  ASSERT_TRUE(bens);
  EXPECT_TRUE((*bens)["tunnels"].empty());
  auto by_ben = service_->Kill(A("ben@example.com"), plan->stream_id, "mine now");
  ASSERT_FALSE(by_ben);
  EXPECT_TRUE(by_ben.error().Is(Errc::kNotFound));
  EXPECT_TRUE(relay_->kills().empty());

  auto annas = service_->List(A("anna@example.com"), true);
  ASSERT_TRUE(annas);
  ASSERT_EQ((*annas)["tunnels"].size(), 1u);
  EXPECT_EQ((*annas)["tunnels"][0]["bytes_down"], 11);  // live counts come from the relay

  auto n = service_->Kill(A("olga"), plan->stream_id, "unplanned");
  ASSERT_TRUE(n) << n.error().String();
  EXPECT_EQ(*n, 1u);
  ASSERT_EQ(relay_->kills().size(), 1u);
  EXPECT_EQ(relay_->kills()[0], "stream " + plan->stream_id + ": by olga: unplanned");
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].cmd, "stream.kill");
  EXPECT_EQ(sent[0].args["stream"], plan->stream_id);
  auto audited = Events("tunnel.kill");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].actor, "olga");

  EXPECT_FALSE(service_->Kill(A("admin"), "st-nothex", ""));
}

TEST_F(TunnelServiceTest, RevokingAGrantKillsItsStreamsAndTellsTheGateway) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  relay_->Add(*plan);
  auto other = AddGrant("ar-00000000000c", "ben@example.com", 1h);
  auto plan2 = service_->Authorize(GrantLeg(other));
  ASSERT_TRUE(plan2);
  relay_->Add(*plan2);

  ASSERT_TRUE(access_->Revoke(A("anna@example.com"), grant_.id, "finished early"));
  auto kills = relay_->kills();
  ASSERT_FALSE(kills.empty());
  EXPECT_EQ(kills[0], "grant " + grant_.id + ": grant revoked");
  EXPECT_EQ(relay_->List().size(), 1u);  // Ben's stream lives on
  bool told = false;
  for (const auto& c : Sent()) {
    told |=
        c.cmd == "stream.kill" && c.device == gateway_.id && c.args.value("grant", "") == grant_.id;
  }
  EXPECT_TRUE(told);
}

TEST_F(TunnelServiceTest, TheReaperEndsStreamsOfDisabledUsers) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  relay_->Add(*plan);
  EXPECT_EQ(service_->Sweep(), 0u);
  auto u = store_->users().GetByName("anna@example.com");
  u->disabled = true;
  ASSERT_TRUE(store_->users().Update(*u));
  (void)service_->Sweep();  // the reaper thread may have been first
  EXPECT_TRUE(relay_->List().empty());
  ASSERT_FALSE(relay_->kills().empty());
  EXPECT_NE(relay_->kills()[0].find("user disabled"), std::string::npos) << relay_->kills()[0];
}

TEST_F(TunnelServiceTest, QuarantineKillsRefusesAndReachesTheAgentWhenItComesOnline) {
  auto plan = service_->Authorize(GrantLeg(grant_));
  ASSERT_TRUE(plan);
  relay_->Add(*plan);
  auto j = service_->Quarantine(A("admin"), "gw-kiel", true, "CVE-2026-0002");
  ASSERT_TRUE(j) << j.error().String();
  EXPECT_EQ((*j)["quarantined"], true);
  EXPECT_EQ((*j)["quarantine"]["reason"], "CVE-2026-0002");
  EXPECT_EQ((*j)["streams_killed"], 1);
  EXPECT_TRUE(relay_->List().empty());
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].cmd, "quarantine");
  EXPECT_EQ(sent[0].args, (json{{"on", true}, {"reason", "CVE-2026-0002"}}));
  auto q = store_->tunnels().GetQuarantine(gateway_.id);
  ASSERT_TRUE(q && q->has_value());
  EXPECT_TRUE((*q)->synced);
  EXPECT_FALSE(service_->Authorize(GrantLeg(grant_)));
  tunnel::Leg gw = DeviceLeg(gateway_.id);
  EXPECT_FALSE(service_->AcceptGateway(*plan, gw));
  EXPECT_EQ(Events("device.quarantine").size(), 1u);

  // Released while offline: the agent learns it when it is back.
  ASSERT_TRUE(store_->device_state().SetStatus(gateway_.id, false, "", clock_.Now(), true));
  ASSERT_TRUE(service_->Quarantine(A("olga"), "gw-kiel", false, "patched"));
  EXPECT_EQ(Sent().size(), 1u);
  ASSERT_TRUE(store_->device_state().SetStatus(gateway_.id, true, "", clock_.Now(), true));
  service_->OnDeviceOnline(gateway_.id);
  sent = Sent();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[1].args, (json{{"on", false}, {"reason", "patched"}}));
  EXPECT_EQ(Events("device.release").size(), 1u);
  // Confirmed: the next reconnect sends nothing.
  service_->OnDeviceOnline(gateway_.id);
  EXPECT_EQ(Sent().size(), 2u);
  EXPECT_TRUE(service_->Authorize(GrantLeg(grant_)));
  EXPECT_TRUE(service_->AcceptGateway(*plan, gw));

  auto missing = service_->Quarantine(A("admin"), "no-such-gw", true, "");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().Is(Errc::kNotFound));
}

}  // namespace
}  // namespace torwart::server
