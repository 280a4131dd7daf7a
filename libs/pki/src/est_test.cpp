#include "torwart/pki/est.hpp"

#include <gtest/gtest.h>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace {

TEST(EstTest, ParsesBase64CsrWithLineBreaks) {
  auto key = GenerateP256Key();
  auto csr = MakeCsr(key->get(), "device-1", {{"subjectAltName", "URI:urn:x"}});
  ASSERT_TRUE(csr) << csr.error().String();
  std::string b64 = Base64Encode(*CsrToDer(csr->get()));
  std::string body;
  for (size_t i = 0; i < b64.size(); i += 64) body += b64.substr(i, 64) + "\r\n";
  auto parsed = ParseEstCsr(body);
  ASSERT_TRUE(parsed) << parsed.error().String();
  EXPECT_EQ(*CsrToDer(parsed->get()), *CsrToDer(csr->get()));
  EXPECT_TRUE(ParseEstCsr(*CsrToPem(csr->get())));
}

TEST(EstTest, RejectsBadCsrs) {
  EXPECT_FALSE(ParseEstCsr("not base64 !!!"));
  EXPECT_FALSE(ParseEstCsr(Base64Encode("garbage")));
  EXPECT_FALSE(ParseEstCsr(std::string(kEstMaxCsrBody + 1, 'A')));
  auto key = GenerateP256Key();
  auto csr = MakeCsr(key->get(), "device-1");
  std::string der = *CsrToDer(csr->get());
  der[der.size() - 5] ^= 0x01;  // break the signature
  auto r = ParseEstCsr(Base64Encode(der));
  ASSERT_FALSE(r);
}

TEST(EstTest, CertsOnlyRoundTrip) {
  auto key = GenerateP256Key();
  auto csr = MakeCsr(key->get(), "x");
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  X509_set_pubkey(cert.get(), key->get());
  X509_set_subject_name(cert.get(), X509_REQ_get_subject_name(csr->get()));
  X509_set_issuer_name(cert.get(), X509_REQ_get_subject_name(csr->get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  ASSERT_GT(X509_sign(cert.get(), key->get(), EVP_sha256()), 0);
  auto body = EncodeCertsOnly({cert.get(), cert.get()});
  ASSERT_TRUE(body) << body.error().String();
  EXPECT_EQ(body->find('\r'), std::string::npos);  // plain LF so `base64 -d` accepts it
  EXPECT_NE(body->find('\n'), std::string::npos);
  for (size_t start = 0, nl; (nl = body->find('\n', start)) != std::string::npos; start = nl + 1)
    EXPECT_LE(nl - start, 64u);
  auto certs = DecodeCertsOnly(*body);
  ASSERT_TRUE(certs) << certs.error().String();
  ASSERT_EQ(certs->size(), 2u);
  EXPECT_EQ(X509_cmp((*certs)[0].get(), cert.get()), 0);
}

}  // namespace
}  // namespace torwart::pki
