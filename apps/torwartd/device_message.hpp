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

enum class DeviceTopic { kStatus, kInventory, kHealth, kResponse };

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
};

// "torwart/d/<uuid>/<status|inventory|health|res>" -> uuid and kind; kInvalidArgument otherwise.
Expected<std::pair<std::string, DeviceTopic>> ParseDeviceTopic(std::string_view topic);

// Validates topic and payload. Errors are kInvalidArgument with a short reason for the log and
// the audit event (never the payload itself).
Expected<DeviceMessage> ParseDeviceMessage(std::string_view topic, std::string_view payload);

const char* DeviceTopicName(DeviceTopic t);

}  // namespace torwart::server
