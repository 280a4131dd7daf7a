// The gateway's tunnel decisions and enforcement (docs/design/agent-tunnels.md). TunnelManager
// answers the control-channel commands stream.open / stream.kill / quarantine, decides each
// stream locally (quarantine → allowlist → consent → limits, see stream_decision.hpp), hands
// accepted streams to tunnel::GatewayStreams (the byte pump, which also cuts at the grant's
// deadline with or without the server), verifies the technician's grant certificate against the
// cached CRL, plugs in the Modbus guard and the signed recorder, and reports what happened as
// events on torwart/d/<uuid>/event (kept in an outbox file while the control channel is down).
// Thread-safety: all public methods may be called from any thread (MQTT thread, local API
// threads); one worker thread of its own does the blocking work (CRL fetch, opens, events).
#pragma once

#include <openssl/evp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::agent {

struct TunnelSettings {
  std::string state_dir;    // the agent's root state dir: consent, quarantine, recordings, outbox
  std::string site_config;  // default <state_dir>/site.toml
  std::string profile_dir;  // the active profile: device.pem, crl.der
  std::string device_id;
  std::string server;   // torwartd base URL (CRL, recording upload)
  std::string ca_file;  // our CA chain
  // The device key (file or PKCS#11), a new reference per call (the caller caches the store).
  std::function<Expected<pki::EvpPkeyPtr>()> key;
  // Publishes one event (JSON) on torwart/d/<uuid>/event with QoS 1; an error keeps it queued.
  std::function<Expected<void>(const std::string& payload)> publish_event;
  std::chrono::seconds crl_interval{60};
  std::chrono::seconds crl_fetch_timeout{2};
  bool upload_recordings = true;
};

class TunnelManager {
 public:
  static Expected<std::unique_ptr<TunnelManager>> Create(TunnelSettings s);
  ~TunnelManager();  // Stop()
  // Ends every stream ("agent stopping"), stops the worker and the uploader. Idempotent.
  void Stop();

  // stream.open, stream.kill, quarantine → the answer ({"v":1,"ok":…}); nullopt for others.
  std::optional<nlohmann::json> HandleCommand(const std::string& cmd, const nlohmann::json& args);

  // Local API (torwart-agent sessions / consent / status).
  nlohmann::json Sessions() const;  // [{"id","grant","user","target","site","protocol",…}]
  size_t Kill(const std::string& stream_id, const std::string& reason);
  size_t KillAll(const std::string& reason);
  // After `torwart-agent consent on|off`: audits consent.changed and, if consent is now off,
  // ends the live streams that needed it. Returns {"on","until","killed"}.
  nlohmann::json ConsentChanged();
  // `torwart-agent consent on|off` with a running agent: writes consent.json (until = Unix s; or
  // removes it for nullopt) and then does what ConsentChanged does, with no race against the
  // agent's own once-a-second consent check.
  Expected<nlohmann::json> SetConsent(std::optional<int64_t> until);
  // {"streams":[…],"quarantine":{…},"consent":{…},"site":{…},"recordings":{…},"crl":{…},
  //  "events_queued":n}
  nlohmann::json Status() const;
  // The control channel is up again: flush queued events now.
  void OnControlConnected();

 private:
  struct Impl;
  explicit TunnelManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace torwart::agent
