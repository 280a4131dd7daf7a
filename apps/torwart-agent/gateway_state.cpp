#include "gateway_state.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "torwart/pki/x509.hpp"

namespace torwart::agent {
namespace {
using nlohmann::json;
}  // namespace

std::optional<std::string> ReadSmallFile(const std::string& path, size_t max) {
  // O_NONBLOCK: a GPIO or FIFO path must never hang the agent.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < max) {
    ssize_t n = ::read(fd, buf, std::min(sizeof buf, max - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

ConsentState EvaluateConsent(const std::optional<std::string>& consent_json,
                             const std::optional<std::string>& input_value, int64_t now) {
  ConsentState s;
  if (consent_json) {
    json j = json::parse(*consent_json, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("until") ||
        !j["until"].is_number_integer()) {
      s.problem = "consent.json is corrupt (consent counts as off)";
    } else {
      int64_t until = j["until"].get<int64_t>();
      if (until > now) {
        s.switch_on = true;
        s.until = until;
      }
    }
  }
  if (input_value) {
    std::string v = *input_value;
    auto nl = v.find_first_of("\r\n");
    if (nl != std::string::npos) v.resize(nl);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
    s.input_on = v == "1";
  }
  s.on = s.switch_on || s.input_on;
  return s;
}

ConsentState ReadConsent(const std::string& state_dir, const std::string& input_path, int64_t now) {
  std::optional<std::string> input;
  if (!input_path.empty()) input = ReadSmallFile(input_path, 64);
  ConsentState s = EvaluateConsent(ReadSmallFile(state_dir + "/consent.json"), input, now);
  s.input = input_path;
  if (!input_path.empty() && !input) {
    if (!s.problem.empty()) s.problem += "; ";
    s.problem += "consent input " + input_path + " is not readable (counts as off)";
  }
  return s;
}

Expected<void> WriteConsentOn(const std::string& state_dir, int64_t until, int64_t now) {
  json j{{"v", 1}, {"until", until}, {"set_at", now}};
  return pki::WriteFileAtomic(state_dir + "/consent.json", j.dump() + "\n",
                              std::filesystem::perms(0644));
}

Expected<void> WriteConsentOff(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::remove(state_dir + "/consent.json", ec);
  if (ec) return MakeError(Errc::kIo, "removing " + state_dir + "/consent.json: " + ec.message());
  return {};
}

QuarantineState ParseQuarantine(const std::optional<std::string>& text) {
  QuarantineState q;
  if (!text) return q;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("on") || !j["on"].is_boolean()) {
    q.on = true;
    q.reason = "quarantine.json is corrupt (treated as quarantined)";
    return q;
  }
  q.on = j["on"].get<bool>();
  if (j.contains("reason") && j["reason"].is_string()) q.reason = j["reason"].get<std::string>();
  if (j.contains("since") && j["since"].is_number_integer()) q.since = j["since"].get<int64_t>();
  return q;
}

QuarantineState ReadQuarantine(const std::string& state_dir) {
  return ParseQuarantine(ReadSmallFile(state_dir + "/quarantine.json"));
}

Expected<void> WriteQuarantine(const std::string& state_dir, const QuarantineState& q) {
  json j{{"v", 1}, {"on", q.on}, {"reason", q.reason}, {"since", q.since}};
  return pki::WriteFileAtomic(state_dir + "/quarantine.json",
                              j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                              std::filesystem::perms(0600));
}

}  // namespace torwart::agent
