#include "connect_util.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "torwart/core/clock.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/grant_extension.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::cli {
namespace {
namespace fs = std::filesystem;

TEST(ConnectUtil, ParsesRelayUrls) {
  auto a = ParseRelayUrl("tls://relay.example:8444");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "relay.example");
  EXPECT_EQ(a->port, 8444);
  auto b = ParseRelayUrl("tls://[::1]:443");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 443);
  for (const char* bad : {"https://relay:8444", "tls://relay", "tls://relay:0", "tls://relay:70000",
                          "tls://re lay:1", "tls://:1", "", "tls://relay:1/x"}) {
    EXPECT_FALSE(ParseRelayUrl(bad)) << bad;
  }
}

TEST(ConnectUtil, UsageLinesPerProtocol) {
  EXPECT_EQ(UsageLines("modbus", "127.0.0.1", 1502).front(),
            "mbpoll -m tcp -a 1 -r 1 -c 10 -t 4 -p 1502 -1 127.0.0.1");
  EXPECT_EQ(UsageLines("ssh", "127.0.0.1", 2222).front(), "ssh -p 2222 user@127.0.0.1");
  EXPECT_EQ(UsageLines("ssh", "127.0.0.1", 2222).size(), 2u);  // the host-key note
  EXPECT_EQ(UsageLines("rdp", "::1", 3389).front(), "xfreerdp /v:[::1]:3389");
  EXPECT_EQ(UsageLines("https", "127.0.0.1", 8443).front(), "https://127.0.0.1:8443/");
  EXPECT_EQ(UsageLines("tcp", "127.0.0.1", 7).front(), "nc 127.0.0.1 7");
  EXPECT_EQ(UsageLines("", "127.0.0.1", 7).front(), "nc 127.0.0.1 7");
}

TEST(ConnectUtil, SubstituteAndHumanLeft) {
  EXPECT_EQ(Substitute("nc {host} {port}; echo {port}", "127.0.0.1", "99"),
            "nc 127.0.0.1 99; echo 99");
  EXPECT_EQ(Substitute("x{port}{port}", "h", "{port}"), "x{port}{port}");  // no re-expansion
  EXPECT_EQ(HumanLeft(std::chrono::seconds(-5)), "0s");
  EXPECT_EQ(HumanLeft(std::chrono::seconds(59)), "59s");
  EXPECT_EQ(HumanLeft(std::chrono::seconds(42 * 60 + 5)), "42m");
  EXPECT_EQ(HumanLeft(std::chrono::seconds(2 * 3600 + 5 * 60)), "2h5m");
  EXPECT_EQ(HumanLeft(std::chrono::seconds(3600)), "1h");
}

class GatewayCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("connect_util_test_" + RandomToken(8));
    auto ca = pki::CertificateAuthority::OpenOrCreate(
        pki::CaSettings{.dir = dir_ / "ca", .organisation = "Acme"}, SystemClock::Instance());
    ASSERT_TRUE(ca) << ca.error().message();
    ca_ = std::move(*ca);
    auto key = pki::GenerateP256Key();
    ASSERT_TRUE(key);
    key_ = std::move(*key);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string DeviceDer(const std::string& uuid) {
    auto cert = ca_->IssueDeviceCertificate(key_.get(), uuid, std::chrono::hours(1), "");
    EXPECT_TRUE(cert);
    return cert ? *pki::CertToDer(cert->get()) : "";
  }

  fs::path dir_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  pki::EvpPkeyPtr key_;
};

constexpr char kDev[] = "0b7c1b9e-6a4f-4c3e-9d2a-1f0e5d4c3b2a";
constexpr char kOther[] = "11111111-2222-4333-8444-555555555555";

TEST_F(GatewayCheck, AcceptsTheDeviceTheRelayNamed) {
  std::string der = DeviceDer(kDev);
  EXPECT_TRUE(VerifyGateway(der, kDev, ""));
  EXPECT_TRUE(VerifyGateway(der, kDev, kDev));
}

TEST_F(GatewayCheck, RefusesAnotherDeviceOrAnUnexpectedGateway) {
  std::string der = DeviceDer(kDev);
  EXPECT_FALSE(VerifyGateway(der, kOther, ""));    // certificate of another device
  EXPECT_FALSE(VerifyGateway(der, kDev, kOther));  // not the target's gateway
  EXPECT_FALSE(VerifyGateway(der, "not-a-uuid", ""));
  EXPECT_FALSE(VerifyGateway("garbage", kDev, ""));
  EXPECT_FALSE(VerifyGateway("", kDev, ""));
}

TEST_F(GatewayCheck, RefusesAGrantCertificate) {
  pki::GrantClaims claims{.grant_id = "ar-0123456789ab",
                          .user = kDev,
                          .site = "s",
                          .target = "t",
                          .scopes = {},
                          .not_after = std::chrono::floor<std::chrono::seconds>(
                              std::chrono::system_clock::now() + std::chrono::hours(1))};
  auto cert = ca_->IssueGrantCertificate(key_.get(), claims);
  ASSERT_TRUE(cert) << cert.error().message();
  // CN is the "user" (here shaped like the device id), but it is no device certificate.
  auto v = VerifyGateway(*pki::CertToDer(cert->get()), kDev, "");
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message().find("not a device certificate"), std::string::npos);
}

}  // namespace
}  // namespace torwart::cli
