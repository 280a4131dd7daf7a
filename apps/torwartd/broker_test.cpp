#include "broker.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace torwart::server
