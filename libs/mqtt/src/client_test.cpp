#include "torwart/mqtt/client.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "torwart/mqtt/topics.hpp"
#include "torwart/net/testing/test_pki.hpp"

namespace torwart::mqtt {
namespace {

using namespace std::chrono_literals;
namespace nt = torwart::net::testing;

TEST(MqttUrl, Parses) {
  auto u = ParseUrl("mqtts://127.0.0.1:8884");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8884);
  u = ParseUrl("mqtt://broker.example");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->port, 1883);
  u = ParseUrl("mqtts://[::1]:9000");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->ToString(), "mqtts://[::1]:9000");
  for (const char* bad : {"http://x:1", "mqtts://", "mqtts://h:0", "mqtts://h:99999", "mqtts://h:x",
                          "mqtts://h:1/path", "mqtts://u@h:1", "mqtts://[::1", "mqtts://h:"}) {
    EXPECT_FALSE(ParseUrl(bad)) << bad;
  }
}

TEST(MqttTopics, BuildAndSplit) {
  EXPECT_EQ(topics::Status("abc"), "torwart/d/abc/status");
  auto t = topics::ParseDevice("torwart/d/abc/cmd");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->uuid, "abc");
  EXPECT_EQ(t->leaf, "cmd");
  EXPECT_FALSE(topics::ParseDevice("torwart/d/abc/cmd/x"));
  EXPECT_FALSE(topics::ParseDevice("torwart/d//cmd"));
  EXPECT_FALSE(topics::ParseDevice("torwart/x/abc/cmd"));
  EXPECT_FALSE(topics::ParseDevice("torwart/d/abc/"));
}

TEST(MqttClient, RejectsBadSettings) {
  ClientSettings s;
  s.url = "mqtts://127.0.0.1:1";
  s.client_id = "x";
  EXPECT_FALSE(Client::Create(s));  // no TLS provider
  s.url = "mqtt://127.0.0.1:1";
  s.client_id = "";
  EXPECT_FALSE(Client::Create(s));
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// A real mosquitto with a mutual-TLS listener, our throw-away CA and an ACL that keeps each
// client to torwart/d/<its client id>/#.
class Broker {
 public:
  explicit Broker(const std::string& dir) : dir_(dir), ca_(dir, "mq") {
    server_ = ca_.Issue("broker", {"IP:127.0.0.1", "DNS:localhost"}, nt::Usage::kServer);
    port_ = FreePort();
    nt::WriteFile(dir + "/acl",
                  "user observer\ntopic read torwart/#\n\npattern readwrite torwart/d/%c/#\n");
    nt::WriteFile(dir + "/mosquitto.conf",
                  "per_listener_settings true\nuser root\npersistence false\n"
                  "log_dest stderr\nlog_type error\n"
                  "listener " +
                      std::to_string(port_) +
                      " 127.0.0.1\n"
                      "cafile " +
                      ca_.cert_file() + "\ncertfile " + server_.cert_file + "\nkeyfile " +
                      server_.key_file +
                      "\nrequire_certificate true\nuse_identity_as_username true\n"
                      "tls_version tlsv1.3\nacl_file " +
                      dir + "/acl\n");
  }
  ~Broker() { Kill(); }
  static bool Available() { return std::filesystem::exists("/usr/sbin/mosquitto"); }
  void Start() {
    pid_ = fork();
    if (pid_ == 0) {
      execl("/usr/sbin/mosquitto", "mosquitto", "-c", (dir_ + "/mosquitto.conf").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait until it listens.
    for (int i = 0; i < 100; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port_));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
      if (ok) return;
      std::this_thread::sleep_for(50ms);
    }
    FAIL() << "mosquitto did not start";
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  std::string url() const { return "mqtts://127.0.0.1:" + std::to_string(port_); }
  nt::TestCa& ca() { return ca_; }

 private:
  std::string dir_;
  nt::TestCa ca_;
  nt::Issued server_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// Collects what a client sees, so tests can wait for it.
struct Probe {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Message> messages;
  std::vector<State> states;

  void Attach(Client& c) {
    c.OnMessage([this](const Message& m) {
      std::lock_guard lock(mu);
      messages.push_back(m);
      cv.notify_all();
    });
  }
  template <class Pred>
  bool WaitFor(Pred p, std::chrono::milliseconds d = 10s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, d, [&] { return p(); });
  }
};

std::unique_ptr<Client> MakeClient(Broker& b, const std::string& id, Probe& probe,
                                   std::optional<Will> will = std::nullopt) {
  auto issued = b.ca().Issue(id, {}, nt::Usage::kClient);
  ClientSettings s;
  s.url = b.url();
  s.client_id = id;
  s.will = std::move(will);
  s.keepalive = 5s;
  s.backoff_base = 100ms;
  s.backoff_cap = 400ms;
  std::string ca_file = b.ca().cert_file();
  auto pem = issued.cert_pem;
  auto key = std::shared_ptr<EVP_PKEY>(issued.key.release(), EVP_PKEY_free);
  s.tls = [ca_file, pem, key]() {
    return MakeMqttTlsContext(ca_file, "127.0.0.1", pem, key.get());
  };
  auto c = Client::Create(std::move(s));
  EXPECT_TRUE(c) << (c ? "" : c.error().message());
  probe.Attach(**c);
  (*c)->OnConnection([&probe](const ConnectionEvent& e) {
    std::lock_guard lock(probe.mu);
    probe.states.push_back(e.state);
    probe.cv.notify_all();
  });
  return std::move(*c);
}

bool WaitConnected(Client& c, std::chrono::milliseconds d = 10s) {
  auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
    if (c.state() == State::kConnected) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST(MqttClient, RequestResponseWillAndReconnect) {
  if (!Broker::Available()) GTEST_SKIP() << "mosquitto not installed";
  nt::TempDir dir;
  Broker broker(dir.path());
  broker.Start();

  Probe pa, pb;
  auto a = MakeClient(broker, "dev-a", pa);
  auto b = MakeClient(broker, "dev-b", pb, Will{topics::Status("dev-b"), "offline", 1, false});
  ASSERT_TRUE(a->Start());
  ASSERT_TRUE(b->Start());
  ASSERT_TRUE(WaitConnected(*a));
  ASSERT_TRUE(WaitConnected(*b));

  // Request/response properties survive the round trip (to ourselves: the ACL allows only our
  // own topics).
  ASSERT_TRUE(a->Subscribe("torwart/d/dev-a/#"));
  std::this_thread::sleep_for(200ms);
  PublishOptions po;
  po.properties.response_topic = "torwart/d/dev-a/res";
  po.properties.correlation_data = std::string("\x01\x00\xff", 3);
  po.properties.user_properties = {{"k", "v"}, {"k2", "v2"}};
  ASSERT_TRUE(a->Publish("torwart/d/dev-a/cmd", R"({"v":1,"cmd":"ping"})", po));
  ASSERT_TRUE(pa.WaitFor([&] { return !pa.messages.empty(); }));
  {
    std::lock_guard lock(pa.mu);
    const Message& m = pa.messages.front();
    EXPECT_EQ(m.topic, "torwart/d/dev-a/cmd");
    EXPECT_EQ(m.payload, R"({"v":1,"cmd":"ping"})");
    EXPECT_EQ(m.properties.response_topic, "torwart/d/dev-a/res");
    EXPECT_EQ(m.properties.correlation_data, std::string("\x01\x00\xff", 3));
    ASSERT_EQ(m.properties.user_properties.size(), 2u);
    EXPECT_EQ(m.properties.user_properties[1].second, "v2");
  }

  // The ACL keeps dev-a out of dev-b's topics: publishing there is dropped by the broker.
  ASSERT_TRUE(b->Subscribe("torwart/d/dev-b/#"));
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(a->Publish("torwart/d/dev-b/cmd", "intruder"));
  std::this_thread::sleep_for(300ms);
  {
    std::lock_guard lock(pb.mu);
    EXPECT_TRUE(pb.messages.empty());
  }

  // A network loss fires the will (seen by an observer allowed to read everything); the client
  // reconnects by itself.
  Probe po2;
  auto observer = MakeClient(broker, "observer", po2);
  ASSERT_TRUE(observer->Start());
  ASSERT_TRUE(WaitConnected(*observer));
  ASSERT_TRUE(observer->Subscribe("torwart/d/+/status"));
  std::this_thread::sleep_for(200ms);
  b->SimulateNetworkLoss();
  ASSERT_TRUE(po2.WaitFor([&] {
    for (auto& m : po2.messages) {
      if (m.topic == "torwart/d/dev-b/status" && m.payload == "offline") return true;
    }
    return false;
  }));
  ASSERT_TRUE(pb.WaitFor([&] { return b->stats().connects >= 2; }));
  // A clean Stop() sends DISCONNECT: no will.
  size_t seen = po2.messages.size();
  b->Stop();
  std::this_thread::sleep_for(500ms);
  {
    std::lock_guard lock(po2.mu);
    EXPECT_EQ(po2.messages.size(), seen);
  }
  auto& c = a;
  Probe& pc = pa;

  // Broker dies and comes back: the client reconnects by itself within its (small) backoff.
  broker.Kill();
  ASSERT_TRUE(pc.WaitFor([&] { return c->state() != State::kConnected; }));
  broker.Start();
  ASSERT_TRUE(pc.WaitFor([&] { return c->stats().connects >= 2; }, 15s));

  // Reconnect() picks a fresh TLS context and connects again at once.
  c->Reconnect();
  ASSERT_TRUE(pc.WaitFor([&] { return c->stats().connects >= 3; }));
  c->Stop();
  EXPECT_EQ(c->state(), State::kStopped);
  observer->Stop();
}

TEST(MqttClient, UnknownCaIsRefusedAndRetried) {
  if (!Broker::Available()) GTEST_SKIP() << "mosquitto not installed";
  nt::TempDir dir;
  Broker broker(dir.path());
  broker.Start();
  nt::TempDir other_dir;
  nt::TestCa other(other_dir.path(), "other");
  auto issued = other.Issue("dev-x", {}, nt::Usage::kClient);
  ClientSettings s;
  s.url = broker.url();
  s.client_id = "dev-x";
  s.backoff_base = 50ms;
  s.backoff_cap = 100ms;
  std::string ca_file = broker.ca().cert_file();
  auto key = std::shared_ptr<EVP_PKEY>(issued.key.release(), EVP_PKEY_free);
  std::string pem = issued.cert_pem;
  s.tls = [ca_file, pem, key]() {
    return MakeMqttTlsContext(ca_file, "127.0.0.1", pem, key.get());
  };
  auto c = Client::Create(std::move(s));
  ASSERT_TRUE(c);
  ASSERT_TRUE((*c)->Start());
  auto end = std::chrono::steady_clock::now() + 10s;
  while ((*c)->stats().connect_attempts < 3 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE((*c)->stats().connect_attempts, 3u);
  EXPECT_EQ((*c)->stats().connects, 0u);
  EXPECT_FALSE((*c)->stats().last_error.empty());
  (*c)->Stop();
}

}  // namespace
}  // namespace torwart::mqtt
