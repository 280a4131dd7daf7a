// Blocking HTTPS client on OpenSSL (no Asio): for the CLI and the agent (REST, CMP, EST).
// One Client per thread; each call opens a new TLS connection (requests are rare).
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <map>
#include <string>

#include "torwart/core/error.hpp"
#include "torwart/http/message.hpp"

namespace torwart::http {

struct ClientSettings {
  std::string base_url;          // "https://host:port" (http:// allowed only for tests)
  std::string ca_file;           // PEM bundle to verify the server; empty = system store
  EVP_PKEY* client_key = nullptr;     // optional TLS client authentication (not owned)
  std::string client_cert_chain_pem;  // leaf first; used when client_key is set
  std::chrono::seconds timeout{30};
  size_t max_response_bytes = 16 << 20;
};

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

class Client {
 public:
  explicit Client(ClientSettings settings);
  // Connection, TLS and protocol errors are kUnavailable/kTimeout/kParse with a clear message;
  // any HTTP status (also 4xx/5xx) is a successful ClientResponse.
  Expected<ClientResponse> Send(const std::string& method, const std::string& path,
                                const std::map<std::string, std::string>& headers = {},
                                const std::string& body = "");

 private:
  ClientSettings settings_;
};

}  // namespace torwart::http
