#include "torwart/audit/syslog.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace torwart::audit {
namespace {

constexpr int kFacilityLogAudit = 13;

// PRINTUSASCII (33..126) only, at most `max` characters; "-" when empty (RFC 5424 NILVALUE).
std::string Header(std::string_view s, size_t max) {
  std::string out;
  for (char c : s) {
    if (out.size() >= max) break;
    unsigned char u = static_cast<unsigned char>(c);
    out.push_back(u >= 33 && u <= 126 ? c : '_');
  }
  return out.empty() ? "-" : out;
}

// PARAM-VALUE: escape '"', '\' and ']'; control bytes become '?'. UTF-8 passes through.
std::string ParamValue(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\' || c == ']') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 32 || u == 127) {
      out.push_back('?');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string Timestamp(TimePoint t) {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  long frac = static_cast<long>(us % 1000000);
  if (frac < 0) {
    frac += 1000000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

}  // namespace

std::string FormatRfc5424(const Event& e, const SyslogOptions& o) {
  const int severity = e.result == Result::kSuccess ? 6 : 4;
  std::string m = "<" + std::to_string(kFacilityLogAudit * 8 + severity) + ">1 ";
  m += Timestamp(e.time) + " ";
  m += Header(o.hostname, 255) + " ";
  m += Header(o.app_name, 48) + " - ";
  m += Header(e.type, 32) + " ";
  m += "[" + Header(o.sd_id, 32);
  auto param = [&](std::string_view name, std::string_view value) {
    m += " ";
    m += name;
    m += "=\"";
    m += ParamValue(value);
    m += "\"";
  };
  param("seq", std::to_string(e.seq));
  param("schema", std::to_string(e.schema));
  param("hash", e.hash);
  param("category", e.category);
  param("result", ToString(e.result));
  param("actor_type", ToString(e.actor_type));
  param("actor", e.actor);
  param("org", e.organisation);
  param("src", e.source);
  param("target", e.target);
  m += "] \xEF\xBB\xBF";
  m += ToJson(e);
  return m;
}

std::string FrameOctetCounted(std::string_view message) {
  std::string f = std::to_string(message.size());
  f += ' ';
  f += message;
  return f;
}

std::optional<std::string> ParseOctetCounted(std::string_view in, size_t& consumed,
                                             bool& malformed) {
  malformed = false;
  size_t i = 0;
  size_t len = 0;
  while (i < in.size() && in[i] >= '0' && in[i] <= '9') {
    if (i >= 9) {  // more than 999,999,999 octets: refuse
      malformed = true;
      return std::nullopt;
    }
    len = len * 10 + static_cast<size_t>(in[i] - '0');
    ++i;
  }
  if (i == in.size()) return std::nullopt;
  if (i == 0 || in[i] != ' ' || in[0] == '0') {
    malformed = true;
    return std::nullopt;
  }
  ++i;
  if (in.size() - i < len) return std::nullopt;
  consumed = i + len;
  return std::string(in.substr(i, len));
}

}  // namespace torwart::audit
