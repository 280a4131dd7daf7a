// clang-format off
// <utility> must come before boost/asio/awaitable.hpp with Boost 1.74 and g++ 12.
#include <utility>
// clang-format on

#include "torwart/http/server.hpp"

#include <openssl/x509.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "torwart/core/log.hpp"
#include "uri.hpp"

namespace torwart::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using beast::error_code;

constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr auto kStopWait = std::chrono::seconds(30);

auto Redirect(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

std::string PeerString(const tcp::socket& s) {
  error_code ec;
  tcp::endpoint ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

std::string PeerCertDer(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return {};
  std::string out;
  unsigned char* der = nullptr;
  int n = i2d_X509(cert, &der);
  if (n > 0) out.assign(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  X509_free(cert);
  return out;
}

bool HasCrLfOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != s.npos;
}

bhttp::response<bhttp::string_body> ToBeast(Response resp, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> res;
  res.version(version);
  res.result(resp.status >= 100 && resp.status <= 599 ? static_cast<unsigned>(resp.status) : 500u);
  if (!resp.content_type.empty() && !HasCrLfOrNul(resp.content_type)) {
    res.set(bhttp::field::content_type, resp.content_type);
  }
  for (const auto& [name, value] : resp.headers) {
    if (name.empty() || HasCrLfOrNul(name) || HasCrLfOrNul(value) ||
        name.find(':') != std::string::npos) {
      log::error("http: dropping invalid response header '{}'", name);
      continue;
    }
    res.set(name, value);
  }
  res.set(bhttp::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::move(resp.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

bool IsHttpParseError(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category();
}

// A connection; shared because Stop() reaches it from another thread (through a weak_ptr in the
// registry) while its coroutine owns it.
struct Connection {
  Connection(tcp::socket s, asio::ssl::context& ctx, uint64_t conn_id)
      : peer(PeerString(s)), stream(std::move(s), ctx), id(conn_id) {}
  std::string peer;
  beast::ssl_stream<beast::tcp_stream> stream;
  uint64_t id;
  // True from a complete request until its response is written; touched only on the
  // connection's strand. Stop() lets such a connection finish its response.
  bool busy = false;
};

// Runs on a worker thread. Handlers are not supposed to throw; if one does, the client gets a
// 500 and the operator a log line.
asio::awaitable<Response> RunHandler(const Router* router, Request req) {
  try {
    co_return router->Dispatch(req);
  } catch (const std::exception& e) {
    log::error("http: handler for {} {} threw: {}", req.method, req.path, e.what());
  } catch (...) {
    log::error("http: handler for {} {} threw a non-exception", req.method, req.path);
  }
  co_return Response::Error(500, "internal", "internal server error");
}

}  // namespace

struct Server::Impl {
  Impl(ServerSettings s, const Router& r)
      : settings(std::move(s)), router(r), ioc(std::max(1, settings.io_threads)) {}

  Expected<uint16_t> Start();
  void Stop();

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Session(std::shared_ptr<Connection> c);
  asio::awaitable<void> Serve(Connection& c);
  asio::awaitable<void> LingeringClose(Connection& c);
  asio::awaitable<void> GracefulClose(Connection& c);
  void BadInput(const std::string& peer, const std::string& what);
  void Unregister(uint64_t id);
  bool Stopping() {
    std::lock_guard lock(mu);
    return stopping;
  }

  ServerSettings settings;
  const Router& router;

  // Declared before the io_context: coroutine frames it may still own when destroyed touch these.
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  bool stopping = false;
  bool accept_running = false;
  uint64_t next_id = 0;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> conns;

  std::optional<asio::ssl::context> ssl;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::optional<tcp::acceptor> acceptor;
  // After the io_context: destroyed (joined) first, since finished handlers post to ioc.
  std::optional<asio::thread_pool> workers;
  std::vector<std::thread> io_threads;
};

void Server::Impl::BadInput(const std::string& peer, const std::string& what) {
  log::debug("http: bad input from {}: {}", peer, what);
  if (!settings.on_bad_input) return;
  try {
    settings.on_bad_input(peer, what);
  } catch (const std::exception& e) {
    log::error("http: on_bad_input threw: {}", e.what());
  } catch (...) {
    log::error("http: on_bad_input threw a non-exception");
  }
}

void Server::Impl::Unregister(uint64_t id) {
  std::lock_guard lock(mu);
  conns.erase(id);
  cv.notify_all();
}

Expected<uint16_t> Server::Impl::Start() {
  if (started) return MakeError(Errc::kFailedPrecondition, "http server: already started");
  if (settings.tls == nullptr) {
    return MakeError(Errc::kInvalidArgument, "http server: no TLS context given");
  }
  if (settings.io_threads < 1 || settings.worker_threads < 1) {
    return MakeError(Errc::kInvalidArgument,
                     "http server: io_threads and worker_threads must be >= 1");
  }
  error_code ec;
  auto address = asio::ip::make_address(settings.address, ec);
  if (ec) {
    return MakeError(Errc::kInvalidArgument,
                     "http server: invalid listen address '" + settings.address + "'");
  }
  tcp::endpoint endpoint(address, settings.port);
  std::string where = endpoint.address().is_v6()
                          ? "[" + settings.address + "]:" + std::to_string(settings.port)
                          : settings.address + ":" + std::to_string(settings.port);
  acceptor.emplace(asio::make_strand(ioc));
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor.reset();
    return MakeError(Errc::kUnavailable, "cannot listen on " + where + ": " + ec.message());
  }
  uint16_t port = acceptor->local_endpoint(ec).port();
  if (ec) return MakeError(Errc::kUnavailable, "cannot listen on " + where + ": " + ec.message());

  // asio::ssl::context takes ownership of the handle; the caller keeps its own reference.
  SSL_CTX_up_ref(settings.tls);
  ssl.emplace(settings.tls);
  workers.emplace(static_cast<size_t>(settings.worker_threads));
  work.emplace(ioc.get_executor());
  accept_running = true;
  asio::co_spawn(acceptor->get_executor(), AcceptLoop(), [](std::exception_ptr e) {
    if (e) log::error("http: accept loop ended with an exception");
  });
  for (int i = 0; i < settings.io_threads; ++i) {
    io_threads.emplace_back([this] {
      for (;;) {
        try {
          ioc.run();
          return;
        } catch (const std::exception& e) {
          log::error("http: io thread: {}", e.what());
        }
      }
    });
  }
  started = true;
  return port;
}

void Server::Impl::Stop() {
  {
    std::lock_guard lock(mu);
    if (!started || stopping) return;
    stopping = true;
    asio::post(acceptor->get_executor(), [this] {
      error_code ignored;
      acceptor->close(ignored);
    });
    for (auto& [id, weak] : conns) {
      if (auto c = weak.lock()) {
        asio::post(c->stream.get_executor(), [weak = weak] {
          auto conn = weak.lock();
          if (conn && !conn->busy) beast::get_lowest_layer(conn->stream).close();
        });
      }
    }
  }
  {
    // Idle sessions end once their sockets are closed; busy ones after writing their response.
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kStopWait, [this] { return conns.empty() && !accept_running; })) {
      log::error("http: {} connection(s) still busy after {}s; stopping anyway", conns.size(),
                 kStopWait.count());
    }
  }
  work.reset();
  ioc.stop();
  for (auto& t : io_threads) t.join();
  io_threads.clear();
  workers->join();
}

asio::awaitable<void> Server::Impl::AcceptLoop() {
  struct Done {
    Server::Impl* self;
    ~Done() {
      std::lock_guard lock(self->mu);
      self->accept_running = false;
      self->cv.notify_all();
    }
  } done{this};
  asio::steady_timer backoff(acceptor->get_executor());
  for (;;) {
    tcp::socket socket(asio::make_strand(ioc));
    error_code ec;
    co_await acceptor->async_accept(socket, Redirect(ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open() || Stopping()) break;
      // E.g. out of file descriptors: wait a little instead of spinning.
      log::warn("http: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(Redirect(ec));
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(mu);
      if (stopping) break;
      conn = std::make_shared<Connection>(std::move(socket), *ssl, ++next_id);
      conns.emplace(conn->id, conn);
    }
    asio::co_spawn(conn->stream.get_executor(), Session(conn), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::Session(std::shared_ptr<Connection> c) {
  struct Unregister {
    Server::Impl* self;
    uint64_t id;
    ~Unregister() { self->Unregister(id); }
  } unregister{this, c->id};
  try {
    co_await Serve(*c);
  } catch (const std::exception& e) {
    log::error("http: connection from {} failed: {}", c->peer, e.what());
  } catch (...) {
    log::error("http: connection from {} failed", c->peer);
  }
  beast::get_lowest_layer(c->stream).close();
}

asio::awaitable<void> Server::Impl::Serve(Connection& c) {
  auto& stream = c.stream;
  auto& tcp_layer = beast::get_lowest_layer(stream);
  error_code ec;

  tcp_layer.expires_after(settings.read_timeout);
  co_await stream.async_handshake(asio::ssl::stream_base::server, Redirect(ec));
  if (ec) {
    if (!Stopping()) BadInput(c.peer, "TLS handshake failed: " + ec.message());
    co_return;
  }
  const std::string cert_der = PeerCertDer(stream.native_handle());

  beast::flat_buffer buffer;
  bool served_any = false;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(
        static_cast<std::uint32_t>(std::min<size_t>(settings.max_header_bytes, UINT32_MAX)));
    size_t body_limit = settings.max_body_bytes;
    // With a per-request limit the header decides; Beast would check Content-Length against
    // the default limit while parsing the header, so the check moves after it.
    if (settings.body_limit_for) {
      // Not boost::none: Beast 1.74 compares Content-Length > none as true.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    } else {
      parser.body_limit(body_limit);
    }
    tcp_layer.expires_after(settings.read_timeout);
    co_await bhttp::async_read_header(stream, buffer, parser, Redirect(ec));
    if (!ec && settings.body_limit_for) {
      Request head;
      head.method = std::string(parser.get().method_string());
      head.target = std::string(parser.get().target());
      for (const auto& field : parser.get()) {
        std::string name(field.name_string());
        for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        head.headers.emplace(std::move(name), std::string(field.value()));
      }
      head.peer = c.peer;
      head.client_cert_der = cert_der;
      body_limit = settings.body_limit_for(head);
      auto length = parser.content_length();
      if (length && *length > body_limit) {
        ec = bhttp::error::body_limit;
      } else {
        parser.body_limit(body_limit);
      }
    }
    if (!ec) {
      auto expect = parser.get()[bhttp::field::expect];
      if (beast::iequals(expect, "100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
        co_await bhttp::async_write(stream, cont, Redirect(ec));
        if (ec) co_return;
      }
      if (body_limit > settings.max_body_bytes) {
        // A large body (an upload): read_timeout applies to each read, not to the whole body.
        while (!ec && !parser.is_done()) {
          tcp_layer.expires_after(settings.read_timeout);
          co_await bhttp::async_read_some(stream, buffer, parser, Redirect(ec));
        }
      } else {
        co_await bhttp::async_read(stream, buffer, parser, Redirect(ec));
      }
    }
    if (ec) {
      if (Stopping() || ec == asio::error::operation_aborted) co_return;
      bool partial = parser.got_some() || buffer.size() > 0;
      if (ec == bhttp::error::end_of_stream ||
          ((ec == asio::ssl::error::stream_truncated || ec == asio::error::eof ||
            ec == asio::error::connection_reset) &&
           !partial)) {
        co_return;  // the client closed between requests
      }
      if (ec == beast::error::timeout) {
        // An idle keep-alive connection timing out is normal; a stalled request is not.
        if (partial || !served_any) BadInput(c.peer, "read timeout");
        co_return;
      }
      Response resp;
      std::string what;
      if (ec == bhttp::error::body_limit) {
        resp = Response::Error(413, "payload_too_large",
                               "request body exceeds " + std::to_string(body_limit) + " bytes");
        what = "request body too large";
      } else if (ec == bhttp::error::header_limit) {
        resp = Response::Error(431, "header_too_large", "request header too large");
        what = "request header too large";
      } else if (IsHttpParseError(ec)) {
        resp = Response::Error(400, "bad_request", "malformed HTTP request");
        what = "malformed HTTP: " + ec.message();
      } else {
        BadInput(c.peer, "connection error: " + ec.message());
        co_return;
      }
      BadInput(c.peer, what);
      auto res = ToBeast(std::move(resp), 11, false);
      tcp_layer.expires_after(settings.read_timeout);
      co_await bhttp::async_write(stream, res, Redirect(ec));
      if (!ec) co_await LingeringClose(c);
      co_return;
    }

    c.busy = true;
    auto& breq = parser.get();
    const bool keep_alive = breq.keep_alive();
    const unsigned version = breq.version();
    Request req;
    req.method = std::string(breq.method_string());
    req.target = std::string(breq.target());
    for (const auto& field : breq) {
      std::string name(field.name_string());
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      auto [it, inserted] = req.headers.emplace(std::move(name), std::string(field.value()));
      if (!inserted) {
        it->second += ", ";
        it->second.append(field.value().data(), field.value().size());
      }
    }
    req.body = std::move(breq.body());
    req.peer = c.peer;
    req.client_cert_der = cert_der;

    Response resp;
    auto split = internal::SplitOriginForm(req.target);
    auto query = split ? internal::ParseQuery(split->raw_query) : std::nullopt;
    if (!split || !query) {
      BadInput(c.peer, "malformed request target");
      resp = Response::Error(400, "bad_request", "malformed request target");
    } else {
      req.path = std::move(split->path);
      req.query = std::move(*query);
      try {
        resp = co_await asio::co_spawn(workers->get_executor(), RunHandler(&router, std::move(req)),
                                       asio::use_awaitable);
      } catch (const std::exception& e) {
        log::error("http: running a handler failed: {}", e.what());
        resp = Response::Error(500, "internal", "internal server error");
      }
    }

    const bool stay = keep_alive && !Stopping();
    auto res = ToBeast(std::move(resp), version, stay);
    tcp_layer.expires_after(settings.read_timeout);
    co_await bhttp::async_write(stream, res, Redirect(ec));
    c.busy = false;
    if (ec) co_return;
    served_any = true;
    if (!stay) {
      co_await GracefulClose(c);
      co_return;
    }
  }
}

// After an error response the client may still be sending (a body we refused): closing at
// once would reset the connection and could destroy the response in flight. Half-close, then
// discard what arrives for a short while.
asio::awaitable<void> Server::Impl::LingeringClose(Connection& c) {
  auto& tcp_layer = beast::get_lowest_layer(c.stream);
  error_code ec;
  tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ec);
  tcp_layer.expires_after(kCloseGrace);
  const size_t max_drain = std::max<size_t>(settings.max_body_bytes, 1 << 20) * 4;
  std::array<char, 16384> scratch;
  for (size_t drained = 0; drained < max_drain;) {
    size_t n = co_await tcp_layer.async_read_some(asio::buffer(scratch), Redirect(ec));
    if (ec) break;
    drained += n;
  }
}

asio::awaitable<void> Server::Impl::GracefulClose(Connection& c) {
  error_code ec;
  beast::get_lowest_layer(c.stream).expires_after(kCloseGrace);
  co_await c.stream.async_shutdown(Redirect(ec));  // close_notify; errors do not matter here
}

Server::Server(ServerSettings settings, const Router& router)
    : impl_(std::make_unique<Impl>(std::move(settings), router)) {}

Server::~Server() { Stop(); }

Expected<uint16_t> Server::Start() { return impl_->Start(); }

void Server::Stop() { impl_->Stop(); }

}  // namespace torwart::http
