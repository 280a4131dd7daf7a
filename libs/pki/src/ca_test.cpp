#include "torwart/pki/ca.hpp"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace {
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("pki_test_" + RandomToken(8))) {}
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

unsigned Mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

class CaTest : public ::testing::Test {
 protected:
  CaTest() : clock_(std::chrono::system_clock::now()) {}
  CaSettings Settings() { return CaSettings{.dir = dir_.path() / "ca", .organisation = "Acme"}; }
  TempDir dir_;
  FakeClock clock_;
};

TEST_F(CaTest, CreatesHierarchyWithPrivatePermissionsAndReloads) {
  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(ca) << ca.error().String();
  const fs::path d = Settings().dir;
  EXPECT_EQ(Mode(d), 0700u);
  for (const char* key : {"root.key", "issuing.key", "cmp.key"}) EXPECT_EQ(Mode(d / key), 0600u);
  for (const char* f : {"root.pem", "issuing.pem", "chain.pem", "cmp.pem"})
    EXPECT_TRUE(fs::exists(d / f)) << f;
  EXPECT_GT(NotAfter((*ca)->root()) - clock_.Now(), std::chrono::days(365 * 19));
  EXPECT_LT(NotAfter((*ca)->issuing()) - clock_.Now(), std::chrono::days(365 * 5 + 1));
  std::string serial = SerialHex((*ca)->issuing());

  auto again = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(again) << again.error().String();
  EXPECT_EQ(SerialHex((*again)->issuing()), serial);
  EXPECT_EQ((*again)->ChainPem(), (*ca)->ChainPem());
  EXPECT_EQ(SerialHex((*again)->cmp_cert()), SerialHex((*ca)->cmp_cert()));
}

TEST_F(CaTest, IssuedDeviceCertificateVerifiesAndCarriesIdentity) {
  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(ca) << ca.error().String();
  auto key = GenerateP256Key();
  ASSERT_TRUE(key);
  const std::string uuid = NewUuid();
  auto cert = (*ca)->IssueDeviceCertificate(key->get(), uuid, std::chrono::seconds(90), "fp-1234");
  ASSERT_TRUE(cert) << cert.error().String();

  // Plain OpenSSL verification against the chain file contents.
  X509StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), (*ca)->root());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  sk_X509_push(untrusted, (*ca)->issuing());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store.get(), cert->get(), untrusted);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  EXPECT_EQ(X509_verify_cert(ctx), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);

  EXPECT_EQ(SubjectCn(cert->get()), uuid);
  ASSERT_EQ(SanUris(cert->get()).size(), 1u);
  EXPECT_EQ(SanUris(cert->get())[0], "urn:torwart:device:" + uuid);
  EXPECT_NE(X509_get_extended_key_usage(cert->get()) & XKU_SSL_CLIENT, 0u);
  EXPECT_EQ(*MachineFingerprintOf(cert->get()), "fp-1234");
  EXPECT_EQ(NotAfter(cert->get()) - NotBefore(cert->get()), std::chrono::seconds(150));
  EXPECT_GE(SerialHex(cert->get()).size(), 31u);

  auto id = (*ca)->VerifyDeviceCertificate(cert->get());
  ASSERT_TRUE(id) << id.error().String();
  EXPECT_EQ(id->uuid, uuid);
  EXPECT_EQ(id->serial, SerialHex(cert->get()));
  EXPECT_EQ(id->fingerprint, "fp-1234");

  clock_.Advance(std::chrono::seconds(120));
  auto expired = (*ca)->VerifyDeviceCertificate(cert->get());
  ASSERT_FALSE(expired);
  EXPECT_TRUE(expired.error().Is(Errc::kExpired));
}

TEST_F(CaTest, RefusesCertificatesFromAnotherCa) {
  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  TempDir other_dir;
  auto other = CertificateAuthority::OpenOrCreate(CaSettings{.dir = other_dir.path()}, clock_);
  ASSERT_TRUE(ca && other);
  auto key = GenerateP256Key();
  auto cert = (*other)->IssueDeviceCertificate(key->get(), NewUuid(), {}, "");
  ASSERT_TRUE(cert);
  EXPECT_FALSE((*ca)->VerifyDeviceCertificate(cert->get()));
  EXPECT_FALSE((*ca)->VerifyDeviceCertificate((*ca)->cmp_cert()));  // not clientAuth
}

TEST_F(CaTest, CrlListsRevokedSerial) {
  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(ca);
  auto key = GenerateP256Key();
  auto cert = (*ca)->IssueDeviceCertificate(key->get(), NewUuid(), {}, "");
  ASSERT_TRUE(cert);
  auto der = (*ca)->MakeCrlDer({{SerialHex(cert->get()), clock_.Now(), kReasonKeyCompromise}}, 7,
                               std::chrono::hours(24));
  ASSERT_TRUE(der) << der.error().String();
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der->size())));
  ASSERT_TRUE(crl);
  EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey((*ca)->issuing())), 1);
  X509_REVOKED* rev = nullptr;
  EXPECT_EQ(X509_CRL_get0_by_cert(crl.get(), &rev, cert->get()), 1);
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  ASSERT_NE(number, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(number), 7);
  ASN1_INTEGER_free(number);
  EXPECT_EQ(AsnTimeToTimePoint(X509_CRL_get0_nextUpdate(crl.get())) -
                AsnTimeToTimePoint(X509_CRL_get0_lastUpdate(crl.get())),
            std::chrono::hours(24));
  EXPECT_FALSE((*ca)->MakeCrlDer({{"xyz", clock_.Now(), 0}}, 1, std::chrono::hours(1)));
}

TEST_F(CaTest, ServerCertificateRenewsOnlyWhenNeeded) {
  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(ca);
  auto files = (*ca)->EnsureServerCertificate({"torwart.example", "127.0.0.1"});
  ASSERT_TRUE(files) << files.error().String();
  EXPECT_TRUE(files->renewed);
  EXPECT_EQ(Mode(files->key), 0600u);
  auto chain = CertsFromPem(*ReadFile(files->cert_chain));
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->size(), 2u);
  EXPECT_EQ(X509_check_host((*chain)[0].get(), "torwart.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc((*chain)[0].get(), "127.0.0.1", 0), 1);
  EXPECT_FALSE((*ca)->EnsureServerCertificate({"127.0.0.1", "torwart.example"})->renewed);
  EXPECT_TRUE((*ca)->EnsureServerCertificate({"other.example"})->renewed);
  clock_.Advance(std::chrono::days(70));
  EXPECT_TRUE((*ca)->EnsureServerCertificate({"other.example"})->renewed);
}

TEST_F(CaTest, OfflineRootProcedure) {
  const fs::path d = Settings().dir;
  {
    auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
    ASSERT_TRUE(ca);
  }
  const fs::path offline = dir_.path() / "root.key.offline";
  ASSERT_TRUE(CertificateAuthority::ExportRootKey(d, offline));
  EXPECT_FALSE(fs::exists(d / "root.key"));
  EXPECT_EQ(Mode(offline), 0600u);
  EXPECT_FALSE(CertificateAuthority::ExportRootKey(d, offline));  // already offline

  auto ca = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_TRUE(ca) << ca.error().String();
  EXPECT_FALSE((*ca)->has_root_key());

  // A foreign issuing CA is refused; one signed by our root is accepted.
  TempDir other_dir;
  ASSERT_TRUE(CertificateAuthority::OpenOrCreate(CaSettings{.dir = other_dir.path()}, clock_));
  EXPECT_FALSE(CertificateAuthority::ImportIssuingCa(d, other_dir.path() / "issuing.pem",
                                                     other_dir.path() / "issuing.key"));
  // Without issuing CA and root key the CA cannot start.
  fs::remove(d / "issuing.pem");
  auto none = CertificateAuthority::OpenOrCreate(Settings(), clock_);
  ASSERT_FALSE(none);
  EXPECT_TRUE(none.error().Is(Errc::kFailedPrecondition));
}

}  // namespace
}  // namespace torwart::pki
