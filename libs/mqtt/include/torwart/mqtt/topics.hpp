// The device topic scheme of the control channel (docs/design/control-channel.md) and the
// helpers both sides use to build and take apart topic names. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace torwart::mqtt::topics {

inline constexpr std::string_view kPrefix = "torwart/d/";

// torwart/d/<uuid>/<leaf>; leaf is one of status, inventory, health, res, cmd.
inline std::string Device(std::string_view uuid, std::string_view leaf) {
  std::string t(kPrefix);
  t.append(uuid).append("/").append(leaf);
  return t;
}
inline std::string Status(std::string_view uuid) { return Device(uuid, "status"); }
inline std::string Inventory(std::string_view uuid) { return Device(uuid, "inventory"); }
inline std::string Health(std::string_view uuid) { return Device(uuid, "health"); }
inline std::string Response(std::string_view uuid) { return Device(uuid, "res"); }
inline std::string Command(std::string_view uuid) { return Device(uuid, "cmd"); }

struct DeviceTopic {
  std::string uuid;
  std::string leaf;
};
// Splits "torwart/d/<uuid>/<leaf>"; nullopt for anything else (more levels, empty parts).
inline std::optional<DeviceTopic> ParseDevice(std::string_view topic) {
  if (topic.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  topic.remove_prefix(kPrefix.size());
  auto slash = topic.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  std::string_view uuid = topic.substr(0, slash), leaf = topic.substr(slash + 1);
  if (leaf.empty() || leaf.find('/') != std::string_view::npos) return std::nullopt;
  return DeviceTopic{std::string(uuid), std::string(leaf)};
}

}  // namespace torwart::mqtt::topics
