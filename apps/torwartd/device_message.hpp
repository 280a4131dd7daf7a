// Strict parser for the messages devices publish on the control channel (topics and payloads in
// docs/design/control-channel.md). Pure: no I/O, no state; thread-safe. Everything it receives
// is untrusted (fuzzed by tests/fuzz/fuzz_device_message.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "torwart/core/error.hpp"

namespace torwart::server {

inline constexpr size_t kMaxDeviceMessageBytes = 64 * 1024;
inline constexpr int kMaxDeviceMessageDepth = 16;

enum class DeviceTopic { kStatus, kInventory, kHealth, kResponse, kEvent };

// The agent event types torwartd accepts on torwart/d/<uuid>/event; anything else is rejected.
inline constexpr const char* kAgentEventTypes[] = {
    "tunnel.request_refused", "tunnel.stream_refused", "tunnel.stream_end", "consent.changed",
    "quarantine.changed"};

// An event the agent reports (docs/design/control-channel.md, "Agent events").
struct AgentEvent {
  std::string type;    // one of kAgentEventTypes
  std::string stream;  // "st-" + 16 hex, or ""
  std::string grant;   // "ar-" + 12 hex, or ""
  std::string user;    // technician the grant belongs to, or ""
  std::string target;  // target name, or ""
  std::string detail = "{}";  // the validated detail object, re-serialised compactly
};

struct DeviceMessage {
  std::string device_id;  // UUID from the topic (the broker guarantees the sender owns it)
  DeviceTopic kind = DeviceTopic::kStatus;
  std::optional<int64_t> ts;  // device's clock, Unix seconds
  // status
  bool online = false;
  std::string agent_version;
  // inventory and health: the validated payload, re-serialised compactly
  std::string json;
  // response
  bool ok = false;
  std::string result;  // JSON of "result" (ok) or "" ; error text in `error`
  std::string error;
  std::string code;  // response, !ok: the optional "code" (consent, not_allowed, ...), <= 32
  // event (ts is required for events)
  AgentEvent event;
};

// "torwart/d/<uuid>/<status|inventory|health|res|event>" -> uuid and kind; kInvalidArgument
// otherwise.
Expected<std::pair<std::string, DeviceTopic>> ParseDeviceTopic(std::string_view topic);

// Validates topic and payload. Errors are kInvalidArgument with a short reason for the log and
// the audit event (never the payload itself).
Expected<DeviceMessage> ParseDeviceMessage(std::string_view topic, std::string_view payload);

const char* DeviceTopicName(DeviceTopic t);

}  // namespace torwart::server
