#include "tls_io.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <boost/asio/ssl/error.hpp>
#include <cerrno>
#include <vector>

#include "torwart/tunnel/wire.hpp"

namespace torwart::tunnel::detail {

struct SockBio {
  int fd = -1;
  bool eof = false;
};

namespace {

// A socket BIO that writes with MSG_NOSIGNAL: OpenSSL's own uses write(), which raises SIGPIPE
// when the peer is gone, and a library must not kill its process for that.
int SockBioWrite(BIO* b, const char* data, int len) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  ssize_t n = ::send(st->fd, data, static_cast<size_t>(len), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(b);
  return -1;
}

int SockBioRead(BIO* b, char* data, int len) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  ssize_t n = ::recv(st->fd, data, static_cast<size_t>(len), 0);
  if (n > 0) return static_cast<int>(n);
  if (n == 0) {
    st->eof = true;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(b);
  return -1;
}

long SockBioCtrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:  // how OpenSSL tells a peer's EOF from an error
      return st != nullptr && st->eof ? 1 : 0;
    default:
      return 0;
  }
}

int SockBioCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* SockBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "torwart socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, SockBioWrite);
      BIO_meth_set_read(m, SockBioRead);
      BIO_meth_set_ctrl(m, SockBioCtrl);
      BIO_meth_set_create(m, SockBioCreate);
    }
    return m;
  }();
  return method;
}

error_code SslErrorCode(unsigned long e) {
  if (e == 0) return asio::error::connection_aborted;
  return error_code(static_cast<int>(e), asio::error::get_ssl_category());
}

}  // namespace

Expected<tcp::endpoint> ParseListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return MakeError(Errc::kInvalidArgument, "listen address '" + listen + "': need host:port");
  }
  std::string host = listen.substr(0, colon);
  std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  unsigned long port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) {
      return MakeError(Errc::kInvalidArgument, "listen address '" + listen + "': bad port");
    }
    port = port * 10 + static_cast<unsigned long>(c - '0');
  }
  if (port > 65535) {
    return MakeError(Errc::kInvalidArgument, "listen address '" + listen + "': bad port");
  }
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return MakeError(Errc::kInvalidArgument,
                     "listen address '" + listen + "': '" + host + "' is not an IP address");
  }
  return tcp::endpoint(address, static_cast<uint16_t>(port));
}

std::string PeerString(const tcp::socket& s) {
  error_code ec;
  tcp::endpoint ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

std::string PeerLeafDer(const SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return {};
  unsigned char* der = nullptr;
  int n = i2d_X509(cert, &der);
  std::string out;
  if (n > 0) out.assign(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  return out;
}

std::string CommonNameOfDer(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (cert == nullptr) return {};
  std::string out;
  X509_NAME* name = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  // Exactly one CN: a certificate with two is not one we issued.
  if (idx >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, idx) < 0) {
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n > 0) out.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
    OPENSSL_free(utf8);
    if (out.find('\0') != std::string::npos) out.clear();
  }
  X509_free(cert);
  return out;
}

std::string ErrorText(const error_code& ec) {
  if (ec == asio::error::eof) return "connection closed";
  if (ec.category() == asio::error::get_ssl_category()) {
    char buf[256];
    ERR_error_string_n(static_cast<unsigned long>(ec.value()), buf, sizeof buf);
    return std::string("TLS: ") + buf;
  }
  return ec.message();
}

bool IsEof(const error_code& ec) { return ec == asio::error::eof; }

// ---------------------------------------------------------------------------------------------
// FdTls

FdTls::FdTls(tcp::socket socket, SslPtr ssl)
    : socket_(std::move(socket)), bio_state_(std::make_unique<SockBio>()), ssl_(std::move(ssl)) {
  error_code ignored;
  socket_.non_blocking(true, ignored);
  SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                               SSL_MODE_RELEASE_BUFFERS);
  // Unexpected EOF is the peer going away; the pumps treat it as the end of that direction.
  SSL_set_options(ssl_.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  bio_state_->fd = static_cast<int>(socket_.native_handle());
  BIO* bio = SockBioMethod() != nullptr ? BIO_new(SockBioMethod()) : nullptr;
  if (bio == nullptr) {
    failed_ = true;
    return;
  }
  BIO_set_data(bio, bio_state_.get());
  SSL_set_bio(ssl_.get(), bio, bio);  // one reference, used both ways
}

FdTls::~FdTls() = default;

template <class Op>
asio::awaitable<int> FdTls::Drive(Op op, error_code& ec) {
  ec = {};
  for (;;) {
    if (!socket_.is_open()) {
      ec = asio::error::operation_aborted;
      co_return 0;
    }
    if (failed_) {
      ec = asio::error::connection_aborted;
      co_return 0;
    }
    ERR_clear_error();
    errno = 0;
    int r = op();
    if (r > 0) co_return r;
    int saved_errno = errno;
    int err = SSL_get_error(ssl_.get(), r);
    switch (err) {
      case SSL_ERROR_WANT_READ:
        co_await socket_.async_wait(tcp::socket::wait_read, Redirect(ec));
        if (ec) co_return 0;
        break;
      case SSL_ERROR_WANT_WRITE:
        co_await socket_.async_wait(tcp::socket::wait_write, Redirect(ec));
        if (ec) co_return 0;
        break;
      case SSL_ERROR_ZERO_RETURN:
        ec = asio::error::eof;
        co_return 0;
      case SSL_ERROR_SYSCALL:
        failed_ = true;
        ec = saved_errno != 0 ? error_code(saved_errno, asio::error::get_system_category())
                              : error_code(asio::error::connection_reset);
        ERR_clear_error();
        co_return 0;
      default:
        failed_ = true;
        ec = SslErrorCode(ERR_peek_last_error());
        ERR_clear_error();
        co_return 0;
    }
  }
}

asio::awaitable<void> FdTls::Handshake(error_code& ec) {
  co_await Drive([this] { return SSL_do_handshake(ssl_.get()); }, ec);
}

asio::awaitable<void> FdTls::WaitReadable(error_code& ec) {
  ec = {};
  if (SSL_has_pending(ssl_.get()) == 1) co_return;
  co_await socket_.async_wait(tcp::socket::wait_read, Redirect(ec));
}

asio::awaitable<size_t> FdTls::ReadSome(char* buf, size_t n, error_code& ec) {
  size_t got = 0;
  co_await Drive([&] { return SSL_read_ex(ssl_.get(), buf, n, &got); }, ec);
  co_return ec ? 0 : got;
}

asio::awaitable<void> FdTls::WriteAll(const char* buf, size_t n, error_code& ec) {
  ec = {};
  while (n > 0) {
    size_t wrote = 0;
    co_await Drive([&] { return SSL_write_ex(ssl_.get(), buf, n, &wrote); }, ec);
    if (ec) co_return;
    buf += wrote;
    n -= wrote;
  }
}

asio::awaitable<void> FdTls::ShutdownWrite(error_code& ec) {
  ec = {};
  if (!shut_ && !failed_ && socket_.is_open()) {
    shut_ = true;
    co_await Drive(
        [this] {
          int r = SSL_shutdown(ssl_.get());
          return r >= 0 ? 1 : r;
        },
        ec);
  }
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
}

void FdTls::Close() {
  error_code ignored;
  socket_.close(ignored);
}

// ---------------------------------------------------------------------------------------------
// LayeredTls

LayeredTls::LayeredTls(ByteStream& lower, SslPtr ssl, const asio::any_io_executor& ex,
                       std::string_view early)
    : lower_(lower), ssl_(std::move(ssl)), flushed_(ex) {
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (rbio_ == nullptr || wbio_ == nullptr) {
    BIO_free(rbio_);
    BIO_free(wbio_);
    rbio_ = wbio_ = nullptr;
    failed_ = true;
    return;
  }
  // An empty read BIO means "retry later", not end of file.
  BIO_set_mem_eof_return(rbio_, -1);
  BIO_set_mem_eof_return(wbio_, -1);
  SSL_set_bio(ssl_.get(), rbio_, wbio_);
  if (!early.empty() && BIO_write(rbio_, early.data(), static_cast<int>(early.size())) <= 0) {
    failed_ = true;
  }
}

asio::awaitable<void> LayeredTls::Flush(error_code& ec) {
  ec = {};
  while (flushing_) {
    co_await flushed_.Wait();
    if (closed_) {
      ec = asio::error::operation_aborted;
      co_return;
    }
  }
  if (BIO_ctrl_pending(wbio_) == 0) co_return;
  flushing_ = true;
  size_t pending;
  while (!ec && (pending = BIO_ctrl_pending(wbio_)) > 0) {
    if (flush_buf_.size() < 4 * kCopyBuffer) flush_buf_.resize(4 * kCopyBuffer);
    int n =
        BIO_read(wbio_, flush_buf_.data(), static_cast<int>(std::min(pending, flush_buf_.size())));
    if (n <= 0) break;
    co_await lower_.WriteAll(flush_buf_.data(), static_cast<size_t>(n), ec);
  }
  flushing_ = false;
  flushed_.Notify();
}

template <class Op>
asio::awaitable<int> LayeredTls::Drive(Op op, bool may_read, error_code& ec) {
  ec = {};
  std::vector<char> rbuf;
  for (;;) {
    if (closed_) {
      ec = asio::error::operation_aborted;
      co_return 0;
    }
    if (failed_) {
      ec = asio::error::connection_aborted;
      co_return 0;
    }
    ERR_clear_error();
    int r = op();
    int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), r);
    unsigned long ssl_err = ERR_peek_last_error();
    ERR_clear_error();
    // Whatever OpenSSL produced (records, handshake messages, alerts) goes out first.
    if (BIO_ctrl_pending(wbio_) > 0) {
      error_code flush_ec;
      co_await Flush(flush_ec);
      if (flush_ec && err == SSL_ERROR_NONE) {
        ec = flush_ec;
        co_return 0;
      }
    }
    if (err == SSL_ERROR_NONE) co_return r;
    switch (err) {
      case SSL_ERROR_WANT_READ: {
        if (!may_read) {
          // TLS 1.3 never needs to read to write once the handshake is done.
          failed_ = true;
          ec = asio::error::operation_not_supported;
          co_return 0;
        }
        if (rbuf.empty()) rbuf.resize(kCopyBuffer);
        size_t n = co_await lower_.ReadSome(rbuf.data(), rbuf.size(), ec);
        if (ec) {
          // The lower stream ended without our peer's close_notify: a truncation.
          if (IsEof(ec)) ec = asio::ssl::error::stream_truncated;
          co_return 0;
        }
        if (BIO_write(rbio_, rbuf.data(), static_cast<int>(n)) != static_cast<int>(n)) {
          failed_ = true;
          ec = asio::error::no_memory;
          co_return 0;
        }
        break;
      }
      case SSL_ERROR_ZERO_RETURN:
        ec = asio::error::eof;
        co_return 0;
      default:
        failed_ = true;
        ec = SslErrorCode(ssl_err);
        co_return 0;
    }
  }
}

asio::awaitable<void> LayeredTls::Handshake(error_code& ec) {
  co_await Drive([this] { return SSL_do_handshake(ssl_.get()); }, true, ec);
}

asio::awaitable<size_t> LayeredTls::ReadSome(char* buf, size_t n, error_code& ec) {
  size_t got = 0;
  co_await Drive([&] { return SSL_read_ex(ssl_.get(), buf, n, &got); }, true, ec);
  co_return ec ? 0 : got;
}

asio::awaitable<void> LayeredTls::WriteAll(const char* buf, size_t n, error_code& ec) {
  ec = {};
  while (n > 0) {
    size_t wrote = 0;
    co_await Drive([&] { return SSL_write_ex(ssl_.get(), buf, n, &wrote); }, false, ec);
    if (ec) co_return;
    buf += wrote;
    n -= wrote;
  }
}

asio::awaitable<void> LayeredTls::ShutdownWrite(error_code& ec) {
  ec = {};
  if (shut_ || failed_ || closed_) co_return;
  shut_ = true;
  co_await Drive(
      [this] {
        int r = SSL_shutdown(ssl_.get());
        return r >= 0 ? 1 : r;
      },
      false, ec);
}

void LayeredTls::Close() {
  closed_ = true;
  lower_.Close();
  flushed_.Notify();
}

// ---------------------------------------------------------------------------------------------

asio::awaitable<std::string> ReadLine(ByteStream& s, std::string& rest, bool& too_long,
                                      error_code& ec) {
  too_long = false;
  rest.clear();
  std::string buf(kMaxLine, '\0');
  size_t have = 0;
  for (;;) {
    size_t n = co_await s.ReadSome(buf.data() + have, kMaxLine - have, ec);
    if (ec) co_return std::string();
    size_t scan_from = have;
    have += n;
    size_t pos = std::string_view(buf.data(), have).find('\n', scan_from);
    if (pos != std::string_view::npos) {
      rest.assign(buf.data() + pos + 1, have - pos - 1);
      buf.resize(pos);
      co_return buf;
    }
    if (have >= kMaxLine) {
      too_long = true;
      co_return std::string();
    }
  }
}

}  // namespace torwart::tunnel::detail
