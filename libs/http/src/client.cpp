#include "torwart/http/client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "torwart/net/tls.hpp"

namespace torwart::http {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr size_t kMaxHeaderBytes = 64 << 10;

struct Url {
  bool tls = true;
  std::string host;  // without brackets
  std::string port;
  std::string prefix;  // path prefix without trailing '/'
  std::string HostPort() const {
    bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + port;
  }
};

Expected<Url> ParseUrl(const std::string& url) {
  Url out;
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    out.tls = false;
    rest.remove_prefix(7);
  } else {
    return MakeError(Errc::kInvalidArgument, "URL '" + url + "': expected https:// or http://");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) out.prefix = std::string(rest.substr(slash));
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  if (authority.find('@') != std::string_view::npos) {
    return MakeError(Errc::kInvalidArgument, "URL '" + url + "': user info is not supported");
  }
  std::string_view port;
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return MakeError(Errc::kInvalidArgument, "URL '" + url + "': unterminated IPv6 address");
    }
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return MakeError(Errc::kInvalidArgument, "URL '" + url + "': bad port");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return MakeError(Errc::kInvalidArgument, "URL '" + url + "': no host");
  if (port.empty()) {
    out.port = out.tls ? "443" : "80";
  } else {
    unsigned value = 0;
    auto [p, err] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (err != std::errc() || p != port.data() + port.size() || value == 0 || value > 65535) {
      return MakeError(Errc::kInvalidArgument, "URL '" + url + "': bad port");
    }
    out.port = std::string(port);
  }
  return out;
}

std::string LowerFirst(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One connection: a non-blocking socket, optionally with TLS through memory BIOs so that every
// socket operation has a deadline and writes never raise SIGPIPE (send with MSG_NOSIGNAL).
class Connection {
 public:
  Connection(Fd fd, SteadyClock::time_point deadline, std::string where)
      : fd_(std::move(fd)), deadline_(deadline), where_(std::move(where)) {}

  Expected<void> StartTls(SSL_CTX* ctx, const std::string& host) {
    ssl_.reset(SSL_new(ctx));
    if (!ssl_) return MakeError(Errc::kInternal, "TLS: " + net::OpenSslErrors());
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    if (rbio == nullptr || wbio == nullptr) {
      BIO_free(rbio);
      BIO_free(wbio);
      return MakeError(Errc::kInternal, "TLS: cannot create buffers");
    }
    BIO_set_mem_eof_return(rbio, -1);  // "no data yet" until the socket says EOF
    SSL_set_bio(ssl_.get(), rbio, wbio);
    rbio_ = rbio;
    wbio_ = wbio;
    if (IsIpLiteral(host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_.get(), host.c_str());
      SSL_set1_host(ssl_.get(), host.c_str());
    }
    SSL_set_connect_state(ssl_.get());
    for (;;) {
      ERR_clear_error();
      int rc = SSL_do_handshake(ssl_.get());
      auto flushed = Flush();
      if (rc == 1) {
        if (!flushed) return flushed;
        return {};
      }
      int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_WANT_READ) {
        if (!flushed) return flushed;
        auto filled = Fill();
        if (!filled) return MakeError(filled.error());
        if (*filled == 0) {
          return MakeError(Errc::kUnavailable,
                           "TLS: " + where_ + " closed the connection during the handshake");
        }
        continue;
      }
      long verify = SSL_get_verify_result(ssl_.get());
      if (verify != X509_V_OK) {
        net::OpenSslErrors();
        return MakeError(Errc::kUnavailable, std::string("TLS: certificate verify failed: ") +
                                                 X509_verify_cert_error_string(verify) + " (" +
                                                 where_ + ")");
      }
      std::string details = net::OpenSslErrors();
      return MakeError(Errc::kUnavailable, "TLS: handshake with " + where_ + " failed" +
                                               (details.empty() ? "" : ": " + details));
    }
  }

  Expected<void> WriteAll(std::string_view data) {
    if (!ssl_) return SendAll(data);
    while (!data.empty()) {
      size_t written = 0;
      ERR_clear_error();
      if (SSL_write_ex(ssl_.get(), data.data(), data.size(), &written) != 1) {
        return MakeError(Errc::kUnavailable, "TLS: write failed: " + net::OpenSslErrors());
      }
      data.remove_prefix(written);
      if (auto f = Flush(); !f) return f;
    }
    return {};
  }

  // Reads some bytes into `out`; 0 means EOF. `clean_eof` tells whether TLS closed properly.
  Expected<size_t> Read(char* out, size_t n, bool& clean_eof) {
    clean_eof = true;
    if (!ssl_) return RecvSome(out, n);
    for (;;) {
      size_t got = 0;
      ERR_clear_error();
      if (SSL_read_ex(ssl_.get(), out, n, &got) == 1) return got;
      int err = SSL_get_error(ssl_.get(), 0);
      if (err == SSL_ERROR_ZERO_RETURN) return size_t{0};
      if (err == SSL_ERROR_WANT_READ) {
        // TLS 1.3 may want to answer (key update) before reading on.
        if (auto f = Flush(); !f) return MakeError(f.error());
        auto filled = Fill();
        if (!filled) return MakeError(filled.error());
        if (*filled == 0) {
          clean_eof = false;
          return size_t{0};
        }
        continue;
      }
      return MakeError(Errc::kUnavailable, "TLS: read failed: " + net::OpenSslErrors());
    }
  }

  void Close() {
    if (ssl_) {
      // Best effort close_notify; no waiting for the peer's.
      ERR_clear_error();
      SSL_shutdown(ssl_.get());
      (void)Flush();
    }
    fd_.Reset();
  }

 private:
  int RemainingMs() const {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - SteadyClock::now());
    return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX));
  }

  Expected<void> Wait(short events) {
    for (;;) {
      int ms = RemainingMs();
      if (ms == 0) return MakeError(Errc::kTimeout, "timeout talking to " + where_);
      pollfd p{fd_.get(), events, 0};
      int rc = ::poll(&p, 1, ms);
      if (rc > 0) return {};
      if (rc == 0) return MakeError(Errc::kTimeout, "timeout talking to " + where_);
      if (errno != EINTR) {
        return MakeError(Errc::kUnavailable, "poll: " + LowerFirst(std::strerror(errno)));
      }
    }
  }

  Expected<void> SendAll(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (auto w = Wait(POLLOUT); !w) return w;
        continue;
      }
      return MakeError(Errc::kUnavailable,
                       "cannot send to " + where_ + ": " + LowerFirst(std::strerror(errno)));
    }
    return {};
  }

  Expected<size_t> RecvSome(char* out, size_t n) {
    for (;;) {
      ssize_t got = ::recv(fd_.get(), out, n, 0);
      if (got >= 0) return static_cast<size_t>(got);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (auto w = Wait(POLLIN); !w) return MakeError(w.error());
        continue;
      }
      return MakeError(Errc::kUnavailable,
                       "cannot read from " + where_ + ": " + LowerFirst(std::strerror(errno)));
    }
  }

  // Moves TLS output from the memory BIO to the socket.
  Expected<void> Flush() {
    std::array<char, 16384> buf;
    while (BIO_ctrl_pending(wbio_) > 0) {
      int n = BIO_read(wbio_, buf.data(), static_cast<int>(buf.size()));
      if (n <= 0) break;
      if (auto s = SendAll(std::string_view(buf.data(), static_cast<size_t>(n))); !s) return s;
    }
    return {};
  }

  // Moves socket input to the TLS memory BIO; returns the byte count (0 = EOF).
  Expected<size_t> Fill() {
    std::array<char, 16384> buf;
    auto got = RecvSome(buf.data(), buf.size());
    if (!got) return got;
    if (*got == 0) {
      BIO_set_mem_eof_return(rbio_, 0);
      return size_t{0};
    }
    BIO_write(rbio_, buf.data(), static_cast<int>(*got));
    return got;
  }

  Fd fd_;
  SteadyClock::time_point deadline_;
  std::string where_;
  std::unique_ptr<SSL, SslDeleter> ssl_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
};

Expected<Connection> Connect(const Url& url, SteadyClock::time_point deadline) {
  const std::string where = url.HostPort();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &res);
  if (gai != 0) {
    return MakeError(Errc::kUnavailable,
                     "cannot resolve " + url.host + ": " + LowerFirst(gai_strerror(gai)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(res, &::freeaddrinfo);
  Error last(Errc::kUnavailable, "cannot connect to " + where + ": no addresses");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      last = Error(Errc::kUnavailable,
                   "cannot connect to " + where + ": " + LowerFirst(std::strerror(errno)));
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && err == EINPROGRESS) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      pollfd p{fd.get(), POLLOUT, 0};
      int prc;
      do {
        prc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      } while (prc < 0 && errno == EINTR);
      if (prc == 0) {
        return MakeError(Errc::kTimeout, "cannot connect to " + where + ": timed out");
      }
      socklen_t len = sizeof err;
      if (prc < 0) {
        err = errno;
      } else if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
    }
    if (err == 0) return Connection(std::move(fd), deadline, where);
    last = Error(Errc::kUnavailable,
                 "cannot connect to " + where + ": " + LowerFirst(std::strerror(err)));
  }
  return MakeError(last);
}

// Buffered reading of an HTTP/1.1 response.
class ResponseReader {
 public:
  ResponseReader(Connection& conn, size_t max_body) : conn_(conn), max_body_(max_body) {}

  Expected<ClientResponse> Read(bool head_request) {
    ClientResponse resp;
    // Skip interim 1xx responses (100 Continue).
    do {
      resp = ClientResponse();
      auto head = ReadHead(resp);
      if (!head) return MakeError(head.error());
    } while (resp.status >= 100 && resp.status < 200 && resp.status != 101);

    if (head_request || resp.status == 204 || resp.status == 304) return resp;
    auto te = resp.headers.find("transfer-encoding");
    if (te != resp.headers.end() && ToLower(te->second).find("chunked") != std::string::npos) {
      if (auto r = ReadChunked(resp.body); !r) return MakeError(r.error());
      return resp;
    }
    auto cl = resp.headers.find("content-length");
    if (cl != resp.headers.end()) {
      size_t len = 0;
      const std::string& v = cl->second;
      auto [p, err] = std::from_chars(v.data(), v.data() + v.size(), len);
      if (err != std::errc() || p != v.data() + v.size()) {
        return MakeError(Errc::kParse, "HTTP: bad Content-Length '" + v + "'");
      }
      if (len > max_body_) return TooLarge();
      if (auto r = ReadExactly(len, resp.body); !r) return MakeError(r.error());
      return resp;
    }
    // Delimited by the end of the connection: only trust a clean TLS close.
    for (;;) {
      bool clean = true;
      auto more = FillSome(clean);
      if (!more) return MakeError(more.error());
      if (*more == 0) {
        if (!clean) return MakeError(Errc::kParse, "HTTP: response truncated (no TLS close)");
        break;
      }
      if (buf_.size() - pos_ > max_body_) return TooLarge();
    }
    resp.body = buf_.substr(pos_);
    return resp;
  }

 private:
  Unexpected TooLarge() const {
    return MakeError(Errc::kResourceExhausted,
                     "HTTP: response body exceeds " + std::to_string(max_body_) + " bytes");
  }

  Expected<size_t> FillSome(bool& clean) {
    std::array<char, 16384> tmp;
    auto got = conn_.Read(tmp.data(), tmp.size(), clean);
    if (!got) return got;
    buf_.append(tmp.data(), *got);
    return got;
  }

  // A line without its CRLF (a bare LF is tolerated).
  Expected<std::string> ReadLine(size_t limit) {
    for (;;) {
      size_t nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        std::string line = buf_.substr(pos_, nl - pos_);
        pos_ = nl + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      if (buf_.size() - pos_ > limit) return MakeError(Errc::kParse, "HTTP: line too long");
      bool clean = true;
      auto got = FillSome(clean);
      if (!got) return MakeError(got.error());
      if (*got == 0) {
        return MakeError(Errc::kUnavailable, "HTTP: connection closed before the response ended");
      }
    }
  }

  Expected<void> ReadHead(ClientResponse& resp) {
    size_t start = pos_;
    auto status_line = ReadLine(kMaxHeaderBytes);
    if (!status_line) return MakeError(status_line.error());
    // "HTTP/1.1 200 OK"
    const std::string& s = *status_line;
    if (s.size() < 12 || !s.starts_with("HTTP/1.") || s[8] != ' ' || !std::isdigit(s[9]) ||
        !std::isdigit(s[10]) || !std::isdigit(s[11]) || (s.size() > 12 && s[12] != ' ')) {
      return MakeError(Errc::kParse, "HTTP: malformed status line");
    }
    resp.status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    for (;;) {
      auto line = ReadLine(kMaxHeaderBytes);
      if (!line) return MakeError(line.error());
      if (pos_ - start > kMaxHeaderBytes) return MakeError(Errc::kParse, "HTTP: header too large");
      if (line->empty()) return {};
      if (line->front() == ' ' || line->front() == '\t') {
        return MakeError(Errc::kParse, "HTTP: folded header lines are not supported");
      }
      size_t colon = line->find(':');
      if (colon == std::string::npos || colon == 0) {
        return MakeError(Errc::kParse, "HTTP: malformed header line");
      }
      std::string name = ToLower(std::string_view(*line).substr(0, colon));
      std::string_view value = std::string_view(*line).substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
      auto [it, inserted] = resp.headers.emplace(name, std::string(value));
      if (!inserted) {
        it->second += ", ";
        it->second += value;
      }
    }
  }

  Expected<void> ReadExactly(size_t n, std::string& out) {
    while (buf_.size() - pos_ < n) {
      bool clean = true;
      auto got = FillSome(clean);
      if (!got) return MakeError(got.error());
      if (*got == 0) {
        return MakeError(Errc::kUnavailable, "HTTP: connection closed before the body ended");
      }
    }
    out.append(buf_, pos_, n);
    pos_ += n;
    return {};
  }

  Expected<void> ReadChunked(std::string& body) {
    for (;;) {
      auto line = ReadLine(1024);
      if (!line) return MakeError(line.error());
      std::string_view size_text = *line;
      if (auto semi = size_text.find(';'); semi != std::string_view::npos) {
        size_text = size_text.substr(0, semi);  // chunk extensions are ignored
      }
      while (!size_text.empty() && (size_text.back() == ' ' || size_text.back() == '\t')) {
        size_text.remove_suffix(1);
      }
      size_t size = 0;
      auto [p, err] =
          std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
      if (size_text.empty() || err != std::errc() || p != size_text.data() + size_text.size()) {
        return MakeError(Errc::kParse, "HTTP: malformed chunk size");
      }
      if (size == 0) break;
      if (size > max_body_ || body.size() + size > max_body_) return TooLarge();
      if (auto r = ReadExactly(size, body); !r) return r;
      auto crlf = ReadLine(2);
      if (!crlf) return MakeError(crlf.error());
      if (!crlf->empty()) return MakeError(Errc::kParse, "HTTP: malformed chunk end");
    }
    // Trailers, ignored.
    for (size_t trailer_bytes = 0;;) {
      auto line = ReadLine(kMaxHeaderBytes);
      if (!line) return MakeError(line.error());
      if (line->empty()) return {};
      trailer_bytes += line->size();
      if (trailer_bytes > kMaxHeaderBytes)
        return MakeError(Errc::kParse, "HTTP: trailers too large");
    }
  }

  Connection& conn_;
  size_t max_body_;
  std::string buf_;
  size_t pos_ = 0;
};

bool ValidToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= ' ' || c >= 127 || std::strchr("()<>@,;:\\\"/[]?={}", c) != nullptr) return false;
  }
  return true;
}

bool ValidHeaderValue(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

Expected<net::SslCtxPtr> MakeContext(const ClientSettings& s) {
  auto ctx = net::MakeClientTlsContext({.ca_file = s.ca_file, .verify_peer = true});
  if (!ctx) return MakeError(ctx.error());
  if (s.client_key == nullptr) return ctx;
  SSL_CTX* c = ctx->get();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(s.client_cert_chain_pem.data(),
                      static_cast<int>(s.client_cert_chain_pem.size())),
      &BIO_free);
  bool leaf = true;
  for (;;) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    int ok = leaf ? SSL_CTX_use_certificate(c, cert) : SSL_CTX_add1_chain_cert(c, cert);
    X509_free(cert);
    if (ok != 1) {
      return MakeError(Errc::kInvalidArgument,
                       "TLS client certificate chain: " + net::OpenSslErrors());
    }
    leaf = false;
  }
  ERR_clear_error();  // the loop ends with "no start line"
  if (leaf) {
    return MakeError(Errc::kInvalidArgument,
                     "TLS client certificate chain: no PEM certificate found");
  }
  if (SSL_CTX_use_PrivateKey(c, s.client_key) != 1 || SSL_CTX_check_private_key(c) != 1) {
    return MakeError(
        Errc::kInvalidArgument,
        "TLS client key does not match the client certificate: " + net::OpenSslErrors());
  }
  return ctx;
}

}  // namespace

Client::Client(ClientSettings settings) : settings_(std::move(settings)) {}

Expected<ClientResponse> Client::Send(const std::string& method, const std::string& path,
                                      const std::map<std::string, std::string>& headers,
                                      const std::string& body) {
  auto url = ParseUrl(settings_.base_url);
  if (!url) return MakeError(url.error());
  if (!ValidToken(method)) return MakeError(Errc::kInvalidArgument, "HTTP: invalid method");
  if (path.empty() || path.front() != '/' ||
      path.find_first_of(std::string_view(" \r\n\t\0", 5)) != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "HTTP: invalid path '" + path + "'");
  }

  bool default_port = url->port == (url->tls ? "443" : "80");
  std::string host_header =
      url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host;
  if (!default_port) host_header += ":" + url->port;
  std::string request = method + " " + url->prefix + path + " HTTP/1.1\r\n";
  request += "Host: " + host_header + "\r\n";
  bool has_user_agent = false;
  for (const auto& [name, value] : headers) {
    if (!ValidToken(name) || !ValidHeaderValue(value)) {
      return MakeError(Errc::kInvalidArgument, "HTTP: invalid header '" + name + "'");
    }
    std::string lower = ToLower(name);
    if (lower == "host" || lower == "content-length" || lower == "connection" ||
        lower == "transfer-encoding") {
      continue;  // ours
    }
    if (lower == "user-agent") has_user_agent = true;
    request += name + ": " + value + "\r\n";
  }
  if (!has_user_agent) request += "User-Agent: torwart\r\n";
  if (!body.empty() || (method != "GET" && method != "HEAD" && method != "DELETE")) {
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "Connection: close\r\n\r\n";

  net::SslCtxPtr ctx;
  if (url->tls) {
    auto made = MakeContext(settings_);
    if (!made) return MakeError(made.error());
    ctx = std::move(*made);
  }

  auto deadline = SteadyClock::now() + settings_.timeout;
  auto conn = Connect(*url, deadline);
  if (!conn) return MakeError(conn.error());
  if (ctx) {
    if (auto tls = conn->StartTls(ctx.get(), url->host); !tls) return MakeError(tls.error());
  }
  auto written = conn->WriteAll(request);
  if (written) written = conn->WriteAll(body);
  // A server that refuses a request (413) may answer and close before reading it all: try to
  // read its answer before reporting the failed write.
  ResponseReader reader(*conn, settings_.max_response_bytes);
  auto resp = reader.Read(method == "HEAD");
  conn->Close();
  if (!resp && !written) return MakeError(written.error());
  return resp;
}

}  // namespace torwart::http
