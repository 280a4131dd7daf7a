#include "site_config.hpp"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "torwart/core/config.hpp"

namespace torwart::agent {
namespace {

const std::set<std::string, std::less<>>& Protocols() {
  static const std::set<std::string, std::less<>> p = {"modbus", "ssh",   "rdp", "vnc",
                                                       "http",   "https", "tcp"};
  return p;
}

bool ValidTargetName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

}  // namespace

const SiteTarget* SiteConfig::Find(std::string_view name) const {
  for (const auto& t : targets) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Expected<uint64_t> ParseByteSize(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  size_t i = 0;
  uint64_t n = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    if (n > (uint64_t{1} << 50)) break;
    n = n * 10 + static_cast<uint64_t>(s[i] - '0');
    ++i;
  }
  if (i == 0) {
    return MakeError(Errc::kInvalidArgument,
                     "size \"" + std::string(text.substr(0, 64)) + "\" must start with a number");
  }
  std::string unit(s.substr(i));
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  uint64_t mult = 0;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "kB" || unit == "KB")
    mult = 1000;
  else if (unit == "MB")
    mult = 1000 * 1000;
  else if (unit == "GB")
    mult = 1000ull * 1000 * 1000;
  else if (unit == "TB")
    mult = 1000ull * 1000 * 1000 * 1000;
  else if (unit == "KiB")
    mult = uint64_t{1} << 10;
  else if (unit == "MiB")
    mult = uint64_t{1} << 20;
  else if (unit == "GiB")
    mult = uint64_t{1} << 30;
  else if (unit == "TiB")
    mult = uint64_t{1} << 40;
  if (mult == 0) {
    return MakeError(Errc::kInvalidArgument,
                     "size \"" + std::string(text.substr(0, 64)) +
                         "\": unknown unit (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  }
  constexpr uint64_t kMax = uint64_t{1} << 50;
  if (n > kMax || n * mult > kMax) {
    return MakeError(Errc::kInvalidArgument,
                     "size \"" + std::string(text.substr(0, 64)) + "\" is larger than 1 PiB");
  }
  return n * mult;
}

std::string FormatByteSize(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(b);
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::ostringstream o;
  o.precision(u == 0 ? 0 : 1);
  o << std::fixed << v << " " << units[u];
  return o.str();
}

Expected<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return MakeError(Errc::kInvalidArgument,
                     "address \"" + std::string(text.substr(0, 128)) + "\": " + why);
  };
  std::string host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("must be [ipv6]:port");
    }
    host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("must be host:port");
    host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos)
      return bad("IPv6 addresses need brackets: [addr]:port");
  }
  if (host.empty() || host.size() > 253) return bad("the host must be 1-253 characters");
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f || c == '/' || c == '[' || c == ']') {
      return bad("the host contains a character that is not allowed");
    }
  }
  if (port.empty() || port.size() > 5) return bad("the port must be 1-65535");
  unsigned p = 0;
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return bad("the port must be a number");
    p = p * 10 + static_cast<unsigned>(c - '0');
  }
  if (p == 0 || p > 65535) return bad("the port must be 1-65535");
  return std::make_pair(host, static_cast<uint16_t>(p));
}

Expected<SiteConfig> ParseSiteConfig(std::string_view text, const std::string& source) {
  auto cr = ConfigReader::FromString(text, source);
  if (!cr) return MakeError(cr.error());
  SiteConfig sc;
  sc.present = true;
  sc.source = source;
  size_t n = cr->TableArraySize("target");
  if (n > 1024) cr->AddError("target", "at most 1024 targets");
  std::set<std::string> names;
  for (size_t i = 0; i < n && i < 1024; ++i) {
    std::string k = "target[" + std::to_string(i) + "].";
    SiteTarget t;
    t.name = cr->String(k + "name", "");
    std::string address = cr->String(k + "address", "");
    t.protocol = cr->String(k + "protocol", "tcp");
    t.consent = cr->Bool(k + "consent", false);
    t.site = cr->String(k + "site", "");
    if (!cr->Has(k + "name")) {
      cr->AddError("target[" + std::to_string(i) + "]", "a [[target]] needs name");
    } else if (!ValidTargetName(t.name)) {
      cr->AddError(k + "name", "must be 1-64 of [A-Za-z0-9._-]");
    } else if (!names.insert(t.name).second) {
      cr->AddError(k + "name", "target \"" + t.name + "\" is listed twice");
    }
    if (!cr->Has(k + "address")) {
      cr->AddError("target[" + std::to_string(i) + "]", "a [[target]] needs address (host:port)");
    } else if (auto hp = ParseHostPort(address); !hp) {
      cr->AddError(k + "address", hp.error().message());
    } else {
      t.host = hp->first;
      t.port = hp->second;
    }
    if (!Protocols().contains(t.protocol)) {
      cr->AddError(k + "protocol", "unknown protocol \"" + t.protocol.substr(0, 32) +
                                       "\" (modbus, ssh, rdp, vnc, http, https or tcp)");
    }
    if (cr->Has(k + "site") && (t.site.empty() || t.site.size() > 256)) {
      cr->AddError(k + "site", "must be 1-256 characters");
    }
    sc.targets.push_back(std::move(t));
  }
  sc.consent_input = cr->String("consent.input", "");
  if (cr->Has("consent.input") && (sc.consent_input.empty() || sc.consent_input.front() != '/')) {
    cr->AddError("consent.input", "must be an absolute path");
  }
  sc.idle_timeout = cr->Seconds("streams.idle_timeout", sc.idle_timeout, std::chrono::seconds(0));
  if (sc.idle_timeout > std::chrono::hours(24 * 7)) {
    cr->AddError("streams.idle_timeout", "at most 7 days");
  }
  std::string quota = cr->String("streams.recording_quota", "");
  if (cr->Has("streams.recording_quota")) {
    auto q = ParseByteSize(quota);
    if (!q) {
      cr->AddError("streams.recording_quota", q.error().message());
    } else if (*q < (uint64_t{1} << 20)) {
      cr->AddError("streams.recording_quota", "must be at least 1MiB");
    } else {
      sc.recording_quota = *q;
    }
  }
  sc.max_streams = static_cast<size_t>(cr->Int("streams.max_streams", 16, 1, 1024));
  if (auto f = cr->Finish(); !f) return MakeError(f.error());
  return sc;
}

Expected<SiteConfig> LoadSiteConfig(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      SiteConfig none;
      none.source = path;
      return none;
    }
    return MakeError(Errc::kIo, "site configuration " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return MakeError(Errc::kInvalidArgument, "site configuration " + path + " is not a file");
  }
  if (st.st_size > (1 << 20)) {
    return MakeError(Errc::kInvalidArgument,
                     "site configuration " + path + " is larger than 1 MiB");
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return MakeError(Errc::kIo, "cannot read site configuration " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ParseSiteConfig(ss.str(), path);
}

}  // namespace torwart::agent
