// TLS contexts for our own components: TLS 1.3 only, AES-128-GCM/AES-256-GCM/ChaCha20 suites,
// X25519 then P-256. Built with raw OpenSSL (no Asio here) so any transport can use them.
// Thread-safe to use a finished SSL_CTX from many threads; building is single-threaded.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "torwart/core/error.hpp"

namespace torwart::net {

struct SslCtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

struct ServerTlsSettings {
  std::string cert_chain_file;  // PEM: leaf then intermediates
  std::string key_file;         // PEM private key
  // If set, clients MAY present a certificate; it is exposed to handlers but not required.
  // Verification against the CA and revocation is the handler's job (it knows the database).
  bool request_client_cert = false;
  std::string client_ca_file;   // PEM: CAs named in CertificateRequest
};

Expected<SslCtxPtr> MakeServerTlsContext(const ServerTlsSettings& s);

struct ClientTlsSettings {
  std::string ca_file;  // empty: system default verify paths
  bool verify_peer = true;
};

Expected<SslCtxPtr> MakeClientTlsContext(const ClientTlsSettings& s);

// Last OpenSSL error queue entries as text (and clears the queue).
std::string OpenSslErrors();

}  // namespace torwart::net
