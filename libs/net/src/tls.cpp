#include "torwart/net/tls.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <filesystem>
#include <system_error>

namespace torwart::net {
namespace {

constexpr const char* kCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256";
// Any constant works; it scopes session resumption to this kind of server. Without it, a
// resumed session on a server that requests client certificates fails the handshake.
constexpr unsigned char kSessionIdContext[] = "torwart";

Unexpected SslError(Errc code, std::string what) {
  std::string details = OpenSslErrors();
  if (!details.empty()) what += ": " + details;
  return MakeError(code, std::move(what));
}

// A readable regular file, or an error naming `role` and `path`.
Expected<void> CheckFile(const std::string& role, const std::string& path) {
  if (path.empty()) return MakeError(Errc::kInvalidArgument, role + ": no file given");
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return MakeError(Errc::kNotFound, role + " " + path + ": file not found");
  }
  if (!std::filesystem::is_regular_file(status)) {
    return MakeError(Errc::kInvalidArgument, role + " " + path + ": not a regular file");
  }
  return {};
}

Expected<SslCtxPtr> NewContext(const SSL_METHOD* method) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) return SslError(Errc::kInternal, "TLS: cannot create context");
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1) {
    return SslError(Errc::kInternal, "TLS: cannot restrict to TLS 1.3");
  }
  if (SSL_CTX_set_ciphersuites(c, kCipherSuites) != 1) {
    return SslError(Errc::kInternal, "TLS: cannot set cipher suites");
  }
  if (SSL_CTX_set1_groups_list(c, kGroups) != 1) {
    return SslError(Errc::kInternal, "TLS: cannot set key exchange groups");
  }
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  return ctx;
}

// Accepts any client certificate: the TLS layer only proves possession of the key; handlers
// check the chain and revocation against the database (they know which CA and which device).
int AcceptAnyClientCert(int /*preverify_ok*/, X509_STORE_CTX* /*ctx*/) { return 1; }

}  // namespace

std::string OpenSslErrors() {
  // Reason strings are loaded lazily by SSL/crypto initialisation; make sure they are there so
  // errors read "bad length" rather than "reason(271)" in a process that did no TLS yet.
  OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, nullptr);
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

Expected<SslCtxPtr> MakeServerTlsContext(const ServerTlsSettings& s) {
  if (auto ok = CheckFile("TLS certificate chain", s.cert_chain_file); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = CheckFile("TLS private key", s.key_file); !ok) return MakeError(ok.error());
  auto made = NewContext(TLS_server_method());
  if (!made) return MakeError(made.error());
  SslCtxPtr ctx = std::move(*made);
  SSL_CTX* c = ctx.get();

  if (SSL_CTX_use_certificate_chain_file(c, s.cert_chain_file.c_str()) != 1) {
    return SslError(Errc::kInvalidArgument,
                    "TLS certificate chain " + s.cert_chain_file + ": cannot load");
  }
  if (SSL_CTX_use_PrivateKey_file(c, s.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL reports a key that does not match the certificate here as well.
    return SslError(Errc::kInvalidArgument, "TLS private key " + s.key_file +
                                                ": cannot load or does not match the certificate");
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    return SslError(Errc::kInvalidArgument, "TLS private key " + s.key_file +
                                                " does not match certificate " + s.cert_chain_file);
  }
  if (SSL_CTX_set_session_id_context(c, kSessionIdContext, sizeof kSessionIdContext - 1) != 1) {
    return SslError(Errc::kInternal, "TLS: cannot set session id context");
  }
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);

  if (s.request_client_cert) {
    // No SSL_VERIFY_FAIL_IF_NO_PEER_CERT: a certificate is optional (browsers, CLI with a
    // password login); handlers decide what an absent or unknown certificate means.
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, AcceptAnyClientCert);
    if (!s.client_ca_file.empty()) {
      if (auto ok = CheckFile("TLS client CA file", s.client_ca_file); !ok) {
        return MakeError(ok.error());
      }
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_ca_file.c_str());
      if (names == nullptr) {
        return SslError(Errc::kInvalidArgument,
                        "TLS client CA file " + s.client_ca_file + ": no certificates loaded");
      }
      SSL_CTX_set_client_CA_list(c, names);  // takes ownership
    }
  }
  ERR_clear_error();
  return ctx;
}

Expected<SslCtxPtr> MakeClientTlsContext(const ClientTlsSettings& s) {
  auto made = NewContext(TLS_client_method());
  if (!made) return MakeError(made.error());
  SslCtxPtr ctx = std::move(*made);
  SSL_CTX* c = ctx.get();
  if (s.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(c) != 1) {
      return SslError(Errc::kInternal, "TLS: cannot load the system CA store");
    }
  } else {
    if (auto ok = CheckFile("TLS CA file", s.ca_file); !ok) return MakeError(ok.error());
    if (SSL_CTX_load_verify_locations(c, s.ca_file.c_str(), nullptr) != 1) {
      return SslError(Errc::kInvalidArgument, "TLS CA file " + s.ca_file + ": cannot load");
    }
  }
  SSL_CTX_set_verify(c, s.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  ERR_clear_error();
  return ctx;
}

}  // namespace torwart::net
