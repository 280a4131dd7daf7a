#include "device_message.hpp"

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>
#include <vector>

#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;

Error Bad(std::string why) { return Error(Errc::kInvalidArgument, std::move(why)); }

// Nesting depth outside strings; bounded before the JSON parser sees the text.
int Depth(std::string_view s) {
  int depth = 0, max = 0;
  bool in_string = false, escape = false;
  for (char c : s) {
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max = std::max(max, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max;
}

bool IsNonNegativeInt(const json& j) {
  return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0);
}

Expected<void> CheckBytes(const json& h, const char* key) {
  auto it = h.find(key);
  if (it == h.end()) return {};
  if (!it->is_object()) return MakeError(Bad(std::string(key) + " must be an object"));
  for (const char* f : {"total", "used"}) {
    auto v = it->find(f);
    if (v != it->end() && !IsNonNegativeInt(*v)) {
      return MakeError(Bad(std::string(key) + "." + f + " must be a non-negative integer"));
    }
  }
  return {};
}

Expected<void> CheckOptionalString(const json& j, const char* key, size_t max) {
  auto it = j.find(key);
  if (it == j.end()) return {};
  if (!it->is_string()) return MakeError(Bad(std::string(key) + " must be a string"));
  if (it->get_ref<const std::string&>().size() > max) {
    return MakeError(Bad(std::string(key) + " is too long"));
  }
  return {};
}

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsPrefixedHexId(std::string_view s, std::string_view prefix, size_t hex_len) {
  return s.size() == prefix.size() + hex_len && s.substr(0, prefix.size()) == prefix &&
         IsLowerHex(s.substr(prefix.size()));
}

// An optional short identifier-like string without control characters.
Expected<std::string> OptionalName(const json& j, const char* key, size_t max) {
  auto it = j.find(key);
  if (it == j.end()) return std::string();
  if (!it->is_string()) return MakeError(Bad(std::string(key) + " must be a string"));
  const auto& v = it->get_ref<const std::string&>();
  if (v.size() > max) return MakeError(Bad(std::string(key) + " is too long"));
  for (unsigned char c : v) {
    if (c < 0x20 || c == 0x7f) {
      return MakeError(Bad(std::string(key) + " contains control characters"));
    }
  }
  return v;
}

// Typed fields of a detail object: each is checked only when present, unless `required`.
enum class Field { kUint8, kUint16, kCount, kText, kBool, kTimeOrNull };

Expected<void> CheckField(const json& d, const char* key, Field f, bool required) {
  auto it = d.find(key);
  if (it == d.end()) {
    if (required) return MakeError(Bad(std::string("detail.") + key + " is required"));
    return {};
  }
  const std::string name = std::string("detail.") + key;
  auto in_range = [&](uint64_t max) {
    return IsNonNegativeInt(*it) && it->get<uint64_t>() <= max;
  };
  switch (f) {
    case Field::kUint8:
      if (!in_range(255)) return MakeError(Bad(name + " must be an integer 0-255"));
      break;
    case Field::kUint16:
      if (!in_range(65535)) return MakeError(Bad(name + " must be an integer 0-65535"));
      break;
    case Field::kCount:
      if (!IsNonNegativeInt(*it)) return MakeError(Bad(name + " must be a non-negative integer"));
      break;
    case Field::kText:
      if (!it->is_string() || it->get_ref<const std::string&>().size() > 1024) {
        return MakeError(Bad(name + " must be a string of at most 1024 bytes"));
      }
      break;
    case Field::kBool:
      if (!it->is_boolean()) return MakeError(Bad(name + " must be true or false"));
      break;
    case Field::kTimeOrNull:
      if (!it->is_null() && !in_range(uint64_t{1} << 40)) {
        return MakeError(Bad(name + " must be Unix seconds or null"));
      }
      break;
  }
  return {};
}

struct FieldRule {
  const char* key;
  Field type;
  bool required;
};

Expected<void> ParseEvent(const json& j, AgentEvent& ev) {
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) return MakeError(Bad("type must be a string"));
  ev.type = t->get<std::string>();
  if (std::find(std::begin(kAgentEventTypes), std::end(kAgentEventTypes), ev.type) ==
      std::end(kAgentEventTypes)) {
    return MakeError(Bad("unknown event type"));
  }
  auto stream = OptionalName(j, "stream", 64);
  if (!stream) return MakeError(stream.error());
  if (!stream->empty() && !IsPrefixedHexId(*stream, "st-", 16)) {
    return MakeError(Bad("stream must be st- and 16 lowercase hex digits"));
  }
  auto grant = OptionalName(j, "grant", 64);
  if (!grant) return MakeError(grant.error());
  if (!grant->empty() && !IsPrefixedHexId(*grant, "ar-", 12)) {
    return MakeError(Bad("grant must be ar- and 12 lowercase hex digits"));
  }
  auto user = OptionalName(j, "user", 64);
  if (!user) return MakeError(user.error());
  auto target = OptionalName(j, "target", 128);
  if (!target) return MakeError(target.error());
  ev.stream = *stream;
  ev.grant = *grant;
  ev.user = *user;
  ev.target = *target;
  if (ev.type.rfind("tunnel.", 0) == 0 && ev.stream.empty()) {
    return MakeError(Bad(ev.type + " needs the stream id"));
  }

  json detail = json::object();
  if (auto d = j.find("detail"); d != j.end()) {
    if (!d->is_object()) return MakeError(Bad("detail must be an object"));
    detail = *d;
  }
  std::vector<FieldRule> rules;
  if (ev.type == "tunnel.request_refused") {
    rules = {{"function", Field::kUint8, true},
             {"unit", Field::kUint8, false},
             {"transaction", Field::kUint16, false},
             {"reason", Field::kText, false}};
  } else if (ev.type == "tunnel.stream_refused") {
    rules = {{"reason", Field::kText, false}, {"code", Field::kText, false}};
  } else if (ev.type == "tunnel.stream_end") {
    rules = {{"bytes_to_target", Field::kCount, false},
             {"bytes_from_target", Field::kCount, false},
             {"reason", Field::kText, false}};
  } else if (ev.type == "consent.changed") {
    rules = {{"on", Field::kBool, true}, {"until", Field::kTimeOrNull, false}};
  } else if (ev.type == "quarantine.changed") {
    rules = {{"on", Field::kBool, true}, {"reason", Field::kText, false}};
  }
  for (const auto& r : rules) {
    if (auto ok = CheckField(detail, r.key, r.type, r.required); !ok) return ok;
  }
  ev.detail = detail.dump(-1, ' ', false, json::error_handler_t::replace);
  return {};
}

}  // namespace

const char* DeviceTopicName(DeviceTopic t) {
  switch (t) {
    case DeviceTopic::kStatus:
      return "status";
    case DeviceTopic::kInventory:
      return "inventory";
    case DeviceTopic::kHealth:
      return "health";
    case DeviceTopic::kResponse:
      return "res";
    case DeviceTopic::kEvent:
      return "event";
  }
  return "?";
}

Expected<std::pair<std::string, DeviceTopic>> ParseDeviceTopic(std::string_view topic) {
  constexpr std::string_view kPrefix = "torwart/d/";
  if (topic.substr(0, kPrefix.size()) != kPrefix) return MakeError(Bad("not a device topic"));
  topic.remove_prefix(kPrefix.size());
  size_t slash = topic.find('/');
  if (slash == std::string_view::npos) return MakeError(Bad("not a device topic"));
  std::string id(topic.substr(0, slash));
  if (!IsUuid(id)) return MakeError(Bad("device id in topic is not a UUID"));
  std::string_view leaf = topic.substr(slash + 1);
  DeviceTopic kind;
  if (leaf == "status") {
    kind = DeviceTopic::kStatus;
  } else if (leaf == "inventory") {
    kind = DeviceTopic::kInventory;
  } else if (leaf == "health") {
    kind = DeviceTopic::kHealth;
  } else if (leaf == "res") {
    kind = DeviceTopic::kResponse;
  } else if (leaf == "event") {
    kind = DeviceTopic::kEvent;
  } else {
    return MakeError(Bad("unknown device topic"));
  }
  return std::make_pair(std::move(id), kind);
}

Expected<DeviceMessage> ParseDeviceMessage(std::string_view topic, std::string_view payload) {
  auto t = ParseDeviceTopic(topic);
  if (!t) return MakeError(t.error());
  DeviceMessage m;
  m.device_id = t->first;
  m.kind = t->second;
  if (payload.size() > kMaxDeviceMessageBytes) return MakeError(Bad("payload larger than 64 KiB"));
  if (Depth(payload) > kMaxDeviceMessageDepth) return MakeError(Bad("JSON nested too deeply"));
  json j = json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return MakeError(Bad("payload is not valid JSON"));
  if (!j.is_object()) return MakeError(Bad("payload must be a JSON object"));
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer() || v->get<int64_t>() != 1) {
    return MakeError(Bad("unsupported or missing message version (v must be 1)"));
  }
  if (auto ts = j.find("ts"); ts != j.end()) {
    if (!IsNonNegativeInt(*ts)) return MakeError(Bad("ts must be a non-negative integer"));
    if (ts->get<uint64_t>() > (uint64_t{1} << 40)) return MakeError(Bad("ts out of range"));
    m.ts = ts->get<int64_t>();
  }
  switch (m.kind) {
    case DeviceTopic::kStatus: {
      auto st = j.find("state");
      if (st == j.end() || !st->is_string()) return MakeError(Bad("state must be a string"));
      const auto& s = st->get_ref<const std::string&>();
      if (s != "online" && s != "offline") return MakeError(Bad("state must be online or offline"));
      m.online = s == "online";
      if (auto r = CheckOptionalString(j, "agent_version", 64); !r) return MakeError(r.error());
      if (auto av = j.find("agent_version"); av != j.end())
        m.agent_version = av->get<std::string>();
      break;
    }
    case DeviceTopic::kInventory:
      for (const char* k : {"hostname", "os", "agent_version"}) {
        if (auto r = CheckOptionalString(j, k, 256); !r) return MakeError(r.error());
      }
      m.json = j.dump(-1, ' ', false, json::error_handler_t::replace);
      break;
    case DeviceTopic::kHealth: {
      if (auto c = j.find("cpu"); c != j.end()) {
        if (!c->is_number() || c->get<double>() < 0 || c->get<double>() > 100) {
          return MakeError(Bad("cpu must be a percentage 0-100"));
        }
      }
      for (const char* k : {"mem", "disk"}) {
        if (auto r = CheckBytes(j, k); !r) return MakeError(r.error());
      }
      if (auto u = j.find("uptime"); u != j.end()) {
        if (!u->is_number() || u->get<double>() < 0) {
          return MakeError(Bad("uptime must be a non-negative number of seconds"));
        }
      }
      m.json = j.dump(-1, ' ', false, json::error_handler_t::replace);
      break;
    }
    case DeviceTopic::kResponse: {
      auto ok = j.find("ok");
      if (ok == j.end() || !ok->is_boolean()) return MakeError(Bad("ok must be true or false"));
      m.ok = ok->get<bool>();
      if (m.ok) {
        if (auto r = j.find("result"); r != j.end()) {
          m.result = r->dump(-1, ' ', false, json::error_handler_t::replace);
        }
      } else {
        auto e = j.find("error");
        if (e == j.end() || !e->is_string()) return MakeError(Bad("error must be a string"));
        m.error = e->get<std::string>().substr(0, 1024);
        // Optional machine-readable reason (consent, not_allowed, quarantined, busy, ...).
        if (auto c = j.find("code"); c != j.end()) {
          if (!c->is_string() || c->get<std::string>().size() > 32) {
            return MakeError(Bad("code must be a short string"));
          }
          m.code = c->get<std::string>();
        }
      }
      break;
    }
    case DeviceTopic::kEvent: {
      if (!m.ts) return MakeError(Bad("ts is required for events"));
      if (auto r = ParseEvent(j, m.event); !r) return MakeError(r.error());
      break;
    }
  }
  return m;
}

}  // namespace torwart::server
