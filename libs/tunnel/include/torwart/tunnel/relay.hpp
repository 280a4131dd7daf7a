// The relay in torwartd: a TLS 1.3 listener where technicians (grant certificate) and gateways
// (device certificate) open legs; it pairs one leg of each per stream and copies bytes. It never
// holds the inner keys: what it copies is the end-to-end mutual TLS between CLI and agent.
// Asio stays in src/. Thread-safe: Kill*/List/Stop from any thread. Hooks run on the relay's
// worker pool (they may block on the database and the control channel), never on its I/O thread.
// See docs/design/tunnel.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/net/tls.hpp"

namespace torwart::tunnel {

struct RelaySettings {
  std::string listen = "127.0.0.1:8444";  // port 0: pick a free one (see Relay::port)
  // Server context: our server certificate, client certificate required and verified against
  // our CA (MakeRelayServerContext).
  net::SslCtxPtr tls;
  std::chrono::milliseconds handshake_timeout{10000};  // TLS + hello line
  std::chrono::milliseconds pair_timeout{10000};       // technician waits this long for the agent
  size_t max_streams = 20000;  // legs beyond 2×this are refused at accept
  size_t worker_threads = 4;
  // Tests only (the relay-blindness check): sees every chunk the relay copies, `up` =
  // technician → gateway. Runs on the I/O thread and must be quick. Leave empty in production.
  std::function<void(bool up, std::string_view bytes)> copy_observer;
};

// A leg that said hello; the certificate chain was verified by TLS against our CA.
struct Leg {
  std::string peer;      // "ip:port"
  std::string cert_der;  // the leaf
};

struct StreamPlan {
  std::string stream_id;  // NewStreamId()
  std::string device_id;  // the gateway that must accept (its certificate CN)
  std::string grant_id;
  std::string user;
  std::string target;
  std::chrono::system_clock::time_point deadline;  // the relay cuts the stream then
};

struct StreamEnd {
  StreamPlan plan;
  uint64_t bytes_up = 0;    // technician → gateway
  uint64_t bytes_down = 0;  // gateway → technician
  bool paired = false;
  std::string reason;  // "closed by technician", "killed: <why>", "grant expired", "pair timeout"…
};

struct RelayHooks {
  // A technician's CONNECT: decide and return the plan, or an error (its message goes to the CLI
  // as "ERR <code> <text>": kPermissionDenied→forbidden, kNotFound→not_found,
  // kExpired→expired, kUnavailable→unavailable, other→error).
  std::function<Expected<StreamPlan>(const Leg&)> authorize;
  // After the plan is registered (so the agent's ACCEPT will find it): ask the gateway to dial
  // in (control channel). An error ends the stream with ERR to the technician.
  std::function<Expected<void>(const StreamPlan&)> notify_gateway;
  // An ACCEPT for the plan: the relay already checked that the leaf's CN is plan.device_id;
  // this may refuse more (e.g. revoked device). Optional.
  std::function<Expected<void>(const StreamPlan&, const Leg&)> accept_gateway;
  // Once, when a stream whose authorize succeeded ends for any reason.
  std::function<void(const StreamEnd&)> on_end;
};

struct LiveStream {
  StreamPlan plan;
  bool paired = false;
  uint64_t bytes_up = 0, bytes_down = 0;
  std::chrono::system_clock::time_point opened;
};

class Relay {
 public:
  static Expected<std::unique_ptr<Relay>> Start(RelaySettings s, RelayHooks h);
  virtual ~Relay() = default;  // implementations Stop()
  virtual uint16_t port() const = 0;
  // Close both legs at once (well under a second). Return how many streams were killed.
  virtual size_t Kill(const std::string& stream_id, const std::string& reason) = 0;
  virtual size_t KillGrant(const std::string& grant_id, const std::string& reason) = 0;
  virtual size_t KillDevice(const std::string& device_id, const std::string& reason) = 0;
  virtual std::vector<LiveStream> List() const = 0;
  virtual void Stop() = 0;
};

// TLS 1.3 server context for the relay: chain + key files, client certificate required and
// verified against `ca_file`.
Expected<net::SslCtxPtr> MakeRelayServerContext(const std::string& cert_chain_file,
                                                const std::string& key_file,
                                                const std::string& ca_file);

}  // namespace torwart::tunnel
