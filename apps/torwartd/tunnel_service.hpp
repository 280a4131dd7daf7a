// Live streams, torwartd's side (docs/design/tunnel.md): starts the relay and answers its hooks
// (a technician's CONNECT is checked against the grant, the user, the policy and the gateway's
// state; the gateway is asked to dial in over the control channel; the end is recorded), and
// the kill paths: one stream, a grant, a user, a device (quarantine). Opening, refusing, killing
// and ending are audit events; opening fails closed when the audit trail cannot be written.
// Thread-safe: hooks run on the relay's workers, REST calls on HTTP workers; commands to agents
// go out on the service's own sender thread, and a reaper thread cuts streams that lost their
// grant (revoked elsewhere, user disabled) once a second.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "access.hpp"
#include "context.hpp"
#include "device_registry.hpp"
#include "torwart/http/server.hpp"
#include "torwart/tunnel/relay.hpp"

namespace torwart::server {

class PkiService;
class PolicyService;

// Sends a control-channel command and waits for the answer (DeviceRegistry::Command).
using CommandSender = std::function<Expected<PingResult>(
    const std::string& device_id, const std::string& cmd, const std::string& args_json,
    std::chrono::milliseconds timeout)>;

class TunnelService {
 public:
  static constexpr std::chrono::milliseconds kGatewayTimeout{5000};  // stream.open answer

  TunnelService(Context& ctx, AccessService& access, PolicyService& policies);
  ~TunnelService();  // Stop()
  TunnelService(const TunnelService&) = delete;
  TunnelService& operator=(const TunnelService&) = delete;

  // Starts the relay from ctx.config->relay (listen port 0: the port of the previous start if
  // it is free, else any; kept in <data>/relay/port.json), sets ctx.relay_url, closes the
  // sessions a previous run left open and starts the sender and reaper threads. With
  // [relay] enabled = false only the threads start.
  Expected<void> Start(PkiService& pki);
  // Tests: run with `relay` (any implementation) as if Start had started it.
  void StartWith(std::unique_ptr<tunnel::Relay> relay, std::string relay_host, uint16_t relay_port);
  // The control channel. Unset: gateways cannot be reached (CONNECT → unavailable). Set once,
  // before Start.
  void SetCommandSender(CommandSender send) { send_ = std::move(send); }
  void Stop();
  uint16_t port() const { return relay_port_; }

  // --- the relay's hooks (public for tests) ---
  Expected<tunnel::StreamPlan> Authorize(const tunnel::Leg& leg);
  Expected<void> NotifyGateway(const tunnel::StreamPlan& plan);
  Expected<void> AcceptGateway(const tunnel::StreamPlan& plan, const tunnel::Leg& leg);
  void OnEnd(const tunnel::StreamEnd& end);

  // --- kill paths ---
  // POST /api/v1/tunnels/{id}/kill: admin and operator any stream, others their own (else
  // kNotFound, as for an unknown id). Returns how many streams the relay killed (0 if ended).
  Expected<size_t> Kill(const Actor& who, const std::string& stream_id, const std::string& reason);
  // AccessService's on_revoke: the grant's streams end at once.
  void OnGrantRevoked(const storage::AccessRequest& r);
  // POST /api/v1/devices/{name}/quarantine; returns the device's JSON with "quarantined".
  Expected<nlohmann::json> Quarantine(const Actor& who, const std::string& device_name, bool on,
                                      const std::string& reason);
  // The registry saw the device come online: tell it its quarantine state if it may not know.
  void OnDeviceOnline(const std::string& device_id);
  // One pass of the reaper: kills live streams whose grant is no longer active (revoked,
  // expired, user disabled) or whose gateway is quarantined or revoked. Returns how many.
  size_t Sweep();

  // GET /api/v1/tunnels: admin, operator, auditor, approver see all; others their own.
  Expected<nlohmann::json> List(const Actor& who, bool live_only);

  // Tests: waits until every queued agent command has been sent (or failed).
  void Flush();

 private:
  Expected<tunnel::StreamPlan> Decide(const tunnel::Leg& leg, nlohmann::json& details,
                                      std::string& user, std::string& target);
  void Enqueue(std::string what, std::function<void()> task);
  void SendToDevice(const std::string& device_id, const std::string& cmd, nlohmann::json args,
                    std::function<void(const PingResult&)> on_ok = {});
  void SyncQuarantine(const std::string& device_id);
  bool Online(const std::string& device_id);
  void SenderLoop();
  void ReaperLoop();

  Context& ctx_;
  AccessService& access_;
  PolicyService& policies_;
  CommandSender send_;
  std::unique_ptr<tunnel::Relay> relay_;
  std::string relay_host_;
  uint16_t relay_port_ = 0;

  std::mutex mu_;
  std::condition_variable cv_, idle_cv_, reaper_cv_;  // senders, Flush, reaper
  std::deque<std::pair<std::string, std::function<void()>>> queue_;
  size_t busy_ = 0;  // tasks running now
  bool stopping_ = false;
  bool started_ = false;
  std::vector<std::thread> senders_;
  std::thread reaper_;
};

// Adds "quarantined" (and, when on, "quarantine": {reason, since, by}) to a device's JSON.
void AddQuarantineState(Context& ctx, const std::string& device_id, nlohmann::json& device_json);

// GET /api/v1/tunnels, POST /api/v1/tunnels/{id}/kill, POST /api/v1/devices/{name}/quarantine.
void RegisterTunnelApi(Context& ctx, TunnelService& tunnels, http::Router& router);

}  // namespace torwart::server
