// The agent's control-channel session: one MQTT 5 connection (mutual TLS with the device
// certificate) that announces the device online (retained status; the last will says offline),
// publishes its inventory on connect and when it changes, health telemetry periodically, and
// answers commands on torwart/d/<uuid>/cmd via MQTT 5 request/response.
// Thread-safety: all public methods may be called from any thread (CLI handlers, renewal loop).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "torwart/core/error.hpp"
#include "torwart/mqtt/client.hpp"

namespace torwart::agent {

struct SessionSettings {
  std::string device_id;
  std::string mqtt_url;
  std::string server;  // torwartd URL, for `info`
  std::string profile;
  mqtt::TlsContextProvider tls;
  std::chrono::seconds keepalive{30};
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_cap{60000};
  std::chrono::seconds health_interval{60};
  std::chrono::seconds inventory_check_interval{300};
  std::string inventory_dir;
  std::string disk_path = "/";
  // Further command handlers (the tunnel manager: stream.open, stream.kill, quarantine), asked
  // first on the network thread; nullopt = not theirs. Must not block for long.
  std::function<std::optional<nlohmann::json>(const std::string& cmd, const nlohmann::json& args)>
      commands;
  // Called on the network thread after every (re)connect (e.g. flush queued events).
  std::function<void()> on_connected;
};

class Session {
 public:
  static Expected<std::unique_ptr<Session>> Create(SessionSettings settings);
  ~Session();  // Stop()

  Expected<void> Start();  // connect (and keep reconnecting)
  void Stop();             // clean disconnect: status offline published first, no will
  void Reconnect();        // new TLS context (renewed certificate), connect at once
  bool running() const;

  // {"state":"connected", "mqtt_url":..., "connects":n, "last_error":..., ...}
  nlohmann::json Status() const;

  // Publishes on torwart/d/<uuid>/<leaf> (e.g. "event"); kUnavailable while not connected.
  Expected<void> Publish(const std::string& leaf, const std::string& payload, int qos = 1);
  bool connected() const;

 private:
  Session() = default;
  void OnConnection(const mqtt::ConnectionEvent& e);
  void OnMessage(const mqtt::Message& m);
  void PublishStatus(const char* state);
  void PublishInventory(bool force);
  void TelemetryLoop();
  nlohmann::json HandleCommand(const std::string& cmd, const nlohmann::json& args);

  SessionSettings settings_;
  std::unique_ptr<mqtt::Client> client_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false;
  bool stop_telemetry_ = false;
  bool connected_event_ = false;  // telemetry thread publishes inventory after a (re)connect
  std::string last_inventory_;
  std::string last_connected_at_;
  std::string last_error_;
  std::chrono::milliseconds retry_in_{0};
  uint64_t commands_ = 0;
  std::thread telemetry_;
};

// The JSON of a status message: {"v":1,"state":...,"agent_version":...,"ts":...}.
std::string StatusPayload(const char* state);

}  // namespace torwart::agent
