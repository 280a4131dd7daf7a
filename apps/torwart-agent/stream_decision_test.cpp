#include "stream_decision.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const int64_t kNow = 1'800'000'000;

json ValidArgs() {
  return json{{"stream", "st-0123456789abcdef"},
              {"relay", "relay.example:8444"},
              {"relay_name", "torwart.example"},
              {"grant", "ar-0a1b2c3d4e5f"},
              {"user", "max.wagner@werk.example"},
              {"site", "werk-nord"},
              {"target", "presse-1-plc"},
              {"scopes", {"modbus:read"}},
              {"consent_required", false},
              {"deadline", kNow + 3600},
              {"some_future_field", 1}};
}

TEST(StreamOpen, ParsesTheCommand) {
  auto r = ParseStreamOpen(ValidArgs(), kNow);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->stream, "st-0123456789abcdef");
  EXPECT_EQ(r->relay_host, "relay.example");
  EXPECT_EQ(r->relay_port, 8444);
  EXPECT_EQ(r->relay_name, "torwart.example");
  EXPECT_EQ(r->grant, "ar-0a1b2c3d4e5f");
  EXPECT_EQ(r->scopes, std::vector<std::string>{"modbus:read"});
  EXPECT_FALSE(r->consent_required);
  EXPECT_EQ(r->deadline, kNow + 3600);
  json a = ValidArgs();
  a.erase("relay_name");
  a.erase("scopes");
  a.erase("consent_required");
  auto d = ParseStreamOpen(a, kNow);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->relay_name, "relay.example") << "defaults to the relay host";
  EXPECT_TRUE(d->scopes.empty());
}

TEST(StreamOpen, RejectsMalformedCommands) {
  std::vector<std::pair<const char*, json>> edits = {
      {"stream", nullptr},
      {"stream", "st-XYZ"},
      {"stream", "st-0123456789ABCDEF"},
      {"stream", 5},
      {"relay", "relay.example"},
      {"relay", "h:0"},
      {"grant", ""},
      {"user", std::string(300, 'u')},
      {"target", "a\nb"},
      {"site", json::array()},
      {"scopes", "modbus:read"},
      {"scopes", {1}},
      {"consent_required", "yes"},
      {"deadline", "soon"},
      {"deadline", kNow},
      {"deadline", kNow - 1},
      {"deadline", 1.5},
  };
  for (const auto& [key, value] : edits) {
    json a = ValidArgs();
    if (value.is_null()) {
      a.erase(key);
    } else {
      a[key] = value;
    }
    EXPECT_FALSE(ParseStreamOpen(a, kNow)) << key << " = " << value.dump();
  }
  EXPECT_FALSE(ParseStreamOpen(json::array(), kNow));
  json many = ValidArgs();
  many["scopes"] = json::array();
  for (int i = 0; i < 33; ++i) many["scopes"].push_back("s" + std::to_string(i));
  EXPECT_FALSE(ParseStreamOpen(many, kNow));
}

struct DecisionFixture : ::testing::Test {
  DecisionFixture() {
    auto sc = ParseSiteConfig(R"(
[[target]]
name = "presse-1-plc"
address = "10.20.1.11:502"
protocol = "modbus"
site = "werk-nord"
[[target]]
name = "hmi"
address = "10.20.1.12:443"
protocol = "https"
consent = true
[streams]
max_streams = 2
)",
                              "site.toml");
    EXPECT_TRUE(sc);
    site = *sc;
    req = *ParseStreamOpen(ValidArgs(), kNow);
    in.site = &site;
  }
  SiteConfig site;
  OpenRequest req;
  DecisionInput in;
};

TEST_F(DecisionFixture, AcceptsAnAllowlistedTarget) {
  Decision d = DecideOpen(req, in);
  ASSERT_TRUE(d.ok) << d.message;
  EXPECT_EQ(d.target.host, "10.20.1.11");
  EXPECT_EQ(d.target.protocol, "modbus");
  EXPECT_FALSE(d.needs_consent);
}

// The order is part of the contract: quarantine, allowlist, consent, limits.
TEST_F(DecisionFixture, RefusalsComeInTheDocumentedOrder) {
  // Everything wrong at once: quarantine wins.
  req.target = "not-here";
  req.consent_required = true;
  in.quarantine = {true, "CVE-2026-0001", kNow};
  in.live_streams = 99;
  in.recording_space = false;
  Decision d = DecideOpen(req, in);
  EXPECT_FALSE(d.ok);
  EXPECT_EQ(d.code, "quarantined");
  EXPECT_NE(d.message.find("CVE-2026-0001"), std::string::npos);
  // Then the allowlist.
  in.quarantine = {};
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "not_allowed");
  EXPECT_EQ(d.message, "target not-here is not on this gateway's allowlist");
  // Then consent.
  req.target = "presse-1-plc";
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "consent");
  EXPECT_NE(d.message.find("consent on"), std::string::npos);
  // Then the stream limit, then the recording space.
  in.consent.on = true;
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "busy");
  EXPECT_NE(d.message.find("max_streams = 2"), std::string::npos);
  in.live_streams = 1;
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "busy");
  EXPECT_NE(d.message.find("recording quota"), std::string::npos);
  in.recording_space = true;
  d = DecideOpen(req, in);
  EXPECT_TRUE(d.ok);
  EXPECT_TRUE(d.needs_consent);
}

TEST_F(DecisionFixture, SiteAndConsentOfTheTarget) {
  req.site = "werk-sued";
  Decision d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "not_allowed");
  EXPECT_NE(d.message.find("belongs to site werk-nord"), std::string::npos);
  // hmi has no site in site.toml (any site) but needs consent itself.
  req.target = "hmi";
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "consent");
  in.consent.on = true;
  d = DecideOpen(req, in);
  EXPECT_TRUE(d.ok);
  EXPECT_TRUE(d.needs_consent);
}

TEST_F(DecisionFixture, NoOrBrokenSiteConfigAllowsNothing) {
  SiteConfig none;  // no site.toml
  in.site = &none;
  Decision d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "not_allowed");
  EXPECT_EQ(d.message, "target presse-1-plc is not on this gateway's allowlist");
  in.site = nullptr;
  in.site_error = "site.toml:3:1: unknown key 'x'";
  d = DecideOpen(req, in);
  EXPECT_EQ(d.code, "not_allowed");
  EXPECT_NE(d.message.find("site.toml:3:1"), std::string::npos);
}

// --- grant certificates and the CRL -------------------------------------------------------------

class GrantFixture : public ::testing::Test {
 protected:
  GrantFixture() : clock_(FromUnix(kNow)) {
    dir_ = fs::temp_directory_path() / ("agent-grant-" + RandomToken(6));
    auto ca = pki::CertificateAuthority::OpenOrCreate(pki::CaSettings{.dir = dir_ / "ca"}, clock_);
    EXPECT_TRUE(ca);
    ca_ = std::move(*ca);
    auto other =
        pki::CertificateAuthority::OpenOrCreate(pki::CaSettings{.dir = dir_ / "other"}, clock_);
    EXPECT_TRUE(other);
    other_ = std::move(*other);
    req_ = *ParseStreamOpen(ValidArgs(), kNow);
  }
  ~GrantFixture() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  pki::GrantClaims Claims() {
    return pki::GrantClaims{req_.grant,  req_.user,       req_.site,
                            req_.target, {"modbus:read"}, FromUnix(kNow + 1800)};
  }
  std::string Issue(const pki::GrantClaims& c, pki::X509Ptr* out = nullptr) {
    auto key = pki::GenerateP256Key();
    auto cert = ca_->IssueGrantCertificate(key->get(), c);
    EXPECT_TRUE(cert) << cert.error().message();
    std::string der = *pki::CertToDer(cert->get());
    if (out) *out = std::move(*cert);
    return der;
  }
  RevocationList Crl(const std::vector<std::string>& serials) {
    std::vector<pki::RevokedEntry> e;
    for (const auto& s : serials) e.push_back({s, clock_.Now(), pki::kReasonUnspecified});
    auto der = ca_->MakeCrlDer(e, 3, std::chrono::hours(1));
    auto list = RevocationList::FromDer(*der, ca_->ChainPem());
    EXPECT_TRUE(list) << list.error().message();
    return *list;
  }
  fs::path dir_;
  FakeClock clock_;
  std::unique_ptr<pki::CertificateAuthority> ca_, other_;
  OpenRequest req_;
};

TEST_F(GrantFixture, RevocationListIsVerified) {
  RevocationList crl = Crl({"abc123", "ff"});
  EXPECT_TRUE(crl.Revoked("abc123"));
  EXPECT_FALSE(crl.Revoked("abc124"));
  EXPECT_EQ(crl.size(), 2u);
  EXPECT_EQ(crl.number(), 3);
  EXPECT_EQ(crl.next_update(), FromUnix(kNow + 3600));
  auto foreign = other_->MakeCrlDer({}, 1, std::chrono::hours(1));
  auto f = RevocationList::FromDer(*foreign, ca_->ChainPem());
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("not signed by our CA"), std::string::npos);
  EXPECT_FALSE(RevocationList::FromDer("garbage", ca_->ChainPem()));
  std::string der = *ca_->MakeCrlDer({}, 1, std::chrono::hours(1));
  der[der.size() - 5] ^= 1;  // in the signature
  EXPECT_FALSE(RevocationList::FromDer(der, ca_->ChainPem()));
  EXPECT_FALSE(RevocationList::FromDer(der + "x", ca_->ChainPem()));
}

TEST_F(GrantFixture, AcceptsTheMatchingGrantAndTakesTheEarliestDeadline) {
  RevocationList crl = Crl({});
  auto g = CheckGrantCertificate(Issue(Claims()), req_, &crl, clock_.Now());
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ(g->grant_id, req_.grant);
  EXPECT_EQ(g->user, req_.user);
  EXPECT_EQ(g->target, "presse-1-plc");
  EXPECT_EQ(g->scopes, std::vector<std::string>{"modbus:read"});
  EXPECT_EQ(g->deadline, FromUnix(kNow + 1800)) << "certificate ends before stream.open's deadline";
  req_.deadline = kNow + 600;
  g = CheckGrantCertificate(Issue(Claims()), req_, &crl, clock_.Now());
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deadline, FromUnix(kNow + 600)) << "the server's deadline is earlier";
}

TEST_F(GrantFixture, RefusesMismatchesRevocationAndExpiry) {
  RevocationList empty = Crl({});
  struct Case {
    const char* what;
    std::function<void(pki::GrantClaims&)> edit;
    const char* want;
  } cases[] = {
      {"grant", [](pki::GrantClaims& c) { c.grant_id = "ar-ffffffffffff"; }, "for grant"},
      {"user", [](pki::GrantClaims& c) { c.user = "mallory"; }, "for user"},
      {"target", [](pki::GrantClaims& c) { c.target = "hmi"; }, "for target"},
      {"site", [](pki::GrantClaims& c) { c.site = "werk-sued"; }, "for site"},
  };
  for (const auto& c : cases) {
    auto claims = Claims();
    c.edit(claims);
    auto g = CheckGrantCertificate(Issue(claims), req_, &empty, clock_.Now());
    ASSERT_FALSE(g) << c.what;
    EXPECT_NE(g.error().message().find(c.want), std::string::npos) << g.error().message();
  }
  // Revoked.
  pki::X509Ptr cert;
  std::string der = Issue(Claims(), &cert);
  RevocationList revoked = Crl({pki::SerialHex(cert.get())});
  auto g = CheckGrantCertificate(der, req_, &revoked, clock_.Now());
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().message().find("revoked"), std::string::npos);
  // No CRL at all: fail closed.
  g = CheckGrantCertificate(der, req_, nullptr, clock_.Now());
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().message().find("revocation"), std::string::npos);
  // Ended.
  g = CheckGrantCertificate(der, req_, &empty, FromUnix(kNow + 1800));
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().message().find("ended"), std::string::npos);
  // A device certificate is not a grant certificate.
  auto key = pki::GenerateP256Key();
  auto dev = ca_->IssueDeviceCertificate(key->get(), NewUuid(), std::chrono::hours(1), "");
  g = CheckGrantCertificate(*pki::CertToDer(dev->get()), req_, &empty, clock_.Now());
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().message().find("no grant extension"), std::string::npos);
  EXPECT_FALSE(CheckGrantCertificate("not der", req_, &empty, clock_.Now()));
}

}  // namespace
}  // namespace torwart::agent
