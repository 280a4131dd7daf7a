#include "audit_forwarder.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "torwart/audit/syslog.hpp"
#include "torwart/core/log.hpp"
#include "torwart/net/tls.hpp"

namespace torwart::server {
namespace {

constexpr const char* kCursorKey = "audit.syslog.cursor";
constexpr int kPage = 500;

struct Connection {
  int fd = -1;
  SSL* ssl = nullptr;
  ~Connection() { Close(); }
  void Close() {
    if (ssl) {
      SSL_free(ssl);
      ssl = nullptr;
    }
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  }
  bool open() const { return ssl != nullptr; }

  // True if the collector closed the connection (or sent anything we cannot make sense of):
  // drain pending TLS records without blocking. A closed connection must not be written to,
  // or the kernel would accept bytes that no one will ever read.
  bool PeerClosed() {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
    int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    bool closed = false;
    char buf[512];
    while (true) {
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n > 0) continue;  // a collector does not talk back; ignore
      int err = SSL_get_error(ssl, n);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) closed = true;
      break;
    }
    ERR_clear_error();
    ::fcntl(fd, F_SETFL, flags);
    return closed;
  }

  bool WriteAll(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      size_t written = 0;
      if (SSL_write_ex(ssl, data.data() + off, data.size() - off, &written) != 1) {
        ERR_clear_error();
        return false;
      }
      off += written;
    }
    return true;
  }
};

Expected<void> Connect(Connection& c, SSL_CTX* ctx, const AuditSyslogConfig& cfg) {
  std::string host;
  uint16_t port = 0;
  if (auto ok = ParseListen(cfg.address, host, port); !ok) return ok;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return MakeError(Errc::kUnavailable, "resolving " + host + ": " + gai_strerror(rc));
  }
  std::string last = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      c.fd = fd;
      break;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (c.fd < 0) return MakeError(Errc::kUnavailable, "connecting to " + cfg.address + ": " + last);

  c.ssl = SSL_new(ctx);
  SSL_set_fd(c.ssl, c.fd);
  const std::string name = cfg.server_name.empty() ? host : cfg.server_name;
  X509_VERIFY_PARAM* param = SSL_get0_param(c.ssl);
  if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) {
    ERR_clear_error();
    SSL_set_tlsext_host_name(c.ssl, name.c_str());
    X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
  }
  if (SSL_connect(c.ssl) != 1) {
    std::string why = net::OpenSslErrors();
    long v = SSL_get_verify_result(c.ssl);
    if (v != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(v) + ")";
    c.Close();
    return MakeError(Errc::kUnavailable, "TLS handshake with " + cfg.address + ": " + why);
  }
  return {};
}

}  // namespace

AuditForwarder::AuditForwarder(storage::AuditStore& store, storage::KeyValueRepo& kv,
                               AuditSyslogConfig cfg)
    : store_(store), kv_(kv), cfg_(std::move(cfg)) {}

AuditForwarder::~AuditForwarder() { Stop(); }

void AuditForwarder::Start() { thread_ = std::thread([this] { Run(); }); }

void AuditForwarder::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AuditForwarder::Wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

AuditForwarder::Status AuditForwarder::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void AuditForwarder::Run() {
  auto set_status = [this](bool connected, int64_t cursor, std::string error) {
    std::lock_guard lock(mu_);
    status_.connected = connected;
    status_.cursor = cursor;
    if (!error.empty() || connected) status_.error = std::move(error);
  };

  auto ctx = net::MakeClientTlsContext({.ca_file = cfg_.ca_file});
  if (ctx && !cfg_.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx->get(), cfg_.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx->get(), cfg_.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      ctx = MakeError(Errc::kInvalidArgument,
                      "loading the syslog client certificate: " + net::OpenSslErrors());
    }
  }
  if (!ctx) {
    log::error("audit forwarding disabled: {}", ctx.error().message());
    set_status(false, 0, ctx.error().message());
    return;
  }

  audit::SyslogOptions opts;
  opts.hostname = cfg_.hostname;
  if (opts.hostname.empty()) {
    char h[256] = {};
    ::gethostname(h, sizeof(h) - 1);
    opts.hostname = h;
  }

  // The persistent cursor: the last seq written to a collector connection.
  int64_t cursor = -1;
  Connection conn;
  std::chrono::milliseconds backoff(250);
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_ || woken_; });
    woken_ = false;
    if (stopping_) break;
    lock.unlock();

    if (cursor < 0) {
      auto stored = kv_.Get(kCursorKey);
      if (stored) {
        int64_t v = 0;
        if (*stored) std::from_chars((*stored)->data(), (*stored)->data() + (*stored)->size(), v);
        cursor = v;
        set_status(false, cursor, "");
      }
    }
    bool more = cursor >= 0;
    while (more && !stopping_) {
      auto page = store_.ReadRecords(cursor, kPage);
      if (!page || page->empty()) break;
      if (conn.open() && conn.PeerClosed()) {
        log::warn("audit forwarding: collector {} closed the connection", cfg_.address);
        conn.Close();
      }
      if (!conn.open()) {
        if (auto ok = Connect(conn, ctx->get(), cfg_); !ok) {
          set_status(false, cursor, ok.error().message());
          log::warn("audit forwarding: {} (retrying)", ok.error().message());
          std::this_thread::sleep_for(backoff);
          backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
          break;
        }
        backoff = std::chrono::milliseconds(250);
        log::info("audit forwarding: connected to {}, resuming after seq {}", cfg_.address, cursor);
      }
      int64_t written = cursor;
      for (const audit::Record& r : *page) {
        if (!r.purged &&
            !conn.WriteAll(audit::FrameOctetCounted(audit::FormatRfc5424(r.event, opts)))) {
          conn.Close();
          set_status(false, written, "write to the collector failed");
          break;
        }
        written = r.event.seq;
      }
      if (written != cursor) {
        cursor = written;
        // Best effort: if the database cannot be written now, the in-memory cursor still
        // prevents duplicates while we run; a restart would resend from the stored one.
        if (auto ok = kv_.Put(kCursorKey, std::to_string(cursor)); !ok) {
          log::warn("audit forwarding: cannot store the cursor: {}", ok.error().message());
        }
      }
      set_status(conn.open(), cursor, "");
      more = conn.open() && static_cast<int>(page->size()) == kPage;
    }
    lock.lock();
  }
}

}  // namespace torwart::server
