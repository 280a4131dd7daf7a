// The byte path in one process: a Relay, a Forwarder (CLI end), GatewayStreams (agent end) and
// a TCP echo target, with a throw-away PKI: grant certificate (technician), device certificates,
// relay server certificate. Ports are 0; timing bounds are generous (correctness, not speed).
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "torwart/net/testing/test_pki.hpp"
#include "torwart/tunnel/endpoint.hpp"
#include "torwart/tunnel/hooks.hpp"
#include "torwart/tunnel/relay.hpp"
#include "torwart/tunnel/wire.hpp"

namespace torwart::tunnel {
namespace {

using net::testing::Issued;
using net::testing::TempDir;
using net::testing::TestCa;
using net::testing::Usage;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr char kDevice[] = "0b7c7a52-2c1e-4a83-9b5e-6f3f0e7f1d20";
constexpr char kOtherDevice[] = "9d2f3c41-8a7b-4c6d-8e5f-0a1b2c3d4e5f";
constexpr char kGrant[] = "ar-00000000000a";

// ---------------------------------------------------------------------------------------------
// Blocking socket helpers (every read has a timeout: no test may hang).

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
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads exactly n bytes (or fewer on EOF/timeout).
std::string RecvN(int fd, size_t n) {
  std::string out;
  char buf[16384];
  while (out.size() < n) {
    ssize_t got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

// True if the peer closed (EOF or reset) within `timeout`; data before the close is skipped.
bool WaitClosed(int fd, std::chrono::milliseconds timeout) {
  auto until = SteadyClock::now() + timeout;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return true;
  }
}

// OpenSSL's socket BIO in this test's own raw TLS client writes with write(): keep a closed
// relay connection from killing the test process, only in this thread and only meanwhile (the
// library's threads must survive SIGPIPE situations on their own; they are not covered here).
class NoSigpipeHere {
 public:
  NoSigpipeHere() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~NoSigpipeHere() {
    timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t set_, old_;
};

void AbortiveClose(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// ---------------------------------------------------------------------------------------------
// A TCP echo target (thread per connection). Remembers everything it received.

class EchoServer {
 public:
  EchoServer() {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(lfd_, 64), 0);
    socklen_t len = sizeof addr;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~EchoServer() {
    stop_ = true;
    ::shutdown(lfd_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : workers_) t.join();
    ::close(lfd_);
  }
  uint16_t port() const { return port_; }
  std::string received() {
    std::lock_guard lock(mu_);
    return received_;
  }
  int connections() {
    std::lock_guard lock(mu_);
    return connections_;
  }

 private:
  void AcceptLoop() {
    for (;;) {
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stop_) return;
        continue;
      }
      std::lock_guard lock(mu_);
      ++connections_;
      fds_.push_back(fd);
      workers_.emplace_back([this, fd] { Echo(fd); });
    }
  }
  void Echo(int fd) {
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      {
        std::lock_guard lock(mu_);
        received_.append(buf, static_cast<size_t>(n));
      }
      if (!SendAll(fd, std::string_view(buf, static_cast<size_t>(n)))) break;
    }
    ::shutdown(fd, SHUT_WR);
  }
  int lfd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
  std::vector<int> fds_;
  std::string received_;
  int connections_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Collected hook calls.

template <class T>
class Events {
 public:
  void Add(T t) {
    std::lock_guard lock(mu_);
    items_.push_back(std::move(t));
    cv_.notify_all();
  }
  // Waits until `n` items are there; returns a copy of all.
  std::vector<T> WaitFor(size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return items_.size() >= n; });
    return items_;
  }
  std::vector<T> Now() {
    std::lock_guard lock(mu_);
    return items_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> items_;
};

struct FwdEnd {
  std::string stream_id, reason;
  bool error = false;
};
struct GwEnd {
  std::string stream_id;
  StreamSummary summary;
};

net::SslCtxPtr Ref(const net::SslCtxPtr& ctx) {
  SSL_CTX_up_ref(ctx.get());
  return net::SslCtxPtr(ctx.get());
}

// A filter for tests: "W..." requests are refused with a reply, "X" closes, the rest forwards.
class TestFilter : public StreamFilter {
 public:
  Result OnClientData(std::string_view data) override {
    Result r;
    if (!data.empty() && data[0] == 'W') {
      r.reply = "refused\n";
      Refusal ref;
      ref.transaction = 7;
      ref.unit = 1;
      ref.function = 6;
      ref.reason = "writes need a write scope";
      r.refused.push_back(ref);
    } else if (!data.empty() && data[0] == 'X') {
      r.close = true;
      r.close_reason = "bad frame";
    } else {
      r.forward = std::string(data);
    }
    return r;
  }
};

struct RecorderLog {
  std::mutex mu;
  std::string to_target, from_target;
  std::vector<std::string> events;
  std::vector<std::string> finished;
};

class TestRecorder : public StreamRecorder {
 public:
  explicit TestRecorder(std::shared_ptr<RecorderLog> log) : log_(std::move(log)) {}
  void OnData(Direction d, std::string_view data) override {
    std::lock_guard lock(log_->mu);
    (d == Direction::kToTarget ? log_->to_target : log_->from_target).append(data);
  }
  void OnEvent(std::string_view type, std::string_view detail) override {
    std::lock_guard lock(log_->mu);
    log_->events.push_back(std::string(type) + " " + std::string(detail));
  }
  void Finish(std::string_view reason) override {
    std::lock_guard lock(log_->mu);
    log_->finished.emplace_back(reason);
  }

 private:
  std::shared_ptr<RecorderLog> log_;
};

// ---------------------------------------------------------------------------------------------

class TunnelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto relay_ctx =
        MakeRelayServerContext(relay_cert_.cert_file, relay_cert_.key_file, ca_.cert_file());
    ASSERT_TRUE(relay_ctx) << relay_ctx.error().message();
    relay_ctx_ = std::move(*relay_ctx);
    auto outer_tech = MakeOuterClientContext(grant_.cert_pem, grant_.key.get(), ca_.cert_file());
    ASSERT_TRUE(outer_tech) << outer_tech.error().message();
    outer_tech_ = std::move(*outer_tech);
    auto inner_tech = MakeInnerClientContext(grant_.cert_pem, grant_.key.get(), ca_.cert_file());
    ASSERT_TRUE(inner_tech) << inner_tech.error().message();
    inner_tech_ = std::move(*inner_tech);
    auto outer_gw = MakeOuterClientContext(device_.cert_pem, device_.key.get(), ca_.cert_file());
    ASSERT_TRUE(outer_gw) << outer_gw.error().message();
    outer_gw_ = std::move(*outer_gw);
    auto inner_gw = MakeInnerServerContext(device_.cert_pem, device_.key.get(), ca_.cert_file());
    ASSERT_TRUE(inner_gw) << inner_gw.error().message();
    inner_gw_ = std::move(*inner_gw);
    auto gws = GatewayStreams::Create();
    ASSERT_TRUE(gws);
    gws_ = std::move(*gws);
  }

  void TearDown() override {
    if (fwd_) fwd_->Stop();
    if (gws_) gws_->Stop();
    if (relay_) relay_->Stop();
  }

  StreamPlan DefaultPlan() {
    StreamPlan p;
    p.stream_id = NewStreamId();
    p.device_id = kDevice;
    p.grant_id = kGrant;
    p.user = "alice";
    p.target = "plc1";
    p.deadline = std::chrono::system_clock::now() + relay_deadline_in_;
    return p;
  }

  GrantCheck DefaultGrant() {
    GrantCheck g;
    g.grant_id = kGrant;
    g.user = "alice";
    g.site = "plant";
    g.target = "plc1";
    g.scopes = {"modbus:read"};
    g.deadline = std::chrono::system_clock::now() + gateway_deadline_in_;
    std::lock_guard lock(grant_mu_);
    last_grant_deadline_ = g.deadline;
    return g;
  }

  GatewayStreamSettings GatewaySettings(const std::string& stream_id) {
    GatewayStreamSettings s;
    s.stream_id = stream_id;
    s.relay_host = "127.0.0.1";
    s.relay_port = relay_->port();
    s.outer = Ref(outer_gw_);
    s.inner = Ref(inner_gw_);
    s.target_host = "127.0.0.1";
    s.target_port = target_port_ ? target_port_ : echo_.port();
    s.connect_timeout = 5s;
    s.idle_timeout = idle_timeout_;
    return s;
  }

  GatewayStreamHooks GatewayHooks() {
    GatewayStreamHooks h;
    h.verify_grant = [this](const std::string& leaf) -> Expected<GrantCheck> {
      grant_leafs_.Add(leaf);
      if (refuse_grant_) return MakeError(Errc::kPermissionDenied, "grant revoked");
      return DefaultGrant();
    };
    if (use_filter_) {
      h.make_filter = [](const GrantCheck&) { return std::make_unique<TestFilter>(); };
    }
    h.make_recorder = [this](const GrantCheck&) {
      return std::make_unique<TestRecorder>(recorder_log_);
    };
    h.on_refused = [this](const std::string& stream, const GrantCheck& g, const Refusal& r) {
      refused_.Add(stream + " " + g.grant_id + " " + r.reason);
    };
    h.on_end = [this](const std::string& stream, const StreamSummary& sum) {
      gw_ends_.Add(GwEnd{stream, sum});
    };
    return h;
  }

  void StartRelay() {
    RelaySettings s;
    s.listen = "127.0.0.1:0";
    s.tls = Ref(relay_ctx_);
    s.handshake_timeout = handshake_timeout_;
    s.pair_timeout = pair_timeout_;
    s.worker_threads = 2;
    s.copy_observer = [this](bool up, std::string_view bytes) {
      std::lock_guard lock(copied_mu_);
      (up ? copied_up_ : copied_down_).append(bytes);
    };
    RelayHooks h;
    h.authorize = [this](const Leg& leg) -> Expected<StreamPlan> {
      tech_leafs_.Add(leg.cert_der);
      if (authorize_) return authorize_(leg);
      return DefaultPlan();
    };
    h.notify_gateway = [this](const StreamPlan& plan) -> Expected<void> {
      if (!notify_) return {};
      return notify_(plan);
    };
    h.on_end = [this](const StreamEnd& e) { relay_ends_.Add(e); };
    // By default the gateway dials in as soon as it is told (what the agent does).
    if (!notify_set_) {
      notify_ = [this](const StreamPlan& plan) -> Expected<void> {
        return gws_->Open(GatewaySettings(plan.stream_id), GatewayHooks());
      };
    }
    auto relay = Relay::Start(std::move(s), std::move(h));
    ASSERT_TRUE(relay) << relay.error().message();
    relay_ = std::move(*relay);
  }

  void StartForwarder(const std::string& relay_host = "127.0.0.1") {
    ForwarderSettings s;
    s.relay_host = relay_host;
    s.relay_port = relay_->port();
    s.outer = Ref(outer_tech_);
    s.inner = Ref(inner_tech_);
    s.connect_timeout = 10s;
    s.max_connections = max_connections_;
    ForwarderHooks h;
    h.verify_gateway = [this](const std::string& leaf,
                              const std::string& device) -> Expected<void> {
      gateway_checks_.Add(device);
      if (leaf != device_.der) return MakeError(Errc::kPermissionDenied, "not the device cert");
      if (device != kDevice) return MakeError(Errc::kPermissionDenied, "wrong device");
      if (refuse_gateway_) return MakeError(Errc::kPermissionDenied, "gateway not trusted");
      return {};
    };
    h.on_open = [this](const std::string& stream, const std::string&) { fwd_opens_.Add(stream); };
    h.on_end = [this](const std::string& stream, const std::string& reason, bool error) {
      fwd_ends_.Add(FwdEnd{stream, reason, error});
    };
    auto f = Forwarder::Start(std::move(s), std::move(h));
    ASSERT_TRUE(f) << f.error().message();
    fwd_ = std::move(*f);
  }

  void StartAll() {
    StartRelay();
    StartForwarder();
  }

  // Connects to the forwarder and checks one echo round trip; returns the socket.
  int OpenEchoingStream(const std::string& probe = "ping\n") {
    int fd = ConnectTcp(fwd_->port());
    EXPECT_GE(fd, 0);
    EXPECT_TRUE(SendAll(fd, probe));
    EXPECT_EQ(RecvN(fd, probe.size()), probe);
    return fd;
  }

  // A blocking TLS client to the relay: sends `line`, returns the reply line (or "" on close).
  std::string RawTlsExchange(const Issued& client, const std::string& line) {
    auto ctx = MakeOuterClientContext(client.cert_pem, client.key.get(), ca_.cert_file());
    EXPECT_TRUE(ctx);
    if (!ctx) return {};
    NoSigpipeHere no_sigpipe;
    int fd = ConnectTcp(relay_->port());
    SSL* ssl = SSL_new(ctx->get());
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "localhost");
    std::string reply;
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, line.data(), static_cast<int>(line.size())) > 0) {
      char c;
      while (SSL_read(ssl, &c, 1) == 1) {
        reply += c;
        if (c == '\n') break;
      }
    }
    SSL_free(ssl);
    ::close(fd);
    ERR_clear_error();
    return reply;
  }

  TempDir dir_;
  TestCa ca_{dir_.path(), "t"};
  Issued relay_cert_ = ca_.Issue("relay", {"DNS:localhost", "IP:127.0.0.1"}, Usage::kServer);
  Issued grant_ = ca_.Issue("grant-ar-00000000000a", {}, Usage::kClient);
  Issued device_ = ca_.Issue(kDevice, {}, Usage::kClient);
  Issued other_device_ = ca_.Issue(kOtherDevice, {}, Usage::kClient);
  net::SslCtxPtr relay_ctx_, outer_tech_, inner_tech_, outer_gw_, inner_gw_;

  // Knobs, set before Start*.
  std::chrono::milliseconds handshake_timeout_{5000};
  std::chrono::milliseconds pair_timeout_{5000};
  std::chrono::seconds idle_timeout_{0};
  std::chrono::milliseconds relay_deadline_in_ = std::chrono::hours(1);
  std::chrono::milliseconds gateway_deadline_in_ = std::chrono::hours(1);
  std::function<Expected<StreamPlan>(const Leg&)> authorize_;
  std::function<Expected<void>(const StreamPlan&)> notify_;
  bool notify_set_ = false;
  bool refuse_grant_ = false;
  bool refuse_gateway_ = false;
  bool use_filter_ = false;
  uint16_t target_port_ = 0;
  size_t max_connections_ = 64;
  std::mutex grant_mu_;
  std::chrono::system_clock::time_point last_grant_deadline_;

  EchoServer echo_;
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<GatewayStreams> gws_;
  std::unique_ptr<Forwarder> fwd_;

  std::mutex copied_mu_;
  std::string copied_up_, copied_down_;
  Events<StreamEnd> relay_ends_;
  Events<GwEnd> gw_ends_;
  Events<FwdEnd> fwd_ends_;
  Events<std::string> fwd_opens_, tech_leafs_, grant_leafs_, gateway_checks_, refused_;
  std::shared_ptr<RecorderLog> recorder_log_ = std::make_shared<RecorderLog>();
};

TEST_F(TunnelTest, BytesRoundTripAndEveryEndReportsOnce) {
  StartAll();
  int fd = OpenEchoingStream();
  std::string big = RandomBytes(300 * 1024, 1);
  std::thread writer([&] { EXPECT_TRUE(SendAll(fd, big)); });
  EXPECT_EQ(RecvN(fd, big.size()), big);
  writer.join();

  // Each end saw the right certificate.
  ASSERT_EQ(tech_leafs_.Now().size(), 1u);
  EXPECT_EQ(tech_leafs_.Now()[0], grant_.der);
  ASSERT_EQ(grant_leafs_.Now().size(), 1u);
  EXPECT_EQ(grant_leafs_.Now()[0], grant_.der);
  EXPECT_EQ(gateway_checks_.Now(), std::vector<std::string>{kDevice});
  auto opens = fwd_opens_.WaitFor(1);
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_TRUE(IsStreamId(opens[0]));

  auto live = relay_->List();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_TRUE(live[0].paired);
  EXPECT_EQ(live[0].plan.stream_id, opens[0]);
  EXPECT_GT(live[0].bytes_up, big.size());  // plus TLS overhead
  auto gw_live = gws_->List();
  ASSERT_EQ(gw_live.size(), 1u);
  EXPECT_EQ(gw_live[0].grant_id, kGrant);
  EXPECT_EQ(gw_live[0].user, "alice");
  EXPECT_EQ(gw_live[0].bytes_to_target, big.size() + 5);
  EXPECT_EQ(fwd_->active(), 1u);

  ::close(fd);
  auto fends = fwd_ends_.WaitFor(1);
  auto gends = gw_ends_.WaitFor(1);
  auto rends = relay_ends_.WaitFor(1);
  ASSERT_EQ(fends.size(), 1u);
  EXPECT_EQ(fends[0].stream_id, opens[0]);
  EXPECT_FALSE(fends[0].error) << fends[0].reason;
  EXPECT_EQ(fends[0].reason, "closed by client");
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "closed by technician");
  EXPECT_TRUE(gends[0].summary.target_connected);
  EXPECT_EQ(gends[0].summary.bytes_to_target, big.size() + 5);
  EXPECT_EQ(gends[0].summary.bytes_from_target, big.size() + 5);
  ASSERT_EQ(rends.size(), 1u);
  EXPECT_TRUE(rends[0].paired);
  EXPECT_EQ(rends[0].reason, "closed by technician");
  EXPECT_EQ(rends[0].plan.stream_id, opens[0]);
  EXPECT_GT(rends[0].bytes_down, big.size());

  // The recorder saw both directions and was finished once.
  {
    std::lock_guard lock(recorder_log_->mu);
    EXPECT_EQ(recorder_log_->to_target, "ping\n" + big);
    EXPECT_EQ(recorder_log_->from_target, "ping\n" + big);
    ASSERT_EQ(recorder_log_->finished.size(), 1u);
    EXPECT_EQ(recorder_log_->finished[0], "closed by technician");
    ASSERT_GE(recorder_log_->events.size(), 2u);
    EXPECT_THAT(recorder_log_->events.front(), StartsWith("open "));
    EXPECT_THAT(recorder_log_->events.back(), StartsWith("close "));
  }
  // Nothing is reported twice.
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(fwd_ends_.Now().size(), 1u);
  EXPECT_EQ(gw_ends_.Now().size(), 1u);
  EXPECT_EQ(relay_ends_.Now().size(), 1u);
  EXPECT_TRUE(relay_->List().empty());
  EXPECT_TRUE(gws_->List().empty());
  EXPECT_EQ(fwd_->active(), 0u);
}

TEST_F(TunnelTest, SeveralConcurrentConnections) {
  StartAll();
  constexpr int kConns = 8;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kConns; ++i) {
    clients.emplace_back([&, i] {
      int fd = ConnectTcp(fwd_->port());
      if (fd < 0) return;
      std::string data = RandomBytes(64 * 1024 + static_cast<size_t>(i), static_cast<uint32_t>(i));
      std::thread writer([&] { SendAll(fd, data); });
      std::string got = RecvN(fd, data.size());
      writer.join();
      if (got == data) ++ok;
      ::close(fd);
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kConns);
  auto rends = relay_ends_.WaitFor(kConns);
  EXPECT_EQ(rends.size(), static_cast<size_t>(kConns));
  EXPECT_EQ(gw_ends_.WaitFor(kConns).size(), static_cast<size_t>(kConns));
  EXPECT_EQ(echo_.connections(), kConns);
}

// Peers vanishing mid-transfer (resets while bytes flow the other way) end streams and never
// take the process down (SIGPIPE from a TLS write to a dead socket).
TEST_F(TunnelTest, PeersVanishingMidTransfer) {
  StartAll();
  for (int i = 0; i < 5; ++i) {
    int fd = OpenEchoingStream();
    std::string big = RandomBytes(2 * 1024 * 1024, static_cast<uint32_t>(i));
    std::thread writer([&] { SendAll(fd, big); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * i));
    ::shutdown(fd, SHUT_RDWR);
    writer.join();
    AbortiveClose(fd);
  }
  EXPECT_EQ(relay_ends_.WaitFor(5).size(), 5u);
  EXPECT_EQ(gw_ends_.WaitFor(5).size(), 5u);
  EXPECT_EQ(fwd_ends_.WaitFor(5).size(), 5u);
  // Still serving.
  int fd = OpenEchoingStream();
  ::close(fd);
}

TEST_F(TunnelTest, RelayCopiesOnlyCiphertext) {
  StartAll();
  const std::string marker = "MARKER-7f3a9c-the-relay-must-never-see-this";
  int fd = OpenEchoingStream(marker + "\n");
  for (int i = 0; i < 20; ++i) {
    std::string line = marker + std::to_string(i) + "\n";
    ASSERT_TRUE(SendAll(fd, line));
    ASSERT_EQ(RecvN(fd, line.size()), line);
  }
  ::close(fd);
  relay_ends_.WaitFor(1);
  std::lock_guard lock(copied_mu_);
  ASSERT_GT(copied_up_.size(), 20 * marker.size());
  ASSERT_GT(copied_down_.size(), 20 * marker.size());
  EXPECT_EQ(copied_up_.find("MARKER"), std::string::npos);
  EXPECT_EQ(copied_down_.find("MARKER"), std::string::npos);
  // What it copied is TLS: a ClientHello record first, one from the gateway back.
  EXPECT_EQ(static_cast<uint8_t>(copied_up_[0]), 0x16);
  EXPECT_EQ(static_cast<uint8_t>(copied_down_[0]), 0x16);
  // The target did get the plaintext.
  EXPECT_NE(echo_.received().find(marker + "19\n"), std::string::npos);
}

TEST_F(TunnelTest, AuthorizeRefusalReachesTheForwarder) {
  authorize_ = [](const Leg&) -> Expected<StreamPlan> {
    return MakeError(Errc::kPermissionDenied, "no active grant for plc1");
  };
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_TRUE(ends[0].error);
  EXPECT_EQ(ends[0].reason, "forbidden: no active grant for plc1");
  EXPECT_TRUE(ends[0].stream_id.empty());
  EXPECT_TRUE(relay_ends_.Now().empty());  // authorize failed: no stream
  EXPECT_EQ(echo_.connections(), 0);
}

TEST_F(TunnelTest, AuthorizeCodesMapToErrCodes) {
  StartRelay();
  struct Case {
    Errc code;
    const char* wire;
  };
  for (auto c : {Case{Errc::kNotFound, "not_found"}, Case{Errc::kExpired, "expired"},
                 Case{Errc::kUnavailable, "unavailable"}, Case{Errc::kIo, "error"}}) {
    authorize_ = [c](const Leg&) -> Expected<StreamPlan> { return MakeError(c.code, "why"); };
    EXPECT_EQ(RawTlsExchange(grant_, FormatConnect()), std::string("ERR ") + c.wire + " why\n");
  }
}

TEST_F(TunnelTest, NotifyFailureEndsTheStream) {
  notify_set_ = true;
  notify_ = [](const StreamPlan&) -> Expected<void> {
    return MakeError(Errc::kUnavailable, "gateway offline");
  };
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].reason, "unavailable: gateway offline");
  auto rends = relay_ends_.WaitFor(1);
  ASSERT_EQ(rends.size(), 1u);
  EXPECT_FALSE(rends[0].paired);
  EXPECT_EQ(rends[0].reason, "gateway not notified: gateway offline");
}

TEST_F(TunnelTest, PairTimeout) {
  pair_timeout_ = 300ms;
  notify_set_ = true;
  notify_ = [](const StreamPlan&) -> Expected<void> { return {}; };  // nobody dials in
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto rends = relay_ends_.WaitFor(1);
  ASSERT_EQ(rends.size(), 1u);
  EXPECT_EQ(rends[0].reason, "pair timeout");
  EXPECT_FALSE(rends[0].paired);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_TRUE(ends[0].error);
  EXPECT_THAT(ends[0].reason, StartsWith("unavailable: the gateway did not connect"));
  EXPECT_TRUE(relay_->List().empty());
}

TEST_F(TunnelTest, TechnicianLeavingBeforePairingEndsTheStreamAtOnce) {
  pair_timeout_ = 20s;
  notify_set_ = true;
  notify_ = [](const StreamPlan&) -> Expected<void> { return {}; };  // nobody dials in
  StartAll();
  auto t0 = SteadyClock::now();
  int fd = ConnectTcp(fwd_->port());
  for (int i = 0; i < 100 && relay_->List().empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(relay_->List().size(), 1u);
  fwd_->Stop();  // the technician's end goes away
  ::close(fd);
  auto rends = relay_ends_.WaitFor(1);
  ASSERT_EQ(rends.size(), 1u);
  EXPECT_EQ(rends[0].reason, "technician left before pairing");
  EXPECT_LT(SteadyClock::now() - t0, 10s);  // long before the pair timeout
  EXPECT_TRUE(relay_->List().empty());
}

TEST_F(TunnelTest, PendingStreamIsListedAndKillable) {
  notify_set_ = true;
  notify_ = [](const StreamPlan&) -> Expected<void> { return {}; };
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  for (int i = 0; i < 100 && relay_->List().empty(); ++i) std::this_thread::sleep_for(20ms);
  auto live = relay_->List();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_FALSE(live[0].paired);
  EXPECT_EQ(relay_->Kill(live[0].plan.stream_id, "operator"), 1u);
  EXPECT_TRUE(WaitClosed(fd, 3s));
  ::close(fd);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].reason, "killed: operator");
}

// Kill, KillGrant and KillDevice on the relay: both legs closed, the client sees EOF.
TEST_F(TunnelTest, RelayKillsEndStreamsAtOnce) {
  StartAll();
  for (int which = 0; which < 3; ++which) {
    int fd = OpenEchoingStream();
    auto live = relay_->List();
    ASSERT_EQ(live.size(), 1u);
    auto t0 = SteadyClock::now();
    size_t n = 0;
    if (which == 0) n = relay_->Kill(live[0].plan.stream_id, "by test");
    if (which == 1) n = relay_->KillGrant(kGrant, "by test");
    if (which == 2) n = relay_->KillDevice(kDevice, "by test");
    EXPECT_EQ(n, 1u);
    EXPECT_TRUE(WaitClosed(fd, 3s)) << which;
    EXPECT_LT(SteadyClock::now() - t0, 3s);
    ::close(fd);
    auto rends = relay_ends_.WaitFor(static_cast<size_t>(which + 1));
    ASSERT_EQ(rends.size(), static_cast<size_t>(which + 1));
    EXPECT_EQ(rends.back().reason, "killed: by test");
    EXPECT_TRUE(rends.back().paired);
    EXPECT_EQ(relay_->Kill(live[0].plan.stream_id, "again"), 0u);
  }
  EXPECT_EQ(relay_->KillGrant("ar-000000000bad", "none"), 0u);
  EXPECT_EQ(relay_->KillDevice(kOtherDevice, "none"), 0u);
  // The gateway ends follow (its relay leg went away).
  EXPECT_EQ(gw_ends_.WaitFor(3).size(), 3u);
}

TEST_F(TunnelTest, GatewayKillsEndStreamsAtOnce) {
  StartAll();
  for (int which = 0; which < 3; ++which) {
    int fd = OpenEchoingStream();
    auto live = gws_->List();
    ASSERT_EQ(live.size(), 1u);
    size_t n = 0;
    if (which == 0) n = gws_->Kill(live[0].stream_id, "local operator");
    if (which == 1) n = gws_->KillAll("local operator");
    if (which == 2) n = gws_->KillGrant(kGrant, "local operator");
    EXPECT_EQ(n, 1u);
    EXPECT_TRUE(WaitClosed(fd, 3s)) << which;
    ::close(fd);
    auto gends = gw_ends_.WaitFor(static_cast<size_t>(which + 1));
    ASSERT_EQ(gends.size(), static_cast<size_t>(which + 1));
    EXPECT_EQ(gends.back().summary.reason, "killed: local operator");
    EXPECT_EQ(gws_->Kill(live[0].stream_id, "again"), 0u);
  }
  EXPECT_EQ(gws_->KillGrant("ar-000000000bad", "none"), 0u);
  std::lock_guard lock(recorder_log_->mu);
  EXPECT_EQ(recorder_log_->finished.size(), 3u);
}

// The gateway cuts at the grant's deadline on its own: no traffic, the relay would go on.
TEST_F(TunnelTest, GatewayCutsAtTheGrantDeadline) {
  gateway_deadline_in_ = 1500ms;
  StartAll();
  auto t0 = std::chrono::system_clock::now();
  int fd = OpenEchoingStream();
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  auto ended = std::chrono::system_clock::now();
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "grant expired");
  std::chrono::system_clock::time_point deadline;
  {
    std::lock_guard lock(grant_mu_);
    deadline = last_grant_deadline_;
  }
  EXPECT_GE(ended - t0, 1400ms);        // not early
  EXPECT_GE(ended, deadline);           // not before the grant's end
  EXPECT_LT(ended - deadline, 1500ms);  // within a second of it (lenient bound)
  std::lock_guard lock(recorder_log_->mu);
  ASSERT_EQ(recorder_log_->finished.size(), 1u);
  EXPECT_EQ(recorder_log_->finished[0], "grant expired");
}

TEST_F(TunnelTest, GrantAlreadyExpiredAtTheGateway) {
  gateway_deadline_in_ = -1s;
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "grant expired");
  EXPECT_FALSE(gends[0].summary.target_connected);
  EXPECT_EQ(echo_.connections(), 0);
}

TEST_F(TunnelTest, RelayCutsAtThePlanDeadline) {
  relay_deadline_in_ = 1200ms;
  StartAll();
  auto t0 = SteadyClock::now();
  int fd = OpenEchoingStream();
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto rends = relay_ends_.WaitFor(1);
  ASSERT_EQ(rends.size(), 1u);
  EXPECT_EQ(rends[0].reason, "grant expired");
  EXPECT_LT(SteadyClock::now() - t0, 4s);
}

TEST_F(TunnelTest, IdleStreamsEnd) {
  idle_timeout_ = 1s;
  StartAll();
  int fd = OpenEchoingStream();
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "idle");
}

TEST_F(TunnelTest, FilterRepliesInsteadOfForwarding) {
  use_filter_ = true;
  StartAll();
  int fd = OpenEchoingStream("read 1\n");
  ASSERT_TRUE(SendAll(fd, "W write 6\n"));
  EXPECT_EQ(RecvN(fd, 8), "refused\n");
  // The connection stays open and the next request still works.
  ASSERT_TRUE(SendAll(fd, "read 2\n"));
  EXPECT_EQ(RecvN(fd, 7), "read 2\n");
  EXPECT_EQ(echo_.received(), "read 1\nread 2\n");
  auto refused = refused_.WaitFor(1);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_THAT(refused[0], HasSubstr(std::string(kGrant) + " writes need a write scope"));
  {
    std::lock_guard lock(recorder_log_->mu);
    EXPECT_EQ(recorder_log_->to_target, "read 1\nread 2\n");
    bool found = false;
    for (const auto& e : recorder_log_->events) {
      if (e.rfind("refused ", 0) == 0) {
        found = true;
        EXPECT_THAT(e, HasSubstr("\"function\":6"));
        EXPECT_THAT(e, HasSubstr("\"transaction\":7"));
      }
    }
    EXPECT_TRUE(found);
  }
  // A protocol violation closes the stream.
  ASSERT_TRUE(SendAll(fd, "X"));
  EXPECT_TRUE(WaitClosed(fd, 3s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "protocol violation: bad frame");
}

TEST_F(TunnelTest, HalfCloseDeliversTheAnswer) {
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  ASSERT_TRUE(SendAll(fd, "question\n"));
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(RecvN(fd, 9), "question\n");
  EXPECT_TRUE(WaitClosed(fd, 3s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "closed by technician");
  auto fends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(fends.size(), 1u);
  EXPECT_FALSE(fends[0].error);
}

TEST_F(TunnelTest, GrantRefusedByTheGateway) {
  refuse_grant_ = true;
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "grant refused: grant revoked");
  EXPECT_FALSE(gends[0].summary.target_connected);
  EXPECT_EQ(echo_.connections(), 0);
  std::lock_guard lock(recorder_log_->mu);
  EXPECT_TRUE(recorder_log_->finished.empty());  // no recorder was made
}

TEST_F(TunnelTest, GatewayRefusedByTheForwarder) {
  refuse_gateway_ = true;
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_TRUE(ends[0].error);
  EXPECT_EQ(ends[0].reason, "gateway verification failed: gateway not trusted");
  EXPECT_FALSE(ends[0].stream_id.empty());
}

TEST_F(TunnelTest, UnreachableTarget) {
  {
    EchoServer gone;
    target_port_ = gone.port();
  }
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd, 5s));
  ::close(fd);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_THAT(gends[0].summary.reason, HasSubstr("unreachable"));
  EXPECT_FALSE(gends[0].summary.target_connected);
}

TEST_F(TunnelTest, ForwarderVerifiesTheRelayCertificateName) {
  StartRelay();
  // "localhost" resolves to the relay and is in its certificate: fine.
  StartForwarder("localhost");
  int fd = OpenEchoingStream();
  ::close(fd);
  fwd_ends_.WaitFor(1);
  fwd_->Stop();
  fwd_.reset();
  // A relay certificate for another name is refused (outer TLS host check).
  Issued wrong = ca_.Issue("wrong", {"DNS:other.example"}, Usage::kServer);
  auto ctx = MakeRelayServerContext(wrong.cert_file, wrong.key_file, ca_.cert_file());
  ASSERT_TRUE(ctx);
  relay_->Stop();
  relay_ctx_ = std::move(*ctx);
  StartRelay();
  StartForwarder("localhost");
  int fd2 = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(fd2, 5s));
  ::close(fd2);
  auto ends = fwd_ends_.WaitFor(2);
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_TRUE(ends[1].error);
  EXPECT_THAT(ends[1].reason, HasSubstr("relay TLS handshake failed"));
}

TEST_F(TunnelTest, RelaySurvivesGarbage) {
  handshake_timeout_ = 500ms;
  StartAll();
  // Plain TCP garbage, an HTTP request, and a silent connection.
  for (const std::string& junk : {std::string("\x16\x03\x01\x00\x05hello", 10),
                                  std::string("GET / HTTP/1.1\r\n\r\n"), RandomBytes(5000, 9)}) {
    int fd = ConnectTcp(relay_->port());
    SendAll(fd, junk);
    EXPECT_TRUE(WaitClosed(fd, 5s));
    ::close(fd);
  }
  int silent = ConnectTcp(relay_->port());
  EXPECT_TRUE(WaitClosed(silent, 5s));  // handshake timeout
  ::close(silent);
  // TLS, then bad hello lines.
  EXPECT_THAT(RawTlsExchange(grant_, "HELLO\n"), StartsWith("ERR bad_request "));
  EXPECT_THAT(RawTlsExchange(grant_, "TORWART/1 ACCEPT st-nothex\n"),
              StartsWith("ERR bad_request "));
  EXPECT_THAT(RawTlsExchange(grant_, std::string(3000, 'A')),
              StartsWith("ERR bad_request hello line too long"));
  EXPECT_THAT(RawTlsExchange(grant_, std::string("TORWART/1 CONNECT\0\n", 19)),
              StartsWith("ERR bad_request "));
  EXPECT_THAT(RawTlsExchange(device_, FormatAccept("st-0000000000000000")),
              StartsWith("ERR not_found "));
  // A client certificate from another CA does not get past TLS.
  TestCa other(dir_.path(), "other");
  Issued stranger = other.Issue("stranger", {}, Usage::kClient);
  EXPECT_EQ(RawTlsExchange(stranger, FormatConnect()), "");
  EXPECT_TRUE(tech_leafs_.Now().empty());
  // Still serving.
  int fd = OpenEchoingStream();
  ::close(fd);
}

TEST_F(TunnelTest, AcceptFromTheWrongGatewayIsRefused) {
  notify_set_ = true;
  std::mutex mu;
  std::string pending;
  notify_ = [&](const StreamPlan& plan) -> Expected<void> {
    std::lock_guard lock(mu);
    pending = plan.stream_id;
    return {};
  };
  StartAll();
  int fd = ConnectTcp(fwd_->port());
  for (int i = 0; i < 100; ++i) {
    std::lock_guard lock(mu);
    if (!pending.empty()) break;
    std::this_thread::sleep_for(20ms);
  }
  std::string id;
  {
    std::lock_guard lock(mu);
    id = pending;
  }
  ASSERT_TRUE(IsStreamId(id));
  // Another device (and the technician's own grant certificate) cannot take the stream.
  EXPECT_THAT(RawTlsExchange(other_device_, FormatAccept(id)), StartsWith("ERR forbidden "));
  EXPECT_THAT(RawTlsExchange(grant_, FormatAccept(id)), StartsWith("ERR forbidden "));
  // The right one still can.
  ASSERT_TRUE(gws_->Open(GatewaySettings(id), GatewayHooks()));
  ASSERT_TRUE(SendAll(fd, "late\n"));
  EXPECT_EQ(RecvN(fd, 5), "late\n");
  // And only once.
  EXPECT_THAT(RawTlsExchange(device_, FormatAccept(id)), StartsWith("ERR conflict "));
  ::close(fd);
}

TEST_F(TunnelTest, StopEndsEverythingOnce) {
  StartAll();
  int a = OpenEchoingStream();
  int b = OpenEchoingStream();
  relay_->Stop();
  EXPECT_TRUE(WaitClosed(a, 3s));
  EXPECT_TRUE(WaitClosed(b, 3s));
  ::close(a);
  ::close(b);
  auto rends = relay_ends_.WaitFor(2);
  ASSERT_EQ(rends.size(), 2u);
  EXPECT_EQ(rends[0].reason, "relay stopping");
  EXPECT_EQ(gw_ends_.WaitFor(2).size(), 2u);
  EXPECT_EQ(fwd_ends_.WaitFor(2).size(), 2u);
  gws_->Stop();
  fwd_->Stop();
  EXPECT_EQ(relay_ends_.Now().size(), 2u);
}

TEST_F(TunnelTest, GatewayStopEndsLiveStreams) {
  StartAll();
  int a = OpenEchoingStream();
  gws_->Stop();
  EXPECT_TRUE(WaitClosed(a, 3s));
  ::close(a);
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_EQ(gends[0].summary.reason, "stopping");
  EXPECT_FALSE(gws_->Open(GatewaySettings(NewStreamId()), GatewayHooks()));
}

TEST_F(TunnelTest, BadSettingsAreErrors) {
  RelaySettings rs;
  RelayHooks rh;
  EXPECT_FALSE(Relay::Start(std::move(rs), rh));  // no TLS context
  ForwarderSettings fs;
  EXPECT_FALSE(Forwarder::Start(std::move(fs), ForwarderHooks{}));
  StartRelay();
  GatewayStreamSettings gs = GatewaySettings("not-a-stream");
  EXPECT_FALSE(gws_->Open(std::move(gs), GatewayHooks()));
  std::string id = NewStreamId();
  ASSERT_TRUE(gws_->Open(GatewaySettings(id), GatewayHooks()));
  auto dup = gws_->Open(GatewaySettings(id), GatewayHooks());
  ASSERT_FALSE(dup);
  EXPECT_TRUE(dup.error().Is(Errc::kAlreadyExists));
  // That stream finds nothing at the relay and ends.
  auto gends = gw_ends_.WaitFor(1);
  ASSERT_EQ(gends.size(), 1u);
  EXPECT_THAT(gends[0].summary.reason, StartsWith("relay refused: not_found"));
}

TEST_F(TunnelTest, ForwarderLimitsConnections) {
  max_connections_ = 1;
  StartAll();
  int a = OpenEchoingStream();
  int b = ConnectTcp(fwd_->port());
  EXPECT_TRUE(WaitClosed(b, 3s));
  ::close(b);
  auto ends = fwd_ends_.WaitFor(1);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_TRUE(ends[0].error);
  EXPECT_TRUE(ends[0].stream_id.empty());
  EXPECT_EQ(ends[0].reason, "too many connections (max 1)");
  // The first one is unaffected.
  ASSERT_TRUE(SendAll(a, "still\n"));
  EXPECT_EQ(RecvN(a, 6), "still\n");
  ::close(a);
}

// SSLKEYLOGFILE: the outer contexts log their secrets (the relay-blindness system test decrypts
// the outer layer with them); the inner TLS never does.
TEST(TunnelKeyLogTest, OnlyTheOuterLayerIsLogged) {
  TempDir dir;
  std::string path = dir.path() + "/keys.log";
  ::setenv("SSLKEYLOGFILE", path.c_str(), 1);
  struct Unset {
    ~Unset() { ::unsetenv("SSLKEYLOGFILE"); }
  } unset;
  TestCa ca(dir.path(), "k");
  Issued relay_cert = ca.Issue("relay", {"IP:127.0.0.1"}, Usage::kServer);
  Issued grant = ca.Issue("grant", {}, Usage::kClient);
  Issued device = ca.Issue(kDevice, {}, Usage::kClient);
  auto relay_ctx =
      MakeRelayServerContext(relay_cert.cert_file, relay_cert.key_file, ca.cert_file());
  auto outer_tech = MakeOuterClientContext(grant.cert_pem, grant.key.get(), ca.cert_file());
  auto inner_tech = MakeInnerClientContext(grant.cert_pem, grant.key.get(), ca.cert_file());
  auto outer_gw = MakeOuterClientContext(device.cert_pem, device.key.get(), ca.cert_file());
  auto inner_gw = MakeInnerServerContext(device.cert_pem, device.key.get(), ca.cert_file());
  ASSERT_TRUE(relay_ctx && outer_tech && inner_tech && outer_gw && inner_gw);
  EchoServer echo;
  auto gws = GatewayStreams::Create();
  ASSERT_TRUE(gws);
  std::unique_ptr<Relay> relay;
  RelaySettings rs;
  rs.listen = "127.0.0.1:0";
  rs.tls = std::move(*relay_ctx);
  RelayHooks rh;
  rh.authorize = [](const Leg&) -> Expected<StreamPlan> {
    StreamPlan p;
    p.stream_id = NewStreamId();
    p.device_id = kDevice;
    p.deadline = std::chrono::system_clock::now() + 1h;
    return p;
  };
  rh.notify_gateway = [&](const StreamPlan& plan) -> Expected<void> {
    GatewayStreamSettings s;
    s.stream_id = plan.stream_id;
    s.relay_host = "127.0.0.1";
    s.relay_port = relay->port();
    s.outer = Ref(*outer_gw);
    s.inner = Ref(*inner_gw);
    s.target_host = "127.0.0.1";
    s.target_port = echo.port();
    GatewayStreamHooks h;
    h.verify_grant = [](const std::string&) -> Expected<GrantCheck> {
      GrantCheck g;
      g.deadline = std::chrono::system_clock::now() + 1h;
      return g;
    };
    return (*gws)->Open(std::move(s), std::move(h));
  };
  auto started = Relay::Start(std::move(rs), std::move(rh));
  ASSERT_TRUE(started);
  relay = std::move(*started);
  ForwarderSettings fs;
  fs.relay_host = "127.0.0.1";
  fs.relay_port = relay->port();
  fs.outer = Ref(*outer_tech);
  fs.inner = Ref(*inner_tech);
  ForwarderHooks fh;
  fh.verify_gateway = [](const std::string&, const std::string&) -> Expected<void> { return {}; };
  auto fwd = Forwarder::Start(std::move(fs), std::move(fh));
  ASSERT_TRUE(fwd);
  int fd = ConnectTcp((*fwd)->port());
  ASSERT_TRUE(SendAll(fd, "k\n"));
  EXPECT_EQ(RecvN(fd, 2), "k\n");
  ::close(fd);
  (*fwd)->Stop();
  (*gws)->Stop();
  relay->Stop();

  std::ifstream in(path);
  std::set<std::string> clients;
  std::string label, random, secret;
  while (in >> label >> random >> secret) {
    if (label == "CLIENT_TRAFFIC_SECRET_0") clients.insert(random);
  }
  // Two outer handshakes (technician and gateway legs); the inner one would be a third.
  EXPECT_EQ(clients.size(), 2u);
}

TEST(TunnelContextsTest, BadInputsAreErrors) {
  TempDir dir;
  TestCa ca(dir.path(), "c");
  Issued leaf = ca.Issue("x", {}, Usage::kClient);
  Issued other = ca.Issue("y", {}, Usage::kClient);
  EXPECT_FALSE(MakeInnerClientContext("not pem", leaf.key.get(), ca.cert_file()));
  EXPECT_FALSE(MakeInnerClientContext(leaf.cert_pem, other.key.get(), ca.cert_file()));
  EXPECT_FALSE(MakeInnerServerContext(leaf.cert_pem, nullptr, ca.cert_file()));
  EXPECT_FALSE(MakeOuterClientContext(leaf.cert_pem, leaf.key.get(), dir.path() + "/nope.pem"));
  EXPECT_FALSE(MakeRelayServerContext(dir.path() + "/nope.crt", leaf.key_file, ca.cert_file()));
  auto ok =
      MakeInnerServerContext(leaf.cert_pem + ca.ca().cert_pem, leaf.key.get(), ca.cert_file());
  ASSERT_TRUE(ok) << ok.error().message();
  // TLS 1.3 only.
  EXPECT_EQ(SSL_CTX_get_min_proto_version(ok->get()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_CTX_get_max_proto_version(ok->get()), TLS1_3_VERSION);
}

}  // namespace
}  // namespace torwart::tunnel
