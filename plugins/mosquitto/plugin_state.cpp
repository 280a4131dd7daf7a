#include "plugin_state.hpp"

#include <charconv>
#include <vector>

namespace torwart::broker_plugin {
namespace {

bool IsHex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!ok) return false;
  }
  return true;
}

bool ParseInt(std::string_view s, int64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out >= 0;
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

constexpr std::string_view kHeader = "torwart-broker-state v1";

}  // namespace

std::string NormalizeSerial(std::string_view hex) {
  if (!IsHex(hex) || hex.size() > 128) return {};
  size_t i = 0;
  while (i + 1 < hex.size() && hex[i] == '0') ++i;
  std::string out(hex.substr(i));
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsLowerUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

bool ParseState(std::string_view text, State& out, std::string& error) {
  State s;
  size_t line_no = 0;
  bool header = false, end = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++line_no;
    auto where = [&] { return "line " + std::to_string(line_no) + ": "; };
    if (end) {
      error = where() + "content after 'end'";
      return false;
    }
    if (!header) {
      if (line != kHeader) {
        error = "missing header '" + std::string(kHeader) + "'";
        return false;
      }
      header = true;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    auto f = Fields(line);
    if (f[0] == "end" && f.size() == 1) {
      end = true;
    } else if (f[0] == "generated" && f.size() == 2) {
      if (!ParseInt(f[1], s.generated)) {
        error = where() + "bad time";
        return false;
      }
    } else if (f[0] == "server" && f.size() == 2) {
      if (f[1].size() != 64 || !IsHex(f[1])) {
        error = where() + "server fingerprint must be 64 hex digits";
        return false;
      }
      std::string fp(f[1]);
      for (char& c : fp) c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
      s.server_fingerprints.insert(fp);
    } else if (f[0] == "cert" && f.size() == 4) {
      std::string serial = NormalizeSerial(f[1]);
      AllowedCert c;
      c.uuid = std::string(f[2]);
      if (serial.empty()) {
        error = where() + "bad serial";
        return false;
      }
      if (!IsLowerUuid(c.uuid)) {
        error = where() + "bad device UUID";
        return false;
      }
      if (!ParseInt(f[3], c.not_after)) {
        error = where() + "bad not_after";
        return false;
      }
      s.certs[serial] = std::move(c);
    } else {
      error = where() + "unknown or malformed entry";
      return false;
    }
  }
  if (!header) {
    error = "empty state file";
    return false;
  }
  if (!end) {
    error = "state file is truncated (no 'end' line)";
    return false;
  }
  out = std::move(s);
  return true;
}

std::string FormatState(const State& s) {
  std::string out(kHeader);
  out += "\ngenerated " + std::to_string(s.generated) + "\n";
  for (const auto& fp : s.server_fingerprints) out += "server " + fp + "\n";
  for (const auto& [serial, c] : s.certs) {
    out += "cert " + serial + " " + c.uuid + " " + std::to_string(c.not_after) + "\n";
  }
  out += "end\n";
  return out;
}

bool DeviceMayAccess(std::string_view uuid, std::string_view topic, int access) {
  if (!IsLowerUuid(uuid)) return false;
  if (access == kAclUnsubscribe) return true;
  constexpr std::string_view kPrefix = "torwart/d/";
  if (topic.size() <= kPrefix.size() + uuid.size() + 1 ||
      topic.substr(0, kPrefix.size()) != kPrefix ||
      topic.substr(kPrefix.size(), uuid.size()) != uuid ||
      topic[kPrefix.size() + uuid.size()] != '/') {
    return false;
  }
  std::string_view leaf = topic.substr(kPrefix.size() + uuid.size() + 1);
  switch (access) {
    case kAclWrite:
      return leaf == "status" || leaf == "inventory" || leaf == "health" || leaf == "res" ||
             leaf == "event";
    case kAclRead:
    case kAclSubscribe:
      return leaf == "cmd";
    default:
      return false;
  }
}

}  // namespace torwart::broker_plugin
