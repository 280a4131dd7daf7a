// What the agent reports about its machine: inventory (hostname, OS, agent version, hardware,
// network interfaces, key=value attributes from executable scripts in an inventory directory, as
// Mender's inventory scripts) and health telemetry (CPU, memory, disk, uptime). Linux only.
// Functions are thread-compatible; HealthSampler keeps the previous CPU sample (one per thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace torwart::agent {

inline constexpr const char* kAgentVersion = "0.1.0";

// Runs every executable regular file in `script_dir` (sorted by name; no shell, empty
// environment but PATH; 10 s timeout each, 64 KiB output each) and collects "key=value" lines:
// {"key": ["value", ...]}. Other lines and failing scripts are reported under "_errors".
nlohmann::json RunInventoryScripts(const std::string& script_dir);

// Full inventory document {"v":1, hostname, os, agent_version, hardware, interfaces, attributes}.
nlohmann::json CollectInventory(const std::string& script_dir);

// Seconds since the epoch, UTC: the "ts" of every control-channel message.
int64_t UnixSeconds();

class HealthSampler {
 public:
  // {"v":1,"ts":s,"cpu":percent,"load":[1,5,15],"mem":{total,used},"disk":{total,used,path},
  // "uptime":s} (docs/design/control-channel.md)
  // cpu percent is over the interval since the previous call (0 on the first).
  nlohmann::json Sample(const std::string& disk_path);

 private:
  uint64_t prev_total_ = 0, prev_idle_ = 0;
};

}  // namespace torwart::agent
