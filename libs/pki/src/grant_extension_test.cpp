#include "torwart/pki/grant_extension.hpp"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>

#include <filesystem>

#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"

namespace torwart::pki {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

GrantClaims Sample() {
  return GrantClaims{"ar-0123456789ab", "anna@example.com", "werk-hamburg", "presse-1-plc",
                     {"modbus:read"}, FromUnix(1777888999)};
}

TEST(GrantExtension, RoundTrips) {
  for (GrantClaims c : {Sample(), [] {
                          GrantClaims c = Sample();
                          c.scopes.clear();
                          c.user = std::string(200, 'u') + "ä";  // long form length, UTF-8
                          return c;
                        }()}) {
    auto der = EncodeGrantClaims(c);
    ASSERT_TRUE(der) << der.error().String();
    auto back = DecodeGrantClaims(*der);
    ASSERT_TRUE(back) << back.error().String();
    EXPECT_EQ(*back, c);
  }
}

TEST(GrantExtension, EncodesTheDocumentedDer) {
  GrantClaims c{"g1", "u", "s", "t", {"modbus:read"}, FromUnix(0) + std::chrono::days(365 * 30)};
  auto der = EncodeGrantClaims(c);
  ASSERT_TRUE(der);
  // SEQUENCE { INTEGER 1, UTF8 "g1", UTF8 "u", UTF8 "s", UTF8 "t", SEQUENCE { UTF8
  // "modbus:read" }, GeneralizedTime "19991225000000Z" }
  const std::string expected = std::string("\x30\x30\x02\x01\x01\x0c\x02g1\x0c\x01u\x0c\x01s\x0c\x01t"
                                           "\x30\x0d\x0c\x0bmodbus:read\x18\x0f",
                                           35) +
                               "19991225000000Z";
  EXPECT_EQ(*der, expected);
}

TEST(GrantExtension, RefusesBadClaims) {
  GrantClaims c = Sample();
  c.grant_id.clear();
  EXPECT_FALSE(EncodeGrantClaims(c));
  c = Sample();
  c.user = std::string("\xff\xfe", 2);
  EXPECT_FALSE(EncodeGrantClaims(c));
  c = Sample();
  c.scopes.assign(33, "modbus:read");
  EXPECT_FALSE(EncodeGrantClaims(c));
}

TEST(GrantExtension, DecoderIsStrict) {
  auto good = EncodeGrantClaims(Sample());
  ASSERT_TRUE(good);
  EXPECT_FALSE(DecodeGrantClaims(""));
  EXPECT_FALSE(DecodeGrantClaims(*good + "x")) << "trailing bytes";
  for (size_t n = 0; n < good->size(); ++n) {
    EXPECT_FALSE(DecodeGrantClaims(good->substr(0, n))) << "truncated at " << n;
  }
  std::string wrong_version = *good;
  wrong_version[4] = 2;
  EXPECT_FALSE(DecodeGrantClaims(wrong_version));
  // Non-minimal length: 0x81 0x05 for a 5-byte string.
  std::string non_minimal("\x30\x07\x02\x01\x01\x0c\x81\x01x", 9);
  EXPECT_FALSE(DecodeGrantClaims(non_minimal));
  std::string bad_time = *good;
  bad_time[bad_time.size() - 4] = 'x';
  EXPECT_FALSE(DecodeGrantClaims(bad_time));
}

class GrantCertificateTest : public ::testing::Test {
 protected:
  GrantCertificateTest() : clock_(FromUnix(1777777777)) {
    dir_ = fs::temp_directory_path() / ("grant_test_" + RandomToken(8));
  }
  ~GrantCertificateTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
  FakeClock clock_;
};

TEST_F(GrantCertificateTest, IssuesCertificateEndingWithTheGrant) {
  auto ca = CertificateAuthority::OpenOrCreate({.dir = dir_ / "ca", .organisation = "Acme"}, clock_);
  ASSERT_TRUE(ca) << ca.error().String();
  auto key = GenerateP256Key();
  ASSERT_TRUE(key);
  GrantClaims c = Sample();
  c.not_after = clock_.Now() + 30min;
  auto cert = (*ca)->IssueGrantCertificate(key->get(), c);
  ASSERT_TRUE(cert) << cert.error().String();
  EXPECT_EQ(NotAfter(cert->get()), c.not_after);
  EXPECT_EQ(SubjectCn(cert->get()), "anna@example.com");
  EXPECT_EQ(SanUris(cert->get()), std::vector<std::string>{"urn:torwart:grant:ar-0123456789ab"});
  EXPECT_TRUE(X509_get_extended_key_usage(cert->get()) & XKU_SSL_CLIENT);
  auto claims = GrantClaimsOf(cert->get());
  ASSERT_TRUE(claims) << claims.error().String();
  ASSERT_TRUE(claims->has_value());
  EXPECT_EQ(**claims, c);
  // The extension is non-critical.
  int idx = X509_get_ext_by_OBJ(cert->get(), OBJ_txt2obj(kGrantExtensionOid, 1), -1);
  ASSERT_GE(idx, 0);
  EXPECT_EQ(X509_EXTENSION_get_critical(X509_get_ext(cert->get(), idx)), 0);

  // A device certificate has no grant extension.
  auto dev = (*ca)->IssueDeviceCertificate(key->get(), NewUuid(), 1h, "");
  ASSERT_TRUE(dev);
  auto none = GrantClaimsOf(dev->get());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  // An ended grant gets nothing.
  c.not_after = clock_.Now();
  auto ended = (*ca)->IssueGrantCertificate(key->get(), c);
  ASSERT_FALSE(ended);
  EXPECT_TRUE(ended.error().Is(Errc::kFailedPrecondition));
}

}  // namespace
}  // namespace torwart::pki
