#include "broker.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "plugin_state.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {
namespace {

TEST(Broker, ConfigHasTwoMutualTlsListenersAndTheGlobalPlugin) {
  BrokerPlan p;
  p.device_address = "127.0.0.1";
  p.device_port = 18883;
  p.server_port = 18884;
  p.cert_file = "/d/pki/server.pem";
  p.key_file = "/d/pki/server.key";
  p.ca_file = "/d/pki/chain.pem";
  p.plugin_path = "/x/libtorwart_mosquitto.so";
  p.state_file = "/d/broker/plugin-state";
  std::string c = MosquittoConfig(p);
  EXPECT_NE(c.find("per_listener_settings false\n"), std::string::npos);
  EXPECT_NE(c.find("listener 18883 127.0.0.1\n"), std::string::npos);
  EXPECT_NE(c.find("listener 18884 127.0.0.1\n"), std::string::npos);
  EXPECT_NE(c.find("plugin_opt_state_file /d/broker/plugin-state\n"), std::string::npos);
  // Both listeners: certificate required, TLS 1.3, the plugin's BASIC_AUTH must run.
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t i = c.find(needle); i != std::string::npos; i = c.find(needle, i + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("require_certificate true\n"), 2u);
  EXPECT_EQ(count("use_identity_as_username false\n"), 2u);
  EXPECT_EQ(count("tls_version tlsv1.3\n"), 2u);
  EXPECT_EQ(count("plugin /x/libtorwart_mosquitto.so\n"), 1u);
  EXPECT_LT(c.find("plugin /x/"), c.find("listener "));
  EXPECT_EQ(c.find("user "), std::string::npos);
}

TEST(Broker, ConfigKeysAreReadAndChecked) {
  auto r = ConfigReader::FromString(
      "[broker]\ndevice_listen = \"0.0.0.0:0\"\nexternal = \"mqtts://mq.example:8883\"\n"
      "mosquitto_path = \"/opt/mosquitto\"\nenabled = false\n",
      "t.toml");
  ASSERT_TRUE(r);
  ServerConfig cfg;
  ASSERT_TRUE(ReadConfig(*r, cfg));
  EXPECT_EQ(cfg.broker.device_listen, "0.0.0.0:0");
  EXPECT_EQ(cfg.broker.external, "mqtts://mq.example:8883");
  EXPECT_EQ(cfg.broker.mosquitto_path, "/opt/mosquitto");
  EXPECT_FALSE(cfg.broker.enabled);

  auto bad = ConfigReader::FromString(
      "[broker]\ndevice_listen = \"nope\"\nexternal = \"http://x\"\nfrobnicate = 1\n", "t.toml");
  ASSERT_TRUE(bad);
  ServerConfig cfg2;
  auto e = ReadConfig(*bad, cfg2);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("broker.device_listen"), std::string::npos);
  EXPECT_NE(e.error().message().find("broker.external"), std::string::npos);
  EXPECT_NE(e.error().message().find("frobnicate"), std::string::npos);
}

// The plugin's allowlist: valid and unexpired certificates of devices that are not revoked,
// plus the pinned torwartd certificate; revoked, expired and other devices' certificates out.
TEST(Broker, StateFileListsExactlyTheCertificatesThatMayConnect) {
  auto store = storage::OpenSqlite({.path = ":memory:"});
  ASSERT_TRUE(store);
  FakeClock clock(FromUnix(1795356412));
  ServerConfig cfg;
  Context ctx;
  ctx.config = &cfg;
  ctx.store = store->get();
  ctx.clock = &clock;
  auto add_device = [&](const std::string& name, const std::string& status) {
    storage::Device d;
    d.id = NewUuid();
    d.name = name;
    d.site = "s";
    d.status = status;
    d.created = clock.Now();
    EXPECT_TRUE(ctx.store->devices().Create(d));
    return d.id;
  };
  auto add_cert = [&](const std::string& device, const std::string& serial,
                      std::chrono::seconds left, bool revoked) {
    storage::Certificate c;
    c.serial = serial;
    c.device_id = device;
    c.subject = "CN=" + device;
    c.not_before = clock.Now() - std::chrono::hours(1);
    c.not_after = clock.Now() + left;
    c.pem = "-";
    EXPECT_TRUE(ctx.store->certificates().Insert(c));
    if (revoked) {
      EXPECT_TRUE(ctx.store->certificates().Revoke(serial, 1, clock.Now()));
    }
  };
  const std::string good = add_device("good", "enrolled"), gone = add_device("gone", "revoked");
  add_cert(good, "0a01", std::chrono::hours(1), false);
  add_cert(good, "0a02", std::chrono::hours(1), true);           // revoked certificate
  add_cert(good, "0a03", std::chrono::seconds(-1), false);       // expired
  add_cert(gone, "0b01", std::chrono::hours(1), false);          // device revoked
  add_cert("grant:ar-1", "0c01", std::chrono::hours(1), false);  // not a device

  auto dir = std::filesystem::temp_directory_path() / ("torwart-broker-test-" + NewUuid());
  std::filesystem::create_directories(dir);
  BrokerStateWriter w(ctx, (dir / "state").string());
  w.AddServerFingerprint(std::string(64, 'f'));
  ASSERT_TRUE(w.Write());
  std::ifstream f(dir / "state");
  std::stringstream text;
  text << f.rdbuf();
  broker_plugin::State st;
  std::string error;
  ASSERT_TRUE(broker_plugin::ParseState(text.str(), st, error)) << error;
  ASSERT_EQ(st.certs.size(), 1u) << text.str();
  EXPECT_EQ(st.certs.at("a01").uuid, good);
  EXPECT_EQ(st.certs.at("a01").not_after, ToUnix(clock.Now() + std::chrono::hours(1)));
  EXPECT_EQ(st.server_fingerprints.count(std::string(64, 'f')), 1u);
  EXPECT_EQ(
      std::filesystem::status(dir / "state").permissions() & std::filesystem::perms::others_read,
      std::filesystem::perms::none);

  // Revocation shows on the next write.
  ASSERT_TRUE(ctx.store->certificates().Revoke("0a01", 1, clock.Now()));
  ASSERT_TRUE(w.Write());
  std::ifstream f2(dir / "state");
  std::stringstream text2;
  text2 << f2.rdbuf();
  ASSERT_TRUE(broker_plugin::ParseState(text2.str(), st, error)) << error;
  EXPECT_TRUE(st.certs.empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torwart::server
