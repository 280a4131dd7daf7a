// Plain HTTP request/response values shared by the server, the router and the client.
// No Beast or Asio types here: handlers and callers stay light to compile. Value types.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace torwart::http {

struct Request {
  std::string method;                         // "GET", "POST", ...
  std::string target;                         // raw target incl. query
  std::string path;                           // decoded path without query
  std::map<std::string, std::string> query;   // decoded query parameters
  std::map<std::string, std::string> headers; // lower-case names
  std::map<std::string, std::string> params;  // path parameters from the route ("{name}")
  std::string body;
  std::string peer;                           // "ip:port"
  // DER of the TLS client certificate if the peer presented one (verified only for chain
  // syntax by TLS; handlers must verify it against the CA and revocation state themselves).
  std::string client_cert_der;

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::map<std::string, std::string> headers;
  std::string body;

  // {"error": {"code": "<code>", "message": "<message>"}} with the given status.
  static Response Error(int status, std::string_view code, std::string_view message);
  static Response Json(int status, std::string body);
};

}  // namespace torwart::http
