// torwartd's side of the control channel: one privileged MQTT connection to the broker, the
// shared subscription on every device topic, strict validation of what devices send (bad input
// is logged and audited, never fatal), the device registry in the database (online/offline,
// last seen, inventory, health), and commands with request/response (ping).
// Thread-safe: Ping may be called from any thread (REST workers); messages are processed one at
// a time on the registry's own worker thread. See docs/design/control-channel.md.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "context.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

struct RegistrySettings {
  std::string url;             // mqtts://127.0.0.1:<server port> (or the external broker)
  std::string ca_file;         // to verify the broker
  std::string cert_chain_pem;  // torwartd's client certificate (leaf + issuing)
  std::string key_pem;
  std::string client_id;  // unique per torwartd instance
  std::string agent_url;  // told to agents by /.well-known/torwart/agent.json
};

struct PingResult {
  std::chrono::microseconds rtt{0};
  bool ok = false;
  std::string result_json;  // "result" of the response ("" if none)
  std::string error;        // device's error text when !ok
  std::string code;         // device's error code when !ok ("" if none), e.g. "consent"
};

class DeviceRegistry {
 public:
  static Expected<std::unique_ptr<DeviceRegistry>> Create(Context& ctx, RegistrySettings s);
  virtual ~DeviceRegistry() = default;
  virtual Expected<void> Start() = 0;
  virtual void Stop() = 0;
  virtual bool connected() const = 0;
  // Publishes {"v":1,"cmd":"ping","args":{}} to the device's cmd topic and waits for the answer.
  // kTimeout after `timeout`, kUnavailable when torwartd is not connected to the broker.
  virtual Expected<PingResult> Ping(const std::string& device_id,
                                    std::chrono::milliseconds timeout) = 0;
  // Any command: publishes {"v":1,"cmd":cmd,"args":<args_json>} and waits for the answer, with
  // the same errors as Ping. `args_json` must be a JSON object.
  virtual Expected<PingResult> Command(const std::string& device_id, const std::string& cmd,
                                       const std::string& args_json,
                                       std::chrono::milliseconds timeout) = 0;
  // Called on the registry's worker (must not block) when a device comes online, live or from
  // a retained status after a reconnect. Set once at start-up.
  virtual void OnDeviceOnline(std::function<void(const std::string& device_id)> hook) = 0;
};

// Routes: GET /.well-known/torwart/agent.json, POST /api/v1/devices/{name}/ping.
// `registry` may be null (broker disabled): agent.json then says so and ping answers 503.
void RegisterControlApi(Context& ctx, DeviceRegistry* registry, const std::string& agent_url,
                        http::Router& router);

// Adds the control-channel state of `device_id` to a device's JSON (online, last_seen,
// agent_version; with `details` also inventory and health).
void AddDeviceState(Context& ctx, const std::string& device_id, bool details,
                    nlohmann::json& device_json);

}  // namespace torwart::server
