// A real server on port 0 with a throw-away PKI, driven by the Client and by raw sockets.
#include "torwart/http/server.hpp"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <future>
#include <mutex>
#include <thread>

#include "torwart/core/ids.hpp"
#include "torwart/http/client.hpp"
#include "torwart/net/testing/test_pki.hpp"
#include "torwart/net/tls.hpp"

namespace torwart::http {
namespace {

using net::testing::Issued;
using net::testing::TempDir;
using net::testing::TestCa;
using net::testing::Usage;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

int ConnectTcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};  // no test may hang on a read
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Plain TCP: sends bytes, then reads until the server closes. Returns what it read, and
// whether the close happened (as opposed to the 10 s read timeout).
std::pair<std::string, bool> SendRawAndReadToClose(uint16_t port, const std::string& bytes) {
  int fd = ConnectTcp(port);
  if (fd < 0) return {"", false};
  ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  bool closed = false;
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    closed = n == 0 || errno == ECONNRESET;
    break;
  }
  ::close(fd);
  return {got, closed};
}

// A blocking TLS connection that can send anything, including malformed HTTP.
class RawTls {
 public:
  RawTls(uint16_t port, const std::string& ca_file, int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (max_version != 0) SSL_CTX_set_max_proto_version(ctx_, max_version);
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    fd_ = ConnectTcp(port);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    ok_ = fd_ >= 0 && SSL_connect(ssl_) == 1;
  }
  ~RawTls() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
    ERR_clear_error();
  }
  bool ok() const { return ok_; }
  bool Write(const std::string& s) {
    size_t written = 0;
    return SSL_write_ex(ssl_, s.data(), s.size(), &written) == 1;
  }
  // Reads until the peer closes (or errors); `closed` tells whether it did before the timeout.
  std::string ReadToClose(bool* closed = nullptr) {
    std::string got;
    char buf[4096];
    for (;;) {
      size_t n = 0;
      if (SSL_read_ex(ssl_, buf, sizeof buf, &n) == 1) {
        got.append(buf, n);
        continue;
      }
      int err = SSL_get_error(ssl_, 0);
      if (closed) {
        *closed = err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SSL ||
                  (err == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK);
      }
      return got;
    }
  }
  // Reads until `count` complete responses with Content-Length are in.
  std::string ReadResponses(int count) {
    std::string got;
    char buf[4096];
    while (CountComplete(got) < count) {
      size_t n = 0;
      if (SSL_read_ex(ssl_, buf, sizeof buf, &n) != 1) break;
      got.append(buf, n);
    }
    return got;
  }

 private:
  static int CountComplete(const std::string& s) {
    int count = 0;
    size_t pos = 0;
    for (;;) {
      size_t end = s.find("\r\n\r\n", pos);
      if (end == std::string::npos) return count;
      size_t cl = s.find("Content-Length: ", pos);
      if (cl == std::string::npos || cl > end) return count;
      size_t len = std::stoul(s.substr(cl + 16));
      if (s.size() < end + 4 + len) return count;
      pos = end + 4 + len;
      ++count;
    }
  }

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool ok_ = false;
};

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { std::signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    net::ServerTlsSettings tls;
    tls.cert_chain_file = server_cert_.cert_file;
    tls.key_file = server_cert_.key_file;
    tls.request_client_cert = true;
    tls.client_ca_file = ca_.cert_file();
    auto ctx = net::MakeServerTlsContext(tls);
    ASSERT_TRUE(ctx) << ctx.error().String();
    tls_ = std::move(*ctx);

    router_.Add("GET", "/hello",
                [](const Request&) { return Response::Json(200, R"({"hello":"world"})"); });
    router_.Add("POST", "/echo", [](const Request& r) {
      Response resp = Response::Json(201, r.body);
      resp.headers["X-Peer"] = r.peer;
      resp.headers["X-Content-Type-Seen"] = r.Header("content-type");
      return resp;
    });
    router_.Add("GET", "/devices/{name}", [](const Request& r) {
      auto q = r.query.find("x");
      return Response::Json(200, "name=" + r.params.at("name") + ";path=" + r.path +
                                     ";x=" + (q == r.query.end() ? "-" : q->second));
    });
    router_.Add("GET", "/whoami",
                [](const Request& r) { return Response::Json(200, HexEncode(r.client_cert_der)); });
    router_.Add("GET", "/throw",
                [](const Request&) -> Response { throw std::runtime_error("boom"); });
    router_.Add("GET", "/slow", [](const Request&) {
      std::this_thread::sleep_for(500ms);
      return Response::Json(200, "{}");
    });
    // Waits until `rendezvous_size_` handlers are inside at once: succeeds only if handlers run
    // concurrently (no wall-clock threshold involved).
    router_.Add("GET", "/rendezvous", [this](const Request&) {
      std::unique_lock lock(rendezvous_mu_);
      ++rendezvous_inside_;
      rendezvous_cv_.notify_all();
      bool all = rendezvous_cv_.wait_for(lock, 20s, [this] {
        return rendezvous_inside_ >= rendezvous_size_;
      });
      return Response::Json(all ? 200 : 503, "{}");
    });
  }

  void StartServer(ServerSettings s = {}) {
    s.port = 0;
    s.tls = tls_.get();
    s.on_bad_input = [this](const std::string& peer, const std::string& what) {
      std::lock_guard lock(mu_);
      bad_input_.push_back(peer + " " + what);
      cv_.notify_all();
    };
    server_ = std::make_unique<Server>(s, router_);
    auto port = server_->Start();
    ASSERT_TRUE(port) << port.error().String();
    port_ = *port;
    ASSERT_NE(port_, 0);
  }

  ClientSettings ClientFor(const std::string& ca_file) const {
    ClientSettings s;
    s.base_url = "https://127.0.0.1:" + std::to_string(port_);
    s.ca_file = ca_file;
    s.timeout = 10s;
    return s;
  }

  Expected<ClientResponse> Get(const std::string& path) {
    return Client(ClientFor(ca_.cert_file())).Send("GET", path);
  }

  bool WaitForBadInput(const std::string& needle) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] {
      for (const auto& b : bad_input_) {
        if (b.find(needle) != std::string::npos) return true;
      }
      return false;
    });
  }

  void ExpectStillServing() {
    auto r = Get("/hello");
    ASSERT_TRUE(r) << r.error().String();
    EXPECT_EQ(r->status, 200);
  }

  TempDir dir_;
  TestCa ca_{dir_.path(), "main"};
  Issued server_cert_ = ca_.Issue("server", {"IP:127.0.0.1", "DNS:localhost"}, Usage::kServer);
  Issued client_cert_ = ca_.Issue("client", {}, Usage::kClient);
  net::SslCtxPtr tls_;
  Router router_;
  std::mutex rendezvous_mu_;
  std::condition_variable rendezvous_cv_;
  int rendezvous_inside_ = 0;
  int rendezvous_size_ = 0;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> bad_input_;
};

TEST_F(ServerTest, GetAndPostJsonRoundTrip) {
  StartServer();
  auto r = Get("/hello");
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"hello":"world"})");
  EXPECT_EQ(r->headers["content-type"], "application/json");
  EXPECT_EQ(r->headers["cache-control"], "no-store");
  EXPECT_EQ(r->headers["x-content-type-options"], "nosniff");

  Client client(ClientFor(ca_.cert_file()));
  std::string json = R"({"name":"plc-7","tags":["a","b"]})";
  auto p = client.Send("POST", "/echo", {{"Content-Type", "application/json"}}, json);
  ASSERT_TRUE(p) << p.error().String();
  EXPECT_EQ(p->status, 201);
  EXPECT_EQ(p->body, json);
  EXPECT_THAT(p->headers["x-peer"], StartsWith("127.0.0.1:"));
  EXPECT_EQ(p->headers["x-content-type-seen"], "application/json");

  // An empty POST body is sent with Content-Length: 0 and arrives empty.
  auto empty = client.Send("POST", "/echo");
  ASSERT_TRUE(empty) << empty.error().String();
  EXPECT_EQ(empty->body, "");
}

TEST_F(ServerTest, PathParamsAndQueryAreDecoded) {
  StartServer();
  auto r = Get("/devices/line%201?x=a%26b&y=2");
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "name=line 1;path=/devices/line 1;x=a&b");
  auto bad = Get("/devices/%zz");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(ServerTest, NotFoundAndMethodNotAllowed) {
  StartServer();
  auto r = Get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_THAT(r->body, HasSubstr("not_found"));
  auto m = Client(ClientFor(ca_.cert_file())).Send("DELETE", "/hello");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 405);
  EXPECT_EQ(m->headers["allow"], "GET");
}

TEST_F(ServerTest, HandlerExceptionBecomes500) {
  StartServer();
  auto r = Get("/throw");
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 500);
  EXPECT_THAT(r->body, HasSubstr("internal"));
  EXPECT_THAT(r->body, ::testing::Not(HasSubstr("boom")));
  ExpectStillServing();
}

TEST_F(ServerTest, OversizedBodyGets413ThenClose) {
  ServerSettings s;
  s.max_body_bytes = 64 << 10;
  StartServer(s);
  Client client(ClientFor(ca_.cert_file()));
  auto ok = client.Send("POST", "/echo", {}, std::string(60 << 10, 'a'));
  ASSERT_TRUE(ok) << ok.error().String();
  EXPECT_EQ(ok->status, 201);
  auto r = client.Send("POST", "/echo", {}, std::string(1 << 20, 'a'));
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 413);
  EXPECT_THAT(r->body, HasSubstr("payload_too_large"));
  EXPECT_EQ(r->headers["connection"], "close");
  EXPECT_TRUE(WaitForBadInput("request body too large"));
  ExpectStillServing();
}

TEST_F(ServerTest, PerRequestBodyLimitAllowsLargeUploadsOnlyWhereSaid) {
  ServerSettings s;
  s.max_body_bytes = 64 << 10;
  s.body_limit_for = [](const Request& head) -> size_t {
    return head.target == "/echo?big=1" && head.Header("x-upload") == "yes" ? 3 << 20 : 64 << 10;
  };
  StartServer(s);
  Client client(ClientFor(ca_.cert_file()));
  auto big = client.Send("POST", "/echo?big=1", {{"X-Upload", "yes"}}, std::string(2 << 20, 'b'));
  ASSERT_TRUE(big) << big.error().String();
  EXPECT_EQ(big->status, 201);
  EXPECT_EQ(big->body.size(), size_t{2} << 20);
  // The same size elsewhere, or without the header, is still refused by the default limit.
  auto other = client.Send("POST", "/echo", {{"X-Upload", "yes"}}, std::string(2 << 20, 'b'));
  ASSERT_TRUE(other) << other.error().String();
  EXPECT_EQ(other->status, 413);
  auto no_header = client.Send("POST", "/echo?big=1", {}, std::string(1 << 20, 'b'));
  ASSERT_TRUE(no_header) << no_header.error().String();
  EXPECT_EQ(no_header->status, 413);
  EXPECT_THAT(no_header->body, HasSubstr("65536"));
  // Above the per-request limit: 413 naming that limit.
  auto huge = client.Send("POST", "/echo?big=1", {{"X-Upload", "yes"}}, std::string(4 << 20, 'b'));
  ASSERT_TRUE(huge) << huge.error().String();
  EXPECT_EQ(huge->status, 413);
  EXPECT_THAT(huge->body, HasSubstr(std::to_string(3 << 20)));
  ExpectStillServing();
}

TEST_F(ServerTest, OversizedHeaderGets431) {
  ServerSettings s;
  s.max_header_bytes = 4 << 10;
  StartServer(s);
  auto r = Client(ClientFor(ca_.cert_file()))
               .Send("GET", "/hello", {{"X-Filler", std::string(8 << 10, 'h')}});
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(WaitForBadInput("request header too large"));
  ExpectStillServing();
}

TEST_F(ServerTest, MalformedRequestGets400AndServerKeepsServing) {
  StartServer();
  RawTls raw(port_, ca_.cert_file());
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE(raw.Write("THIS IS NOT HTTP\r\n\r\n"));
  bool closed = false;
  std::string got = raw.ReadToClose(&closed);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(got, HasSubstr("bad_request"));
  EXPECT_TRUE(closed);
  EXPECT_TRUE(WaitForBadInput("malformed HTTP"));
  ExpectStillServing();
}

TEST_F(ServerTest, GarbageAndPlainHttpOnTheTlsPortAreDroppedQuietly) {
  StartServer();
  auto [plain_reply, plain_closed] =
      SendRawAndReadToClose(port_, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(plain_closed);
  EXPECT_THAT(plain_reply, ::testing::Not(HasSubstr("HTTP/1.1")));
  EXPECT_TRUE(WaitForBadInput("TLS handshake failed"));

  std::string garbage = RandomBytes(3000);
  auto [garbage_reply, garbage_closed] = SendRawAndReadToClose(port_, garbage);
  EXPECT_TRUE(garbage_closed);
  {
    std::lock_guard lock(mu_);
    EXPECT_GE(bad_input_.size(), 2u);
    for (const auto& b : bad_input_) EXPECT_THAT(b, StartsWith("127.0.0.1:"));
  }
  ExpectStillServing();
}

TEST_F(ServerTest, OlderTlsVersionsAreRefused) {
  StartServer();
  RawTls tls12(port_, ca_.cert_file(), TLS1_2_VERSION);
  EXPECT_FALSE(tls12.ok());
  EXPECT_TRUE(WaitForBadInput("TLS handshake failed"));
  ExpectStillServing();
}

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  RawTls raw(port_, ca_.cert_file());
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE(raw.Write("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
  std::string first = raw.ReadResponses(1);
  EXPECT_THAT(first, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(first, ::testing::Not(HasSubstr("Connection: close")));
  // Two pipelined requests, the last asking to close.
  ASSERT_TRUE(
      raw.Write("GET /devices/a HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /devices/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  bool closed = false;
  std::string rest = raw.ReadToClose(&closed);
  EXPECT_THAT(rest, HasSubstr("name=a;"));
  EXPECT_THAT(rest, HasSubstr("name=b;"));
  EXPECT_LT(rest.find("name=a;"), rest.find("name=b;"));
  EXPECT_TRUE(closed);
  std::lock_guard lock(mu_);
  EXPECT_TRUE(bad_input_.empty());
}

TEST_F(ServerTest, ReadTimeoutClosesAStalledRequest) {
  ServerSettings s;
  s.read_timeout = 1s;
  StartServer(s);
  RawTls raw(port_, ca_.cert_file());
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE(raw.Write("GET /hello HTTP/1.1\r\nHost: t\r\n"));  // never finished
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  raw.ReadToClose(&closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_TRUE(WaitForBadInput("read timeout"));
  ExpectStillServing();
}

TEST_F(ServerTest, ClientCertificateIsPassedToHandlers) {
  StartServer();
  ClientSettings s = ClientFor(ca_.cert_file());
  s.client_key = client_cert_.key.get();
  s.client_cert_chain_pem = client_cert_.cert_pem;
  auto r = Client(s).Send("GET", "/whoami");
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->body, HexEncode(client_cert_.der));

  auto anonymous = Get("/whoami");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->body, "");

  // A key that does not belong to the certificate is refused before connecting.
  s.client_key = server_cert_.key.get();
  auto mismatch = Client(s).Send("GET", "/whoami");
  ASSERT_FALSE(mismatch);
  EXPECT_THAT(mismatch.error().message(), HasSubstr("does not match"));
}

TEST_F(ServerTest, ClientRefusesAServerCertificateFromAnotherCa) {
  StartServer();
  TestCa other(dir_.path(), "other");
  auto r = Client(ClientFor(other.cert_file())).Send("GET", "/hello");
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kUnavailable));
  EXPECT_THAT(r.error().message(), StartsWith("TLS: certificate verify failed: "));
  // The server saw a failed handshake, and goes on.
  EXPECT_TRUE(WaitForBadInput("TLS handshake failed"));
  ExpectStillServing();
}

TEST_F(ServerTest, ClientChecksTheServerName) {
  // A certificate from the right CA but for another name.
  Issued wrong = ca_.Issue("elsewhere", {"DNS:elsewhere.example"}, Usage::kServer);
  net::ServerTlsSettings tls;
  tls.cert_chain_file = wrong.cert_file;
  tls.key_file = wrong.key_file;
  auto ctx = net::MakeServerTlsContext(tls);
  ASSERT_TRUE(ctx);
  tls_ = std::move(*ctx);
  StartServer();
  auto r = Get("/hello");
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("certificate verify failed: IP address mismatch"));

  ClientSettings by_name = ClientFor(ca_.cert_file());
  by_name.base_url = "https://localhost:" + std::to_string(port_);
  auto n = Client(by_name).Send("GET", "/hello");
  ASSERT_FALSE(n);
  // "localhost" may resolve to ::1 first, where nobody listens; then the IPv4 attempt fails TLS.
  EXPECT_THAT(n.error().message(), HasSubstr("certificate verify failed: hostname mismatch"));
}

TEST_F(ServerTest, HandlersRunOnWorkersSoSlowOnesDoNotBlockOthers) {
  ServerSettings s;
  s.worker_threads = 4;
  StartServer(s);
  rendezvous_size_ = 4;
  std::vector<std::future<Expected<ClientResponse>>> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(std::async(std::launch::async, [this] { return Get("/rendezvous"); }));
  }
  // Each handler answers 200 only after all four were inside at the same time.
  for (auto& f : slow) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().String();
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(ServerTest, StopIsCleanWithOpenConnectionsAndIdempotent) {
  StartServer();
  RawTls idle(port_, ca_.cert_file());
  ASSERT_TRUE(idle.ok());
  RawTls half(port_, ca_.cert_file());
  ASSERT_TRUE(half.ok());
  ASSERT_TRUE(half.Write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"));
  auto in_flight = std::async(std::launch::async, [this] { return Get("/slow"); });
  std::this_thread::sleep_for(100ms);  // let the slow request reach its handler

  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  server_->Stop();

  // The request already in its handler was answered before the connection closed.
  auto r = in_flight.get();
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 200);

  bool closed = false;
  idle.ReadToClose(&closed);
  EXPECT_TRUE(closed);

  auto refused = Get("/hello");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(),
            "cannot connect to 127.0.0.1:" + std::to_string(port_) + ": connection refused");
  server_.reset();  // the destructor after Stop() is fine too
}

TEST_F(ServerTest, DestructorStopsARunningServer) {
  StartServer();
  ExpectStillServing();
  server_.reset();
  EXPECT_FALSE(Get("/hello"));
}

TEST_F(ServerTest, StartErrors) {
  ServerSettings s;
  Server no_tls(s, router_);
  auto r = no_tls.Start();
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kInvalidArgument));

  StartServer();
  ServerSettings taken;
  taken.tls = tls_.get();
  taken.port = port_;
  Server second(taken, router_);
  auto busy = second.Start();
  ASSERT_FALSE(busy);
  EXPECT_THAT(busy.error().message(), StartsWith("cannot listen on 127.0.0.1:"));

  ServerSettings bad_addr;
  bad_addr.tls = tls_.get();
  bad_addr.address = "not-an-ip";
  Server third(bad_addr, router_);
  EXPECT_FALSE(third.Start());
  EXPECT_FALSE(server_->Start()) << "starting twice is an error";
}

// A one-shot plain HTTP server answering with canned bytes, for the client's parser.
class CannedServer {
 public:
  explicit CannedServer(std::string reply) : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 1);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      request_ = req;
      ::send(c, reply_.data(), reply_.size(), MSG_NOSIGNAL);
      ::close(c);
    });
  }
  ~CannedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string request() {
    thread_.join();
    thread_ = std::thread([] {});
    return request_;
  }

 private:
  std::string reply_;
  int fd_;
  uint16_t port_;
  std::thread thread_;
  std::string request_;
};

TEST(ClientTest, ParsesChunkedResponsesOverPlainHttp) {
  CannedServer server(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-Multi: a\r\nx-multi: b\r\n\r\n"
      "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n");
  ClientSettings s;
  s.base_url = server.url() + "/prefix/";
  auto r = Client(s).Send("PUT", "/x?y=1", {{"X-Custom", "v"}}, "data");
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->body, "hello, world");
  EXPECT_EQ(r->headers["x-multi"], "a, b");
  std::string req = server.request();
  EXPECT_THAT(req, StartsWith("PUT /prefix/x?y=1 HTTP/1.1\r\n"));
  EXPECT_THAT(req, HasSubstr("\r\nHost: 127.0.0.1:"));
  EXPECT_THAT(req, HasSubstr("\r\nContent-Length: 4\r\n"));
  EXPECT_THAT(req, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(req, HasSubstr("\r\nX-Custom: v\r\n"));
}

TEST(ClientTest, LimitsResponseSizeAndRejectsGarbage) {
  {
    CannedServer server("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'x'));
    ClientSettings s;
    s.base_url = server.url();
    s.max_response_bytes = 1000;
    auto r = Client(s).Send("GET", "/");
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().Is(Errc::kResourceExhausted));
  }
  {
    CannedServer server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n");
    ClientSettings s;
    s.base_url = server.url();
    auto r = Client(s).Send("GET", "/");
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().Is(Errc::kParse));
  }
  {
    CannedServer server("SSH-2.0-OpenSSH_9.2\r\n");
    ClientSettings s;
    s.base_url = server.url();
    auto r = Client(s).Send("GET", "/");
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("malformed status line"));
  }
}

TEST(ClientTest, RejectsBadInputBeforeConnecting) {
  ClientSettings s;
  s.base_url = "ftp://example.com";
  EXPECT_FALSE(Client(s).Send("GET", "/"));
  s.base_url = "http://127.0.0.1:99999";
  EXPECT_FALSE(Client(s).Send("GET", "/"));
  s.base_url = "http://127.0.0.1:1";
  auto injected = Client(s).Send("GET", "/", {{"X-Evil", "a\r\nHost: b"}});
  ASSERT_FALSE(injected);
  EXPECT_TRUE(injected.error().Is(Errc::kInvalidArgument));
  EXPECT_FALSE(Client(s).Send("GET", "/a b"));
  EXPECT_FALSE(Client(s).Send("GE T", "/"));
}

}  // namespace
}  // namespace torwart::http
