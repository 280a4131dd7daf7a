#include "torwart/net/tls.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <string>

#include "torwart/net/testing/test_pki.hpp"

namespace torwart::net {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;
using testing::TestCa;
using testing::Usage;

class TlsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestCa ca_{dir_.path(), "main"};
  testing::Issued server_ = ca_.Issue("server", {"IP:127.0.0.1", "DNS:localhost"}, Usage::kServer);
  testing::Issued client_ = ca_.Issue("client", {}, Usage::kClient);
};

// Runs a TLS handshake between the two contexts over an in-memory BIO pair.
// Returns the verify result seen by the client, or -1 if the handshake did not finish.
struct HandshakeResult {
  bool ok = false;
  long client_verify = -1;
  std::string server_saw_client_cert;  // DER, empty if none
  int version = 0;
  std::string cipher;
  std::string client_error;
};

ServerTlsSettings ServerTls(std::string cert, std::string key, bool request_client_cert = false,
                            std::string client_ca = "") {
  ServerTlsSettings s;
  s.cert_chain_file = std::move(cert);
  s.key_file = std::move(key);
  s.request_client_cert = request_client_cert;
  s.client_ca_file = std::move(client_ca);
  return s;
}

ClientTlsSettings ClientTls(std::string ca) {
  ClientTlsSettings s;
  s.ca_file = std::move(ca);
  return s;
}

HandshakeResult Handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, const char* ip) {
  HandshakeResult r;
  SSL* s = SSL_new(server_ctx);
  SSL* c = SSL_new(client_ctx);
  BIO *bs = nullptr, *bc = nullptr;
  BIO_new_bio_pair(&bs, 0, &bc, 0);
  SSL_set_bio(s, bs, bs);
  SSL_set_bio(c, bc, bc);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  if (ip) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c), ip);
  bool s_done = false, c_done = false, failed = false;
  for (int i = 0; i < 100 && !(s_done && c_done) && !failed; ++i) {
    if (!c_done) {
      int rc = SSL_do_handshake(c);
      if (rc == 1) {
        c_done = true;
      } else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) {
        failed = true;
        r.client_error = OpenSslErrors();
      }
    }
    if (!s_done && !failed) {
      int rc = SSL_do_handshake(s);
      if (rc == 1) {
        s_done = true;
      } else if (SSL_get_error(s, rc) != SSL_ERROR_WANT_READ) {
        failed = true;
      }
    }
  }
  r.client_verify = SSL_get_verify_result(c);
  r.ok = s_done && c_done;
  if (r.ok) {
    // The client finishes first in TLS 1.3; let the server see the client's Finished message.
    char buf[1];
    SSL_read(s, buf, 0);
    X509* peer = SSL_get1_peer_certificate(s);
    if (peer) {
      unsigned char* der = nullptr;
      int n = i2d_X509(peer, &der);
      r.server_saw_client_cert.assign(reinterpret_cast<char*>(der), static_cast<size_t>(n));
      OPENSSL_free(der);
      X509_free(peer);
    }
    r.version = SSL_version(c);
    r.cipher = SSL_get_cipher_name(c);
  }
  SSL_free(s);
  SSL_free(c);
  ERR_clear_error();
  return r;
}

TEST_F(TlsTest, ServerAndClientContextsHandshakeWithTls13) {
  auto server = MakeServerTlsContext(ServerTls(server_.cert_file, server_.key_file));
  ASSERT_TRUE(server) << server.error().String();
  auto client = MakeClientTlsContext(ClientTls(ca_.cert_file()));
  ASSERT_TRUE(client) << client.error().String();
  auto r = Handshake(server->get(), client->get(), "127.0.0.1");
  ASSERT_TRUE(r.ok) << r.client_error;
  EXPECT_EQ(r.client_verify, X509_V_OK);
  EXPECT_EQ(r.version, TLS1_3_VERSION);
  EXPECT_THAT(r.cipher, ::testing::AnyOf("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                         "TLS_CHACHA20_POLY1305_SHA256"));
  EXPECT_EQ(SSL_CTX_get_min_proto_version(server->get()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(client->get()), TLS1_3_VERSION);
}

TEST_F(TlsTest, ClientRejectsServerFromAnotherCaOrWrongIp) {
  TestCa other(dir_.path(), "other");
  auto server = MakeServerTlsContext(ServerTls(server_.cert_file, server_.key_file));
  ASSERT_TRUE(server);
  auto foreign = MakeClientTlsContext(ClientTls(other.cert_file()));
  ASSERT_TRUE(foreign);
  auto r = Handshake(server->get(), foreign->get(), "127.0.0.1");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.client_verify, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

  auto client = MakeClientTlsContext(ClientTls(ca_.cert_file()));
  ASSERT_TRUE(client);
  r = Handshake(server->get(), client->get(), "10.9.8.7");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.client_verify, X509_V_ERR_IP_ADDRESS_MISMATCH);
}

TEST_F(TlsTest, OptionalClientCertificateIsAcceptedAndVisible) {
  TestCa other(dir_.path(), "other");
  auto server =
      MakeServerTlsContext(ServerTls(server_.cert_file, server_.key_file, true, ca_.cert_file()));
  ASSERT_TRUE(server) << server.error().String();
  STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(server->get());
  ASSERT_NE(names, nullptr);
  EXPECT_EQ(sk_X509_NAME_num(names), 1);

  // Without a certificate: still fine.
  auto anonymous = MakeClientTlsContext(ClientTls(ca_.cert_file()));
  ASSERT_TRUE(anonymous);
  auto r = Handshake(server->get(), anonymous->get(), "127.0.0.1");
  ASSERT_TRUE(r.ok) << r.client_error;
  EXPECT_TRUE(r.server_saw_client_cert.empty());

  // With a certificate, even from a CA the server does not know: accepted, exposed as DER.
  testing::Issued stranger = other.Issue("stranger", {}, Usage::kClient);
  for (const testing::Issued* who : {&client_, &stranger}) {
    auto with_cert = MakeClientTlsContext(ClientTls(ca_.cert_file()));
    ASSERT_TRUE(with_cert);
    ASSERT_EQ(SSL_CTX_use_certificate(with_cert->get(), who->cert.get()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(with_cert->get(), who->key.get()), 1);
    r = Handshake(server->get(), with_cert->get(), "127.0.0.1");
    ASSERT_TRUE(r.ok) << r.client_error;
    EXPECT_EQ(r.server_saw_client_cert, who->der);
  }
}

TEST_F(TlsTest, ClearErrorsForMissingFilesAndMismatchedKeys) {
  auto missing = MakeServerTlsContext(ServerTls(dir_.path() + "/nope.crt", server_.key_file));
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().Is(Errc::kNotFound));
  EXPECT_THAT(missing.error().message(), HasSubstr("nope.crt: file not found"));

  auto no_key = MakeServerTlsContext(ServerTls(server_.cert_file, dir_.path() + "/nokey.pem"));
  ASSERT_FALSE(no_key);
  EXPECT_THAT(no_key.error().message(), HasSubstr("TLS private key"));
  EXPECT_THAT(no_key.error().message(), HasSubstr("file not found"));

  auto mismatch = MakeServerTlsContext(ServerTls(server_.cert_file, client_.key_file));
  ASSERT_FALSE(mismatch);
  EXPECT_TRUE(mismatch.error().Is(Errc::kInvalidArgument));
  EXPECT_THAT(mismatch.error().message(), HasSubstr("does not match"));

  std::string garbage = dir_.path() + "/garbage.pem";
  testing::WriteFile(garbage, "not a certificate\n");
  auto bad_pem = MakeServerTlsContext(ServerTls(garbage, server_.key_file));
  ASSERT_FALSE(bad_pem);
  EXPECT_THAT(bad_pem.error().message(), HasSubstr("cannot load"));

  auto bad_client_ca = MakeServerTlsContext(
      ServerTls(server_.cert_file, server_.key_file, true, dir_.path() + "/noca.pem"));
  ASSERT_FALSE(bad_client_ca);
  EXPECT_THAT(bad_client_ca.error().message(), HasSubstr("client CA file"));

  auto bad_ca = MakeClientTlsContext(ClientTls(dir_.path() + "/noca.pem"));
  ASSERT_FALSE(bad_ca);
  EXPECT_THAT(bad_ca.error().message(), HasSubstr("noca.pem: file not found"));
  auto garbage_ca = MakeClientTlsContext(ClientTls(garbage));
  ASSERT_FALSE(garbage_ca);
  EXPECT_THAT(garbage_ca.error().message(), HasSubstr("cannot load"));
  EXPECT_EQ(ERR_peek_error(), 0u) << "errors must not be left on the OpenSSL queue";
}

TEST(OpenSslErrorsTest, DrainsTheQueue) {
  EXPECT_EQ(OpenSslErrors(), "");
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
  std::string e = OpenSslErrors();
  EXPECT_THAT(e, HasSubstr("bad length"));
  EXPECT_EQ(OpenSslErrors(), "");
}

}  // namespace
}  // namespace torwart::net
