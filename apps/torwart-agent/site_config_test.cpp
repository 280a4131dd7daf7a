#include "site_config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace torwart::agent {
namespace {

constexpr char kExample[] = R"(# the site operator's file
[[target]]
name = "presse-1-plc"
address = "10.20.1.11:502"
protocol = "modbus"
site = "werk-nord"

[[target]]
name = "hmi"
address = "[fd00::5]:443"
protocol = "https"
consent = true

[consent]
input = "/sys/class/gpio/gpio17/value"

[streams]
idle_timeout = "5m"
recording_quota = "512MiB"
max_streams = 4
)";

TEST(SiteConfig, ParsesTheDocumentedExample) {
  auto sc = ParseSiteConfig(kExample, "site.toml");
  ASSERT_TRUE(sc) << sc.error().message();
  EXPECT_TRUE(sc->present);
  ASSERT_EQ(sc->targets.size(), 2u);
  const SiteTarget* plc = sc->Find("presse-1-plc");
  ASSERT_NE(plc, nullptr);
  EXPECT_EQ(plc->host, "10.20.1.11");
  EXPECT_EQ(plc->port, 502);
  EXPECT_EQ(plc->protocol, "modbus");
  EXPECT_EQ(plc->site, "werk-nord");
  EXPECT_FALSE(plc->consent);
  const SiteTarget* hmi = sc->Find("hmi");
  ASSERT_NE(hmi, nullptr);
  EXPECT_EQ(hmi->host, "fd00::5");
  EXPECT_EQ(hmi->port, 443);
  EXPECT_TRUE(hmi->consent);
  EXPECT_EQ(hmi->site, "");
  EXPECT_EQ(sc->Find("nope"), nullptr);
  EXPECT_EQ(sc->consent_input, "/sys/class/gpio/gpio17/value");
  EXPECT_EQ(sc->idle_timeout, std::chrono::minutes(5));
  EXPECT_EQ(sc->recording_quota, uint64_t{512} << 20);
  EXPECT_EQ(sc->max_streams, 4u);
}

TEST(SiteConfig, DefaultsAndAnEmptyFile) {
  auto sc = ParseSiteConfig("", "site.toml");
  ASSERT_TRUE(sc);
  EXPECT_TRUE(sc->present);
  EXPECT_TRUE(sc->targets.empty());
  EXPECT_EQ(sc->idle_timeout, std::chrono::minutes(15));
  EXPECT_EQ(sc->recording_quota, uint64_t{1} << 30);
  EXPECT_EQ(sc->max_streams, 16u);
  EXPECT_EQ(sc->consent_input, "");
  auto t = ParseSiteConfig("[[target]]\nname = \"a\"\naddress = \"h:1\"\n", "x");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->targets[0].protocol, "tcp");
}

// Every error names the file, the line and the key.
TEST(SiteConfig, ErrorsCarryLineNumbers) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"[[target]]\nname = \"a\"\naddress = \"h:1\"\ncolour = \"red\"\n", "site.toml:4"},
      {"[[target]]\nname = \"a\"\naddress = \"no-port\"\n", "site.toml:3"},
      {"[[target]]\nname = \"a\"\naddress = \"h:70000\"\n", "port must be 1-65535"},
      {"[[target]]\nname = \"a\"\naddress = \"h:1\"\nprotocol = \"telnet\"\n", "unknown protocol"},
      {"[[target]]\nname = \"a b\"\naddress = \"h:1\"\n", "site.toml:2"},
      {"[[target]]\nname = \"a\"\naddress = \"h:1\"\n[[target]]\nname = \"a\"\naddress = \"h:2\"\n",
       "listed twice"},
      {"[[target]]\naddress = \"h:1\"\n", "needs name"},
      {"[[target]]\nname = \"a\"\n", "needs address"},
      {"[[target]]\nname = \"a\"\naddress = \"h:1\"\nconsent = \"yes\"\n", "true or false"},
      {"[streams]\nrecording_quota = \"lots\"\n", "site.toml:2"},
      {"[streams]\nrecording_quota = \"10KiB\"\n", "at least 1MiB"},
      {"[streams]\nmax_streams = 0\n", "out of range"},
      {"[streams]\nidle_timeout = \"soon\"\n", "site.toml:2"},
      {"[consent]\ninput = \"relative/path\"\n", "absolute path"},
      {"[[target]]\nname = \"a\"\naddress = \"fd00::1:22\"\n", "brackets"},
      {"this is not toml", "site.toml:1"},
  };
  for (const auto& c : cases) {
    auto sc = ParseSiteConfig(c.text, "site.toml");
    ASSERT_FALSE(sc) << c.text;
    EXPECT_NE(sc.error().message().find(c.want), std::string::npos)
        << c.text << "\n→ " << sc.error().message();
  }
  // All problems at once, one per line.
  auto sc = ParseSiteConfig(
      "[[target]]\nname = \"\"\naddress = \"x\"\n[streams]\nmax_streams = -1\n", "site.toml");
  ASSERT_FALSE(sc);
  std::string m = sc.error().message();
  EXPECT_GE(std::count(m.begin(), m.end(), '\n'), 2) << m;
}

TEST(SiteConfig, MissingFileAllowsNothingAndBadFileIsAnError) {
  auto dir = std::filesystem::temp_directory_path() / ("site-cfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto none = LoadSiteConfig((dir / "site.toml").string());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->present);
  EXPECT_TRUE(none->targets.empty());
  std::ofstream(dir / "site.toml") << "[[target]]\nname = \"a\"\naddress = \"1.2.3.4:22\"\n";
  auto one = LoadSiteConfig((dir / "site.toml").string());
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->present);
  EXPECT_NE(one->Find("a"), nullptr);
  std::ofstream(dir / "site.toml") << "[[target]]\nname = 5\n";
  auto bad = LoadSiteConfig((dir / "site.toml").string());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find((dir / "site.toml").string() + ":2"), std::string::npos)
      << bad.error().message();
  std::filesystem::remove_all(dir);
}

TEST(SiteConfig, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("1GiB"), uint64_t{1} << 30);
  EXPECT_EQ(*ParseByteSize("512MiB"), uint64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("100MB"), 100000000u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("2 GB"), 2000000000u);
  for (const char* bad : {"", "GiB", "1XB", "-1", "1.5GiB", "99999999999999999999", "2000TiB"}) {
    EXPECT_FALSE(ParseByteSize(bad)) << bad;
  }
  EXPECT_EQ(FormatByteSize(uint64_t{1} << 30), "1.0 GiB");
  EXPECT_EQ(FormatByteSize(10), "10 B");
}

TEST(SiteConfig, HostPort) {
  auto a = ParseHostPort("relay.example:8444");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->first, "relay.example");
  EXPECT_EQ(a->second, 8444);
  auto b = ParseHostPort("[::1]:22");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->first, "::1");
  for (const char* bad : {"", ":1", "h:", "h:0", "h:x", "::1:22", "[::1]22", "a b:1", "h:123456"}) {
    EXPECT_FALSE(ParseHostPort(bad)) << bad;
  }
}

}  // namespace
}  // namespace torwart::agent
