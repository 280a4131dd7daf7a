// The broker torwartd runs for the control channel: plans ports and files, writes mosquitto.conf
// and the torwart plugin's state file, and supervises Debian's mosquitto as a child process
// (restart with backoff, clean stop, its log lines in torwartd's log).
// Thread-safety: BrokerStateWriter is thread-safe; MosquittoSupervisor's methods are called from
// main only (its own thread does the supervising). See docs/design/control-channel.md.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "context.hpp"

namespace torwart::server {

struct BrokerPlan {
  std::string dir;  // <data>/broker
  std::string device_address;
  uint16_t device_port = 0;
  std::string server_address = "127.0.0.1";  // the privileged listener, loopback only
  uint16_t server_port = 0;
  std::string conf_file, state_file, plugin_path, mosquitto_path;
  std::string cert_file, key_file, ca_file;  // broker's server certificate, CA for clients
  std::string run_as_user;                   // "root" when torwartd runs as root, else ""
  std::string agent_url;                     // mqtts://host:port told to agents
  std::string server_url;                    // mqtts://127.0.0.1:port for torwartd itself
};

// Resolves the plan: free ports for port 0 (remembered in <dir>/ports.json so a restarted
// torwartd keeps them), the plugin path, the URLs.
Expected<BrokerPlan> PlanBroker(const ServerConfig& cfg, const std::string& cert_file,
                                const std::string& key_file, const std::string& ca_file);

// The mosquitto.conf text for a plan (pure; unit-tested).
std::string MosquittoConfig(const BrokerPlan& plan);

// Writes the plugin state file (atomically) from the certificates table: every certificate that
// is valid, unexpired and belongs to a device that is not revoked, plus torwartd's pinned
// service certificates.
class BrokerStateWriter {
 public:
  BrokerStateWriter(Context& ctx, std::string path) : ctx_(ctx), path_(std::move(path)) {}
  void AddServerFingerprint(const std::string& sha256_hex);
  Expected<void> Write();

 private:
  Context& ctx_;
  std::string path_;
  std::mutex mu_;
  std::set<std::string> server_fingerprints_;
};

class MosquittoSupervisor {
 public:
  // on_event(type, details JSON) is called for broker.start / broker.exit (for the audit trail).
  MosquittoSupervisor(BrokerPlan plan,
                      std::function<void(const std::string&, const std::string&)> on_event);
  ~MosquittoSupervisor();
  MosquittoSupervisor(const MosquittoSupervisor&) = delete;
  MosquittoSupervisor& operator=(const MosquittoSupervisor&) = delete;

  // Writes the configuration and starts the supervising thread (which starts mosquitto).
  Expected<void> Start();
  // SIGTERM to mosquitto, SIGKILL after 5 s; joins the thread. Idempotent.
  void Stop();
  pid_t pid() const { return pid_.load(); }
  int starts() const { return starts_.load(); }

 private:
  void Run();
  // Runs one mosquitto process until it exits or Stop; returns its wait status.
  int RunOnce();

  BrokerPlan plan_;
  std::function<void(const std::string&, const std::string&)> on_event_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<pid_t> pid_{0};
  std::atomic<int> starts_{0};
};

}  // namespace torwart::server
