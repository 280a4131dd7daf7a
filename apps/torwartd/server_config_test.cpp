#include "server_config.hpp"

#include <gtest/gtest.h>

namespace torwart::server {
namespace {

TEST(ServerConfigTest, DefaultsWithoutFile) {
  ConfigReader r;
  ServerConfig c;
  ASSERT_TRUE(ReadConfig(r, c));
  EXPECT_EQ(c.listen_port, 8443);
  EXPECT_EQ(c.device_lifetime, std::chrono::hours(24 * 30));
}

TEST(ServerConfigTest, ReadsValuesAndReportsAllErrorsWithPositions) {
  auto r = ConfigReader::FromString(
      "[server]\nlisten = \"0.0.0.0:9443\"\n[pki]\ndevice_lifetime = \"60s\"\n"
      "[auth]\nmax_failed_logins = 0\nlockout_typo = \"1m\"\n[log]\nlevel = \"loud\"\n",
      "torwartd.toml");
  ASSERT_TRUE(r);
  ServerConfig c;
  auto res = ReadConfig(*r, c);
  ASSERT_FALSE(res);
  const std::string& m = res.error().message();
  EXPECT_NE(m.find("torwartd.toml:7:1: unknown key 'auth.lockout_typo'"), std::string::npos) << m;
  EXPECT_NE(m.find("torwartd.toml:6:"), std::string::npos) << m;  // max_failed_logins range
  EXPECT_NE(m.find("torwartd.toml:9:"), std::string::npos) << m;  // log.level
  EXPECT_EQ(c.listen_port, 9443);
  EXPECT_EQ(c.device_lifetime, std::chrono::seconds(60));
}

TEST(ServerConfigTest, ReadsWebhooksAndRejectsUnknownKeysInThem) {
  auto r = ConfigReader::FromString(R"(
[[webhooks]]
url = "https://hooks.example/torwart"
secret = "0123456789abcdef"
events = ["access.requested", "access.decided"]

[[webhooks]]
url = "http://127.0.0.1:9/x"
secret = "fedcba9876543210"
)",
                                    "t.toml");
  ASSERT_TRUE(r);
  ServerConfig cfg;
  ASSERT_TRUE(ReadConfig(*r, cfg));
  ASSERT_EQ(cfg.webhooks.size(), 2u);
  EXPECT_EQ(cfg.webhooks[0].url, "https://hooks.example/torwart");
  EXPECT_EQ(cfg.webhooks[0].events, (std::vector<std::string>{"access.requested", "access.decided"}));
  EXPECT_TRUE(cfg.webhooks[1].events.empty());

  auto bad = ConfigReader::FromString(R"(
[[webhooks]]
url = "ftp://x"
secret = "short"
sekret = "typo"
)",
                                      "bad.toml");
  ASSERT_TRUE(bad);
  ServerConfig cfg2;
  auto res = ReadConfig(*bad, cfg2);
  ASSERT_FALSE(res);
  const std::string msg = res.error().message();
  EXPECT_NE(msg.find("unknown key 'webhooks[0].sekret'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("webhooks[0].url"), std::string::npos) << msg;
  EXPECT_NE(msg.find("webhooks[0].secret"), std::string::npos) << msg;
}

TEST(ServerConfigTest, ReadsTheRelayAndRejectsBadAddresses) {
  {
    ConfigReader r;
    ServerConfig c;
    ASSERT_TRUE(ReadConfig(r, c));
    EXPECT_TRUE(c.relay.enabled);
    EXPECT_EQ(c.relay.listen, "127.0.0.1:8444");
    EXPECT_EQ(c.relay.public_address, "");
    EXPECT_EQ(c.relay.pair_timeout, std::chrono::seconds(10));
  }
  {
    auto r = ConfigReader::FromString(
        "[relay]\nenabled = false\nlisten = \"0.0.0.0:0\"\n"
        "public_address = \"relay.example:443\"\npair_timeout = \"30s\"\n",
        "t.toml");
    ASSERT_TRUE(r);
    ServerConfig c;
    ASSERT_TRUE(ReadConfig(*r, c));
    EXPECT_FALSE(c.relay.enabled);
    EXPECT_EQ(c.relay.listen, "0.0.0.0:0");
    EXPECT_EQ(c.relay.public_address, "relay.example:443");
    EXPECT_EQ(c.relay.pair_timeout, std::chrono::seconds(30));
  }
  {
    auto r = ConfigReader::FromString(
        "[relay]\nlisten = \"nowhere\"\npublic_address = \"relay.example:0\"\n"
        "pair_timeout = \"0s\"\nport = 1\n",
        "t.toml");
    ASSERT_TRUE(r);
    ServerConfig c;
    auto res = ReadConfig(*r, c);
    ASSERT_FALSE(res);
    const std::string& m = res.error().message();
    EXPECT_NE(m.find("t.toml:2:"), std::string::npos) << m;  // listen
    EXPECT_NE(m.find("t.toml:3:"), std::string::npos) << m;  // public_address without a port
    EXPECT_NE(m.find("t.toml:4:"), std::string::npos) << m;  // pair_timeout below 1 s
    EXPECT_NE(m.find("unknown key 'relay.port'"), std::string::npos) << m;
  }
}

TEST(ServerConfigTest, RecordingsMaxUpload) {
  {
    ConfigReader r;
    ServerConfig c;
    ASSERT_TRUE(ReadConfig(r, c));
    EXPECT_EQ(c.recordings.max_upload, uint64_t{256} << 20);
  }
  {
    auto r = ConfigReader::FromString("[recordings]\nmax_upload = \"64MiB\"\n", "t.toml");
    ASSERT_TRUE(r);
    ServerConfig c;
    ASSERT_TRUE(ReadConfig(*r, c));
    EXPECT_EQ(c.recordings.max_upload, uint64_t{64} << 20);
  }
  for (const char* bad : {"\"lots\"", "\"2GiB\"", "\"12\"", "\"5 MiB\""}) {
    auto r = ConfigReader::FromString(std::string("[recordings]\nmax_upload = ") + bad + "\n",
                                      "t.toml");
    ASSERT_TRUE(r);
    ServerConfig c;
    auto res = ReadConfig(*r, c);
    ASSERT_FALSE(res) << bad;
    EXPECT_NE(res.error().message().find("t.toml:2:"), std::string::npos) << bad;
  }
  EXPECT_EQ(*ParseByteSize("1GiB"), uint64_t{1} << 30);
  EXPECT_EQ(*ParseByteSize("3kB"), 3000u);
  EXPECT_EQ(*ParseByteSize("77"), 77u);
  EXPECT_FALSE(ParseByteSize("MiB"));
  EXPECT_FALSE(ParseByteSize("99999999999999999999GiB"));
}

TEST(ServerConfigTest, ListenParsing) {
  std::string a;
  uint16_t p = 0;
  ASSERT_TRUE(ParseListen("[::1]:8443", a, p));
  EXPECT_EQ(a, "::1");
  EXPECT_EQ(p, 8443);
  EXPECT_FALSE(ParseListen("localhost", a, p));
  EXPECT_FALSE(ParseListen("localhost:99999", a, p));
}

}  // namespace
}  // namespace torwart::server
