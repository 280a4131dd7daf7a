// HTTPS server (Boost.Beast behind a pimpl) with a path router. Handlers are plain synchronous
// functions run on the server's worker threads, so they may block on storage.
// Start/Stop from one thread; handlers run concurrently and must be thread-safe.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/http/message.hpp"

namespace torwart::http {

using Handler = std::function<Response(const Request&)>;

class Router {
 public:
  // pattern: "/api/v1/devices/{name}/revoke" — `{x}` matches one path segment into params["x"].
  void Add(std::string method, std::string pattern, Handler h);
  // 404 for an unknown path, 405 (with Allow) for a known path with another method.
  Response Dispatch(Request& req) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  std::vector<Route> routes_;
};

// Called for connections that fail before a request is routed (TLS handshake failure, garbage,
// oversized or malformed HTTP, a stalled request). `what` is a short description. Used to audit
// bad input. Runs on an I/O thread: must be thread-safe and quick (no blocking storage writes).
using BadInputCallback = std::function<void(const std::string& peer, const std::string& what)>;

struct ServerSettings {
  std::string address = "127.0.0.1";
  uint16_t port = 8443;                  // 0 picks a free port (tests)
  SSL_CTX* tls = nullptr;                // not owned; must outlive the server
  size_t max_body_bytes = 1 << 20;       // larger bodies get 413
  size_t max_header_bytes = 16 << 10;
  std::chrono::seconds read_timeout{30};
  int io_threads = 1;
  int worker_threads = 4;
  BadInputCallback on_bad_input;
  // Optional per-request body limit instead of max_body_bytes (e.g. large uploads on one route
  // for authenticated devices). Gets the request line, headers, peer and client certificate (no
  // body, no routing yet). A limit above max_body_bytes makes read_timeout apply per read of
  // the body rather than to the whole body. Runs on an I/O thread: quick, thread-safe.
  std::function<size_t(const Request& head)> body_limit_for;
};

class Server {
 public:
  Server(ServerSettings settings, const Router& router);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving in background threads. Returns the bound port.
  Expected<uint16_t> Start();
  // Stops accepting, closes idle connections, lets requests already in a handler finish and
  // answer, joins threads. Idempotent; never call it from a handler.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torwart::http
