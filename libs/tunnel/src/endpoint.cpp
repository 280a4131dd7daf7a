// clang-format off
// <utility> must come before boost/asio/awaitable.hpp with Boost 1.74 and g++ 12.
#include <utility>
// clang-format on

#include "torwart/tunnel/endpoint.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <unordered_map>

#include "tls_io.hpp"
#include "torwart/core/log.hpp"
#include "torwart/tunnel/wire.hpp"

namespace torwart::tunnel {
namespace {

using namespace detail;  // NOLINT(google-build-using-namespace): private helpers of this library

constexpr const char* kCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256";
constexpr unsigned char kInnerSessionIdContext[] = "torwart-inner";
constexpr auto kStopWait = std::chrono::seconds(5);
constexpr auto kDeadlineCheck = std::chrono::seconds(1);
constexpr auto kLinger = std::chrono::seconds(2);
constexpr char kClosedByTechnician[] = "closed by technician";

// ---------------------------------------------------------------------------------------------
// TLS contexts

Unexpected SslError(Errc code, std::string what) {
  std::string details = net::OpenSslErrors();
  if (!details.empty()) what += ": " + details;
  return MakeError(code, std::move(what));
}

Expected<net::SslCtxPtr> NewTls13(const SSL_METHOD* method, const char* what) {
  ERR_clear_error();
  net::SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) return SslError(Errc::kInternal, std::string(what) + ": cannot create context");
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(c, kCipherSuites) != 1 ||
      SSL_CTX_set1_groups_list(c, kGroups) != 1) {
    return SslError(Errc::kInternal, std::string(what) + ": cannot configure TLS 1.3");
  }
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  return ctx;
}

Expected<void> UseChainAndKey(SSL_CTX* c, const std::string& chain_pem, EVP_PKEY* key,
                              const char* what) {
  if (key == nullptr) return MakeError(Errc::kInvalidArgument, std::string(what) + ": no key");
  BIO* bio = BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size()));
  if (bio == nullptr) return SslError(Errc::kInternal, what);
  bool first = true;
  Expected<void> result;
  for (;;) {
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    int ok = first ? SSL_CTX_use_certificate(c, cert) : SSL_CTX_add0_chain_cert(c, cert);
    if (first || ok != 1) X509_free(cert);  // add0 took ownership on success
    if (ok != 1) {
      result = SslError(Errc::kInvalidArgument, std::string(what) + ": cannot use certificate");
      break;
    }
    first = false;
  }
  BIO_free(bio);
  if (!result) return result;
  ERR_clear_error();  // the loop ends on "no start line"
  if (first) {
    return MakeError(Errc::kInvalidArgument, std::string(what) + ": no certificate in the chain");
  }
  if (SSL_CTX_use_PrivateKey(c, key) != 1 || SSL_CTX_check_private_key(c) != 1) {
    return SslError(Errc::kInvalidArgument,
                    std::string(what) + ": key does not match the certificate");
  }
  return {};
}

Expected<void> TrustCa(SSL_CTX* c, const std::string& ca_file, const char* what) {
  if (ca_file.empty()) return MakeError(Errc::kInvalidArgument, std::string(what) + ": no CA");
  if (SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr) != 1) {
    return SslError(Errc::kInvalidArgument,
                    std::string(what) + ": CA file " + ca_file + ": cannot load");
  }
  return {};
}

// Inner TLS: the peer is a device certificate (clientAuth only) or a grant certificate;
// the chain is what TLS checks, the identity is the hooks' job.
Expected<void> InnerVerify(SSL_CTX* c, int mode) {
  SSL_CTX_set_verify(c, mode, nullptr);
  SSL_CTX_set_verify_depth(c, 4);
  if (SSL_CTX_set_purpose(c, X509_PURPOSE_ANY) != 1) {
    return SslError(Errc::kInternal, "inner TLS: cannot set the verification purpose");
  }
  return {};
}

std::mutex g_keylog_mu;
std::string g_keylog_path;

void AppendKeyLog(const SSL* /*ssl*/, const char* line) {
  std::lock_guard lock(g_keylog_mu);
  if (g_keylog_path.empty()) return;
  int fd = ::open(g_keylog_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string text = std::string(line) + "\n";
  ssize_t ignored = ::write(fd, text.data(), text.size());
  (void)ignored;
  ::close(fd);
}

// ---------------------------------------------------------------------------------------------
// Shared plumbing: one I/O thread and a count of running tasks (for Stop).

class IoRunner {
 public:
  IoRunner() : work_(ioc_.get_executor()) {
    thread_ = std::thread([this] {
      for (;;) {
        try {
          ioc_.run();
          return;
        } catch (const std::exception& e) {
          log::error("tunnel: io thread: {}", e.what());
        }
      }
    });
  }
  ~IoRunner() { Shutdown(); }
  asio::io_context& ioc() { return ioc_; }
  asio::any_io_executor ex() { return ioc_.get_executor(); }
  void Spawn(asio::awaitable<void> a) { tasks_.Spawn(ioc_, std::move(a)); }
  // Waits (bounded) for every task to finish, then stops the thread.
  void Shutdown() {
    if (!thread_.joinable()) return;
    tasks_.WaitIdle(kStopWait);
    work_.reset();
    ioc_.stop();
    thread_.join();
  }

 private:
  TaskGroup tasks_{"tunnel"};
  asio::io_context ioc_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
};

std::string HandshakeError(SSL* ssl, const error_code& ec) {
  std::string text = ErrorText(ec);
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) text += " (" + std::string(X509_verify_cert_error_string(v)) + ")";
  return text;
}

Expected<SslPtr> NewClientSsl(SSL_CTX* ctx, const std::string& host) {
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx));
  if (!ssl) return SslError(Errc::kInternal, "TLS: SSL_new failed");
  error_code ec;
  asio::ip::make_address(host, ec);
  if (!ec) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), host.c_str()) != 1) {
      return SslError(Errc::kInvalidArgument, "TLS: bad relay address " + host);
    }
  } else {
    if (SSL_set_tlsext_host_name(ssl.get(), host.c_str()) != 1 ||
        SSL_set1_host(ssl.get(), host.c_str()) != 1) {
      return SslError(Errc::kInvalidArgument, "TLS: bad relay name " + host);
    }
  }
  SSL_set_connect_state(ssl.get());
  return ssl;
}

// Connects `sock` to host:port and runs the outer TLS handshake; `outer` is set as soon as the
// TLS object exists so a watchdog can close it. Returns an error text, empty on success.
asio::awaitable<std::string> DialRelay(tcp::resolver& resolver, tcp::socket& sock,
                                       std::unique_ptr<FdTls>& outer, const std::string& host,
                                       uint16_t port, SSL_CTX* ctx) {
  error_code ec;
  auto results = co_await resolver.async_resolve(host, std::to_string(port), Redirect(ec));
  if (ec) co_return "relay " + host + ": cannot resolve: " + ec.message();
  co_await asio::async_connect(sock, results, Redirect(ec));
  if (ec) {
    co_return "relay " + host + ":" + std::to_string(port) + " unreachable: " + ec.message();
  }
  sock.set_option(tcp::no_delay(true), ec);
  auto ssl = NewClientSsl(ctx, host);
  if (!ssl) co_return ssl.error().message();
  outer = std::make_unique<FdTls>(std::move(sock), std::move(*ssl));
  co_await outer->Handshake(ec);
  if (ec) co_return "relay TLS handshake failed: " + HandshakeError(outer->ssl(), ec);
  co_return std::string();
}

// ---------------------------------------------------------------------------------------------
// Forwarder

struct FwdConn {
  explicit FwdConn(asio::io_context& ioc, tcp::socket s)
      : local(std::move(s)), resolver(ioc), relay_sock(ioc), done(ioc.get_executor()) {}
  tcp::socket local;
  tcp::resolver resolver;
  tcp::socket relay_sock;
  std::unique_ptr<FdTls> outer;
  std::unique_ptr<LayeredTls> inner;
  uint64_t id = 0;
  std::string peer, stream_id;
  bool closed = false;
  // Pumps (I/O thread only).
  AsyncSignal done;
  bool up_running = false;
  bool failed = false;
  std::string reason;
  void Fail(const std::string& why) {
    if (!failed && reason.empty()) reason = why;
    failed = true;
    CloseAll();
  }
  void CloseAll() {
    closed = true;
    error_code ignored;
    local.close(ignored);
    resolver.cancel();
    relay_sock.close(ignored);
    if (inner) {
      inner->Close();
    } else if (outer) {
      outer->Close();
    }
  }
};

class ForwarderImpl final : public Forwarder {
 public:
  ForwarderImpl(ForwarderSettings s, ForwarderHooks h) : s_(std::move(s)), h_(std::move(h)) {}
  ~ForwarderImpl() override { Stop(); }
  Expected<void> Start();
  uint16_t port() const override { return port_; }
  size_t active() const override { return active_.load(); }
  void Stop() override;

 private:
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Handle(std::shared_ptr<FwdConn> c);
  asio::awaitable<std::string> Setup(std::shared_ptr<FwdConn> c);
  asio::awaitable<void> Up(std::shared_ptr<FwdConn> c);
  asio::awaitable<void> Down(std::shared_ptr<FwdConn> c);
  void End(const std::string& stream_id, const std::string& reason, bool error);

  ForwarderSettings s_;
  ForwarderHooks h_;
  uint16_t port_ = 0;
  std::atomic<size_t> active_{0};
  std::mutex mu_;
  bool stopping_ = false;
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, std::weak_ptr<FwdConn>> conns_;
  std::optional<IoRunner> io_;
  std::optional<tcp::acceptor> acceptor_;
};

Expected<void> ForwarderImpl::Start() {
  if (!s_.outer || !s_.inner) {
    return MakeError(Errc::kInvalidArgument, "forwarder: outer and inner TLS contexts needed");
  }
  if (!h_.verify_gateway) {
    return MakeError(Errc::kInvalidArgument, "forwarder: verify_gateway is required");
  }
  if (s_.relay_host.empty() || s_.relay_port == 0) {
    return MakeError(Errc::kInvalidArgument, "forwarder: relay host and port needed");
  }
  auto endpoint = ParseListen(s_.listen);
  if (!endpoint) return MakeError(endpoint.error().WithContext("forwarder"));
  io_.emplace();
  error_code ec;
  acceptor_.emplace(io_->ioc());
  acceptor_->open(endpoint->protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(*endpoint, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) port_ = acceptor_->local_endpoint(ec).port();
  if (ec) {
    acceptor_.reset();
    io_.reset();
    return MakeError(Errc::kUnavailable,
                     "forwarder: cannot listen on " + s_.listen + ": " + ec.message());
  }
  io_->Spawn(AcceptLoop());
  return {};
}

void ForwarderImpl::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!io_ || stopping_) return;
    stopping_ = true;
  }
  asio::post(io_->ioc(), [this] {
    error_code ignored;
    acceptor_->close(ignored);
    std::vector<std::shared_ptr<FwdConn>> all;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, weak] : conns_) {
        if (auto c = weak.lock()) all.push_back(std::move(c));
      }
    }
    for (auto& c : all) c->Fail("stopped");
  });
  io_->Shutdown();
}

void ForwarderImpl::End(const std::string& stream_id, const std::string& reason, bool error) {
  if (!h_.on_end) return;
  try {
    h_.on_end(stream_id, reason, error);
  } catch (const std::exception& e) {
    log::error("forwarder: on_end threw: {}", e.what());
  } catch (...) {
    log::error("forwarder: on_end threw");
  }
}

asio::awaitable<void> ForwarderImpl::AcceptLoop() {
  asio::steady_timer backoff(io_->ioc());
  for (;;) {
    tcp::socket socket(io_->ioc());
    error_code ec;
    co_await acceptor_->async_accept(socket, Redirect(ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      log::warn("forwarder: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(Redirect(ec));
      continue;
    }
    if (active_.load() >= s_.max_connections) {
      socket.close(ec);
      End("", "too many connections (max " + std::to_string(s_.max_connections) + ")", true);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto c = std::make_shared<FwdConn>(io_->ioc(), std::move(socket));
    c->peer = PeerString(c->local);
    {
      std::lock_guard lock(mu_);
      if (stopping_) co_return;
      c->id = ++next_id_;
      conns_.emplace(c->id, c);
      active_.fetch_add(1);
    }
    io_->Spawn(Handle(std::move(c)));
  }
}

asio::awaitable<std::string> ForwarderImpl::Setup(std::shared_ptr<FwdConn> c) {
  std::string err = co_await DialRelay(c->resolver, c->relay_sock, c->outer, s_.relay_host,
                                       s_.relay_port, s_.outer.get());
  if (!err.empty()) co_return err;
  error_code ec;
  co_await c->outer->WriteAll(FormatConnect(), ec);
  if (ec) co_return "relay connection lost: " + ErrorText(ec);
  std::string rest;
  bool too_long = false;
  std::string line = co_await ReadLine(*c->outer, rest, too_long, ec);
  if (ec) co_return "relay connection lost before the reply: " + ErrorText(ec);
  auto reply =
      too_long ? Expected<Reply>(MakeError(Errc::kParse, "reply line too long")) : ParseReply(line);
  if (!reply) co_return "bad reply from the relay: " + reply.error().message();
  if (!reply->ok) {
    co_return reply->code + (reply->message.empty() ? "" : ": " + reply->message);
  }
  c->stream_id = reply->stream_id;
  ERR_clear_error();
  SslPtr ssl(SSL_new(s_.inner.get()));
  if (!ssl) co_return "inner TLS: SSL_new failed";
  SSL_set_connect_state(ssl.get());
  c->inner = std::make_unique<LayeredTls>(*c->outer, std::move(ssl), io_->ex(), rest);
  co_await c->inner->Handshake(ec);
  if (ec) co_return "TLS handshake with the gateway failed: " + HandshakeError(c->inner->ssl(), ec);
  std::string leaf = PeerLeafDer(c->inner->ssl());
  Expected<void> ok;
  try {
    ok = h_.verify_gateway(leaf, reply->device_id);
  } catch (const std::exception& e) {
    ok = MakeError(Errc::kInternal, std::string("verify_gateway threw: ") + e.what());
  }
  if (!ok) co_return "gateway verification failed: " + ok.error().message();
  co_return std::string();
}

asio::awaitable<void> ForwarderImpl::Handle(std::shared_ptr<FwdConn> c) {
  struct Release {
    ForwarderImpl* self;
    uint64_t id;
    ~Release() {
      self->active_.fetch_sub(1);
      std::lock_guard lock(self->mu_);
      self->conns_.erase(id);
    }
  } release{this, c->id};
  Watchdog wd(io_->ex());
  auto timed_out = std::make_shared<bool>(false);
  wd.Arm(s_.connect_timeout, [c, timed_out] {
    *timed_out = true;
    c->CloseAll();
  });
  std::string err = co_await Setup(c);
  wd.Disarm();
  if (err.empty() && c->closed) err = c->reason.empty() ? "stopped" : c->reason;
  if (!err.empty()) {
    if (*timed_out) {
      err = "timed out after " + std::to_string(s_.connect_timeout.count()) +
            " ms (relay, gateway or handshakes): " + err;
    }
    log::info("forwarder: connection from {} failed: {}", c->peer, err);
    c->CloseAll();
    End(c->stream_id, err, true);
    co_return;
  }
  if (h_.on_open) {
    try {
      h_.on_open(c->stream_id, c->peer);
    } catch (const std::exception& e) {
      log::error("forwarder: on_open threw: {}", e.what());
    } catch (...) {
      log::error("forwarder: on_open threw");
    }
  }
  c->up_running = true;
  io_->Spawn(Up(c));
  co_await Down(c);
  while (c->up_running) co_await c->done.Wait();
  if (!c->failed) {
    // Both directions ended cleanly: close the relay leg politely.
    error_code ignored;
    co_await c->outer->ShutdownWrite(ignored);
  }
  std::string reason = c->reason.empty() ? "closed" : c->reason;
  c->CloseAll();
  End(c->stream_id, reason, c->failed);
}

// Local client → inner TLS.
asio::awaitable<void> ForwarderImpl::Up(std::shared_ptr<FwdConn> c) {
  std::vector<char> buf(kCopyBuffer);
  error_code ec;
  bool write_failed = false;
  for (;;) {
    size_t n = co_await c->local.async_read_some(asio::buffer(buf), Redirect(ec));
    if (ec) break;
    co_await c->inner->WriteAll(buf.data(), n, ec);
    if (ec) {
      write_failed = true;
      break;
    }
  }
  if (!c->failed && !write_failed && IsEof(ec)) {
    if (c->reason.empty()) c->reason = "closed by client";
    co_await c->inner->ShutdownWrite(ec);
  } else if (!c->failed) {
    c->Fail(write_failed ? "relay connection lost: " + ErrorText(ec)
                         : "local connection lost: " + ErrorText(ec));
  }
  c->up_running = false;
  c->done.Notify();
}

// Inner TLS → local client.
asio::awaitable<void> ForwarderImpl::Down(std::shared_ptr<FwdConn> c) {
  std::vector<char> buf(kCopyBuffer);
  error_code ec;
  bool write_failed = false;
  for (;;) {
    size_t n = co_await c->inner->ReadSome(buf.data(), buf.size(), ec);
    if (ec) break;
    co_await asio::async_write(c->local, asio::buffer(buf.data(), n), Redirect(ec));
    if (ec) {
      write_failed = true;
      break;
    }
  }
  if (!c->failed && !write_failed && IsEof(ec)) {
    if (c->reason.empty()) c->reason = "closed by gateway";
    error_code ignored;
    c->local.shutdown(tcp::socket::shutdown_send, ignored);
  } else if (!c->failed) {
    c->Fail(write_failed ? "local connection lost: " + ErrorText(ec)
                         : "connection to the gateway lost: " + ErrorText(ec));
  }
}

// ---------------------------------------------------------------------------------------------
// GatewayStreams

struct GwStream {
  GwStream(asio::io_context& ioc, GatewayStreamSettings settings, GatewayStreamHooks hooks)
      : s(std::move(settings)),
        h(std::move(hooks)),
        resolver(ioc),
        relay_sock(ioc),
        target(ioc),
        deadline_timer(ioc),
        idle_timer(ioc) {}
  const GatewayStreamSettings s;
  const GatewayStreamHooks h;
  tcp::resolver resolver;
  tcp::socket relay_sock;
  std::unique_ptr<FdTls> outer;
  std::unique_ptr<LayeredTls> inner;
  tcp::socket target;
  asio::steady_timer deadline_timer, idle_timer;
  GrantCheck grant;
  std::unique_ptr<StreamFilter> filter;
  std::unique_ptr<StreamRecorder> rec;
  std::atomic<uint64_t> to_target{0}, from_target{0};
  // I/O thread only.
  bool target_connected = false;
  bool ended = false;
  bool tech_eof = false, target_eof = false;
  std::string first_eof;
  std::chrono::steady_clock::time_point last_activity = std::chrono::steady_clock::now();

  void CloseAll() {
    error_code ignored;
    resolver.cancel();
    relay_sock.close(ignored);
    target.close(ignored);
    if (inner) {
      inner->Close();
    } else if (outer) {
      outer->Close();
    }
  }
};

std::string RefusalJson(const Refusal& r) {
  nlohmann::json j = {{"transaction", r.transaction},
                      {"unit", r.unit},
                      {"function", r.function},
                      {"reason", r.reason}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class GatewayStreamsImpl final : public GatewayStreams {
 public:
  GatewayStreamsImpl() { io_.emplace(); }
  ~GatewayStreamsImpl() override { Stop(); }
  Expected<void> Open(GatewayStreamSettings s, GatewayStreamHooks h) override;
  size_t Kill(const std::string& stream_id, const std::string& reason) override;
  size_t KillAll(const std::string& reason) override;
  size_t KillGrant(const std::string& grant_id, const std::string& reason) override;
  std::vector<GatewayStreamInfo> List() const override;
  void Stop() override;

 private:
  struct Entry {
    std::shared_ptr<GwStream> st;
    GatewayStreamInfo info;
  };
  size_t KillWhere(const std::function<bool(const Entry&)>& match, const std::string& reason);
  asio::awaitable<void> Run(std::shared_ptr<GwStream> st);
  asio::awaitable<std::string> Setup(std::shared_ptr<GwStream> st);
  asio::awaitable<void> TechToTarget(std::shared_ptr<GwStream> st);
  asio::awaitable<void> TargetToTech(std::shared_ptr<GwStream> st);
  void ArmDeadline(const std::shared_ptr<GwStream>& st);
  void ArmIdle(const std::shared_ptr<GwStream>& st);
  void HalfClosed(const std::shared_ptr<GwStream>& st);
  asio::awaitable<void> LingerThenEnd(std::shared_ptr<GwStream> st);
  void End(const std::shared_ptr<GwStream>& st, const std::string& reason);

  mutable std::mutex mu_;
  bool stopping_ = false;
  std::unordered_map<std::string, Entry> index_;
  std::optional<IoRunner> io_;
};

Expected<void> GatewayStreamsImpl::Open(GatewayStreamSettings s, GatewayStreamHooks h) {
  if (!IsStreamId(s.stream_id)) {
    return MakeError(Errc::kInvalidArgument, "gateway stream: bad stream id '" + s.stream_id + "'");
  }
  if (!s.outer || !s.inner) {
    return MakeError(Errc::kInvalidArgument, "gateway stream: outer and inner TLS contexts needed");
  }
  if (!h.verify_grant) {
    return MakeError(Errc::kInvalidArgument, "gateway stream: verify_grant is required");
  }
  if (s.relay_host.empty() || s.relay_port == 0 || s.target_host.empty() || s.target_port == 0) {
    return MakeError(Errc::kInvalidArgument, "gateway stream: relay and target address needed");
  }
  auto st = std::make_shared<GwStream>(io_->ioc(), std::move(s), std::move(h));
  {
    std::lock_guard lock(mu_);
    if (stopping_) return MakeError(Errc::kFailedPrecondition, "gateway streams: stopped");
    Entry e;
    e.st = st;
    e.info.stream_id = st->s.stream_id;
    e.info.opened = std::chrono::system_clock::now();
    if (!index_.emplace(st->s.stream_id, std::move(e)).second) {
      return MakeError(Errc::kAlreadyExists, "stream " + st->s.stream_id + " already open");
    }
  }
  io_->Spawn(Run(std::move(st)));
  return {};
}

size_t GatewayStreamsImpl::KillWhere(const std::function<bool(const Entry&)>& match,
                                     const std::string& reason) {
  std::vector<std::shared_ptr<GwStream>> victims;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return 0;
    for (auto it = index_.begin(); it != index_.end();) {
      if (match(it->second)) {
        victims.push_back(std::move(it->second.st));
        it = index_.erase(it);
      } else {
        ++it;
      }
    }
  }
  size_t n = victims.size();
  if (n > 0) {
    asio::post(io_->ioc(), [this, victims = std::move(victims), reason] {
      for (const auto& st : victims) End(st, "killed: " + reason);
    });
  }
  return n;
}

size_t GatewayStreamsImpl::Kill(const std::string& stream_id, const std::string& reason) {
  return KillWhere([&](const Entry& e) { return e.info.stream_id == stream_id; }, reason);
}

size_t GatewayStreamsImpl::KillAll(const std::string& reason) {
  return KillWhere([](const Entry&) { return true; }, reason);
}

size_t GatewayStreamsImpl::KillGrant(const std::string& grant_id, const std::string& reason) {
  return KillWhere([&](const Entry& e) { return e.info.grant_id == grant_id; }, reason);
}

std::vector<GatewayStreamInfo> GatewayStreamsImpl::List() const {
  std::lock_guard lock(mu_);
  std::vector<GatewayStreamInfo> out;
  out.reserve(index_.size());
  for (const auto& [id, e] : index_) {
    GatewayStreamInfo info = e.info;
    info.bytes_to_target = e.st->to_target.load();
    info.bytes_from_target = e.st->from_target.load();
    out.push_back(std::move(info));
  }
  return out;
}

void GatewayStreamsImpl::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  asio::post(io_->ioc(), [this] {
    std::vector<std::shared_ptr<GwStream>> all;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, e] : index_) all.push_back(e.st);
    }
    for (auto& st : all) End(st, "stopping");
  });
  io_->Shutdown();
  std::unordered_map<std::string, Entry> left;
  {
    std::lock_guard lock(mu_);
    left.swap(index_);
  }
  left.clear();
}

void GatewayStreamsImpl::End(const std::shared_ptr<GwStream>& st, const std::string& reason) {
  if (st->ended) return;
  st->ended = true;
  st->deadline_timer.cancel();
  st->idle_timer.cancel();
  st->CloseAll();
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(st->s.stream_id);
    if (it != index_.end() && it->second.st == st) index_.erase(it);
  }
  log::info("gateway: stream {} ended: {} (to target {} B, from target {} B)", st->s.stream_id,
            reason, st->to_target.load(), st->from_target.load());
  try {
    if (st->rec) {
      nlohmann::json detail = {{"reason", reason},
                               {"bytes_to_target", st->to_target.load()},
                               {"bytes_from_target", st->from_target.load()}};
      st->rec->OnEvent("close",
                       detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      st->rec->Finish(reason);
      st->rec.reset();
    }
  } catch (const std::exception& e) {
    log::error("gateway: recorder failed at the end of {}: {}", st->s.stream_id, e.what());
  }
  st->filter.reset();
  if (!st->h.on_end) return;
  StreamSummary sum;
  sum.bytes_to_target = st->to_target.load();
  sum.bytes_from_target = st->from_target.load();
  sum.reason = reason;
  sum.target_connected = st->target_connected;
  try {
    st->h.on_end(st->s.stream_id, sum);
  } catch (const std::exception& e) {
    log::error("gateway: on_end threw: {}", e.what());
  } catch (...) {
    log::error("gateway: on_end threw");
  }
}

void GatewayStreamsImpl::ArmDeadline(const std::shared_ptr<GwStream>& st) {
  if (st->ended) return;
  auto now = std::chrono::system_clock::now();
  if (now >= st->grant.deadline) {
    End(st, "grant expired");
    return;
  }
  // Re-checked at least every second against the system clock: the grant's end is wall-clock
  // time, and the clock may be stepped while the stream runs.
  auto left =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(st->grant.deadline - now);
  st->deadline_timer.expires_after(std::min<std::chrono::steady_clock::duration>(
      left + std::chrono::microseconds(100), kDeadlineCheck));
  std::weak_ptr<GwStream> weak = st;
  st->deadline_timer.async_wait([this, weak](const error_code& ec) {
    auto s = weak.lock();
    if (!ec && s) ArmDeadline(s);
  });
}

void GatewayStreamsImpl::ArmIdle(const std::shared_ptr<GwStream>& st) {
  if (st->ended || st->s.idle_timeout.count() <= 0) return;
  auto due = st->last_activity + st->s.idle_timeout;
  if (std::chrono::steady_clock::now() >= due) {
    End(st, "idle");
    return;
  }
  st->idle_timer.expires_at(due);
  std::weak_ptr<GwStream> weak = st;
  st->idle_timer.async_wait([this, weak](const error_code& ec) {
    auto s = weak.lock();
    if (!ec && s) ArmIdle(s);
  });
}

asio::awaitable<std::string> GatewayStreamsImpl::Setup(std::shared_ptr<GwStream> st) {
  std::string err = co_await DialRelay(st->resolver, st->relay_sock, st->outer, st->s.relay_host,
                                       st->s.relay_port, st->s.outer.get());
  if (!err.empty()) co_return err;
  error_code ec;
  co_await st->outer->WriteAll(FormatAccept(st->s.stream_id), ec);
  if (ec) co_return "relay connection lost: " + ErrorText(ec);
  std::string rest;
  bool too_long = false;
  std::string line = co_await ReadLine(*st->outer, rest, too_long, ec);
  if (ec) co_return "relay connection lost before the reply: " + ErrorText(ec);
  auto reply =
      too_long ? Expected<Reply>(MakeError(Errc::kParse, "reply line too long")) : ParseReply(line);
  if (!reply) co_return "bad reply from the relay: " + reply.error().message();
  if (!reply->ok) {
    co_return "relay refused: " + reply->code +
        (reply->message.empty() ? "" : ": " + reply->message);
  }
  if (reply->stream_id != st->s.stream_id) co_return "relay paired another stream";
  ERR_clear_error();
  SslPtr ssl(SSL_new(st->s.inner.get()));
  if (!ssl) co_return "inner TLS: SSL_new failed";
  SSL_set_accept_state(ssl.get());
  // `rest` is the start of the technician's ClientHello if it came with the OK line.
  st->inner = std::make_unique<LayeredTls>(*st->outer, std::move(ssl), io_->ex(), rest);
  co_await st->inner->Handshake(ec);
  if (ec) {
    co_return "TLS handshake with the technician failed: " + HandshakeError(st->inner->ssl(), ec);
  }
  co_return std::string();
}

asio::awaitable<void> GatewayStreamsImpl::Run(std::shared_ptr<GwStream> st) {
  Watchdog wd(io_->ex());
  auto timed_out = std::make_shared<bool>(false);
  wd.Arm(st->s.connect_timeout, [st, timed_out] {
    *timed_out = true;
    st->CloseAll();
  });
  std::string err = co_await Setup(st);
  wd.Disarm();
  if (st->ended) co_return;
  if (!err.empty()) {
    if (*timed_out) err = "setup timed out: " + err;
    End(st, err);
    co_return;
  }
  // The grant: chain verified by TLS; CRL, extension, target and scope by the hook.
  Expected<GrantCheck> grant = MakeError(Errc::kInternal, "no grant");
  try {
    grant = st->h.verify_grant(PeerLeafDer(st->inner->ssl()));
  } catch (const std::exception& e) {
    grant = MakeError(Errc::kInternal, std::string("verify_grant threw: ") + e.what());
  }
  if (!grant) {
    End(st, "grant refused: " + grant.error().message());
    co_return;
  }
  st->grant = std::move(*grant);
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(st->s.stream_id);
    if (it != index_.end() && it->second.st == st) {
      it->second.info.grant_id = st->grant.grant_id;
      it->second.info.user = st->grant.user;
      it->second.info.target = st->grant.target;
      it->second.info.deadline = st->grant.deadline;
    }
  }
  ArmDeadline(st);
  if (st->ended) co_return;  // already expired
  try {
    if (st->h.make_filter) st->filter = st->h.make_filter(st->grant);
    if (st->h.make_recorder) st->rec = st->h.make_recorder(st->grant);
  } catch (const std::exception& e) {
    End(st, std::string("cannot set up the stream: ") + e.what());
    co_return;
  }

  // The target, within connect_timeout (the deadline timer keeps running meanwhile).
  wd.Arm(st->s.connect_timeout, [st, timed_out] {
    *timed_out = true;
    error_code ignored;
    st->resolver.cancel();
    st->target.close(ignored);
  });
  error_code ec;
  auto results = co_await st->resolver.async_resolve(
      st->s.target_host, std::to_string(st->s.target_port), Redirect(ec));
  if (!ec && !st->ended) co_await asio::async_connect(st->target, results, Redirect(ec));
  wd.Disarm();
  if (st->ended) co_return;
  if (ec) {
    End(st, "target " + st->s.target_host + ":" + std::to_string(st->s.target_port) +
                " unreachable: " + (*timed_out ? std::string("timeout") : ec.message()));
    co_return;
  }
  st->target.set_option(tcp::no_delay(true), ec);
  st->target_connected = true;
  if (st->rec) {
    nlohmann::json detail = {{"stream", st->s.stream_id},  {"grant", st->grant.grant_id},
                             {"user", st->grant.user},     {"site", st->grant.site},
                             {"target", st->grant.target}, {"scopes", st->grant.scopes}};
    st->rec->OnEvent("open", detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  st->last_activity = std::chrono::steady_clock::now();
  ArmIdle(st);
  io_->Spawn(TechToTarget(st));
  co_await TargetToTech(std::move(st));
}

void GatewayStreamsImpl::HalfClosed(const std::shared_ptr<GwStream>& st) {
  if (!st->tech_eof || !st->target_eof) return;
  if (st->first_eof == kClosedByTechnician) {
    // The technician closes its relay leg once it has our close_notify; let it go first so
    // the relay, too, records who ended the stream.
    io_->Spawn(LingerThenEnd(st));
    return;
  }
  End(st, st->first_eof);
}

asio::awaitable<void> GatewayStreamsImpl::LingerThenEnd(std::shared_ptr<GwStream> st) {
  Watchdog wd(io_->ex());
  wd.Arm(kLinger, [st] { st->CloseAll(); });
  char sink[512];
  error_code ec;
  while (!ec && !st->ended) co_await st->outer->ReadSome(sink, sizeof sink, ec);
  End(st, st->first_eof);
}

asio::awaitable<void> GatewayStreamsImpl::TechToTarget(std::shared_ptr<GwStream> st) {
  std::vector<char> buf(kCopyBuffer);
  error_code ec;
  bool target_failed = false;
  for (;;) {
    size_t n = co_await st->inner->ReadSome(buf.data(), buf.size(), ec);
    if (st->ended) co_return;
    if (ec) break;
    st->last_activity = std::chrono::steady_clock::now();
    std::string_view data(buf.data(), n);
    StreamFilter::Result filtered;
    if (st->filter) {
      try {
        filtered = st->filter->OnClientData(data);
      } catch (const std::exception& e) {
        End(st, std::string("filter failed: ") + e.what());
        co_return;
      }
      for (const auto& refusal : filtered.refused) {
        if (st->rec) st->rec->OnEvent("refused", RefusalJson(refusal));
        if (st->h.on_refused) {
          try {
            st->h.on_refused(st->s.stream_id, st->grant, refusal);
          } catch (const std::exception& e) {
            log::error("gateway: on_refused threw: {}", e.what());
          }
        }
      }
    } else {
      filtered.forward.assign(data);
    }
    if (!filtered.forward.empty()) {
      if (st->rec) st->rec->OnData(Direction::kToTarget, filtered.forward);
      co_await asio::async_write(st->target, asio::buffer(filtered.forward), Redirect(ec));
      if (st->ended) co_return;
      if (ec) {
        target_failed = true;
        break;
      }
      st->to_target += filtered.forward.size();
    }
    if (!filtered.reply.empty()) {
      co_await st->inner->WriteAll(filtered.reply, ec);
      if (st->ended) co_return;
      if (ec) break;
    }
    if (filtered.close) {
      End(st, "protocol violation: " + filtered.close_reason);
      co_return;
    }
  }
  if (!target_failed && IsEof(ec)) {
    if (st->first_eof.empty()) st->first_eof = kClosedByTechnician;
    st->tech_eof = true;
    error_code ignored;
    st->target.shutdown(tcp::socket::shutdown_send, ignored);
    HalfClosed(st);
    co_return;
  }
  End(st, (target_failed ? "target connection lost: " : "technician connection lost: ") +
              ErrorText(ec));
}

asio::awaitable<void> GatewayStreamsImpl::TargetToTech(std::shared_ptr<GwStream> st) {
  std::vector<char> buf(kCopyBuffer);
  error_code ec;
  bool tech_failed = false;
  for (;;) {
    size_t n = co_await st->target.async_read_some(asio::buffer(buf), Redirect(ec));
    if (st->ended) co_return;
    if (ec) break;
    st->last_activity = std::chrono::steady_clock::now();
    if (st->rec) st->rec->OnData(Direction::kFromTarget, std::string_view(buf.data(), n));
    co_await st->inner->WriteAll(buf.data(), n, ec);
    if (st->ended) co_return;
    if (ec) {
      tech_failed = true;
      break;
    }
    st->from_target += n;
  }
  if (!tech_failed && IsEof(ec)) {
    if (st->first_eof.empty()) st->first_eof = "closed by target";
    st->target_eof = true;
    error_code ignored;
    co_await st->inner->ShutdownWrite(ignored);
    if (st->ended) co_return;
    HalfClosed(st);
    co_return;
  }
  End(st,
      (tech_failed ? "technician connection lost: " : "target connection lost: ") + ErrorText(ec));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Expected<net::SslCtxPtr> MakeInnerClientContext(const std::string& cert_chain_pem, EVP_PKEY* key,
                                                const std::string& ca_file) {
  auto made = NewTls13(TLS_client_method(), "inner TLS client");
  if (!made) return MakeError(made.error());
  SSL_CTX* c = made->get();
  if (auto ok = UseChainAndKey(c, cert_chain_pem, key, "inner TLS client"); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = TrustCa(c, ca_file, "inner TLS client"); !ok) return MakeError(ok.error());
  if (auto ok = InnerVerify(c, SSL_VERIFY_PEER); !ok) return MakeError(ok.error());
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  ERR_clear_error();
  return std::move(*made);
}

Expected<net::SslCtxPtr> MakeInnerServerContext(const std::string& cert_chain_pem, EVP_PKEY* key,
                                                const std::string& ca_file) {
  auto made = NewTls13(TLS_server_method(), "inner TLS server");
  if (!made) return MakeError(made.error());
  SSL_CTX* c = made->get();
  if (auto ok = UseChainAndKey(c, cert_chain_pem, key, "inner TLS server"); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = TrustCa(c, ca_file, "inner TLS server"); !ok) return MakeError(ok.error());
  if (auto ok = InnerVerify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT); !ok) {
    return MakeError(ok.error());
  }
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca_file.c_str());
  if (names != nullptr) SSL_CTX_set_client_CA_list(c, names);
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_id_context(c, kInnerSessionIdContext, sizeof kInnerSessionIdContext - 1);
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  ERR_clear_error();
  return std::move(*made);
}

Expected<net::SslCtxPtr> MakeOuterClientContext(const std::string& cert_chain_pem, EVP_PKEY* key,
                                                const std::string& ca_file) {
  auto made = NewTls13(TLS_client_method(), "relay TLS client");
  if (!made) return MakeError(made.error());
  SSL_CTX* c = made->get();
  if (auto ok = UseChainAndKey(c, cert_chain_pem, key, "relay TLS client"); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = TrustCa(c, ca_file, "relay TLS client"); !ok) return MakeError(ok.error());
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  // The relay-blindness check decrypts the outer layer with these keys; the inner contexts never
  // log theirs.
  const char* keylog = std::getenv("SSLKEYLOGFILE");
  if (keylog != nullptr && *keylog != '\0') {
    {
      std::lock_guard lock(g_keylog_mu);
      g_keylog_path = keylog;
    }
    SSL_CTX_set_keylog_callback(c, AppendKeyLog);
  }
  ERR_clear_error();
  return std::move(*made);
}

Expected<std::unique_ptr<Forwarder>> Forwarder::Start(ForwarderSettings s, ForwarderHooks h) {
  auto f = std::make_unique<ForwarderImpl>(std::move(s), std::move(h));
  if (auto ok = f->Start(); !ok) return MakeError(ok.error());
  return std::unique_ptr<Forwarder>(std::move(f));
}

Expected<std::unique_ptr<GatewayStreams>> GatewayStreams::Create() {
  return std::unique_ptr<GatewayStreams>(std::make_unique<GatewayStreamsImpl>());
}

}  // namespace torwart::tunnel
