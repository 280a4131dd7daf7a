// The two ends of a stream (docs/design/tunnel.md):
//  - Forwarder (CLI, `torwart connect`): a local TCP listener; every accepted connection dials
//    the relay (outer TLS, grant certificate), says CONNECT, then runs the inner TLS as client
//    (grant certificate; the server must be the device certificate of the device the relay named)
//    and copies bytes between the local socket and the inner TLS.
//  - GatewayStreams (agent): for each stream.open command dials the relay (outer TLS, device
//    certificate), says ACCEPT, runs the inner TLS as server (device certificate; the client must
//    present a grant certificate, checked by a hook), dials the target and copies bytes through
//    the filter and recorder; cuts the stream at the grant's deadline, after idle time, on Kill.
// Both run one I/O thread of their own. Asio stays in src/. Thread-safe public methods.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/net/tls.hpp"
#include "torwart/tunnel/hooks.hpp"

namespace torwart::tunnel {

// Inner-TLS contexts. Both ends verify the peer's chain against `ca_file` with purpose "any"
// (device certificates are clientAuth-only but serve the inner TLS); identity checks are hooks.
//  client (CLI): presents the grant certificate; server (agent): presents the device
//  certificate and requires a client certificate. `key` may be a PKCS#11 key (not owned).
Expected<net::SslCtxPtr> MakeInnerClientContext(const std::string& cert_chain_pem,
                                                EVP_PKEY* key, const std::string& ca_file);
Expected<net::SslCtxPtr> MakeInnerServerContext(const std::string& cert_chain_pem,
                                                EVP_PKEY* key, const std::string& ca_file);
// Outer-TLS client context for either end: verifies the relay against `ca_file` (host name
// checked at dial time), presents `cert_chain_pem`/`key`. Honours SSLKEYLOGFILE (outer only:
// the relay-blindness test decrypts the outer layer with it).
Expected<net::SslCtxPtr> MakeOuterClientContext(const std::string& cert_chain_pem,
                                                EVP_PKEY* key, const std::string& ca_file);

struct ForwarderSettings {
  std::string listen = "127.0.0.1:0";
  std::string relay_host;  // name checked against the relay's certificate
  uint16_t relay_port = 8444;
  net::SslCtxPtr outer;  // MakeOuterClientContext with the grant certificate
  net::SslCtxPtr inner;  // MakeInnerClientContext with the grant certificate
  std::chrono::milliseconds connect_timeout{15000};  // relay + pairing + both handshakes
  size_t max_connections = 64;
};

struct ForwarderHooks {
  // The inner server's leaf (chain already verified): must be the device `device_id` the relay
  // named. Returns an error to abort that stream. Required.
  std::function<Expected<void>(const std::string& leaf_der, const std::string& device_id)>
      verify_gateway;
  std::function<void(const std::string& stream_id, const std::string& peer)> on_open;
  // Also for connections that never became streams (stream_id empty, error set).
  std::function<void(const std::string& stream_id, const std::string& reason, bool error)> on_end;
};

class Forwarder {
 public:
  static Expected<std::unique_ptr<Forwarder>> Start(ForwarderSettings s, ForwarderHooks h);
  virtual ~Forwarder() = default;
  virtual uint16_t port() const = 0;
  virtual size_t active() const = 0;
  virtual void Stop() = 0;
};

struct GrantCheck {
  std::string grant_id, user, site, target;
  std::vector<std::string> scopes;
  std::chrono::system_clock::time_point deadline;  // the stream is cut at this instant
};

struct GatewayStreamSettings {
  std::string stream_id;
  std::string relay_host;
  uint16_t relay_port = 8444;
  net::SslCtxPtr outer;  // MakeOuterClientContext with the device certificate
  net::SslCtxPtr inner;  // MakeInnerServerContext with the device certificate
  std::string target_host;
  uint16_t target_port = 0;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds idle_timeout{900};  // 0 = none
};

struct StreamSummary {
  uint64_t bytes_to_target = 0, bytes_from_target = 0;
  std::string reason;  // "closed by technician", "grant expired", "idle", "killed: …", errors
  bool target_connected = false;
};

struct GatewayStreamHooks {
  // After the inner handshake, with the technician's leaf (chain verified against our CA):
  // CRL, grant extension, target and scope. Runs on the I/O thread: must be quick. Required.
  std::function<Expected<GrantCheck>(const std::string& leaf_der)> verify_grant;
  // Made once the grant is known, before the target is dialled; may return null.
  std::function<std::unique_ptr<StreamFilter>(const GrantCheck&)> make_filter;
  std::function<std::unique_ptr<StreamRecorder>(const GrantCheck&)> make_recorder;
  // Refused requests (already recorded), for the audit trail.
  std::function<void(const std::string& stream_id, const GrantCheck&, const Refusal&)> on_refused;
  std::function<void(const std::string& stream_id, const StreamSummary&)> on_end;
};

struct GatewayStreamInfo {
  std::string stream_id, grant_id, user, target;
  std::chrono::system_clock::time_point opened, deadline;
  uint64_t bytes_to_target = 0, bytes_from_target = 0;
};

class GatewayStreams {
 public:
  static Expected<std::unique_ptr<GatewayStreams>> Create();
  virtual ~GatewayStreams() = default;  // implementations Stop()
  // Starts the stream in the background and returns at once; the outcome goes to on_end.
  virtual Expected<void> Open(GatewayStreamSettings s, GatewayStreamHooks h) = 0;
  virtual size_t Kill(const std::string& stream_id, const std::string& reason) = 0;
  virtual size_t KillAll(const std::string& reason) = 0;
  virtual size_t KillGrant(const std::string& grant_id, const std::string& reason) = 0;
  virtual std::vector<GatewayStreamInfo> List() const = 0;
  virtual void Stop() = 0;
};

}  // namespace torwart::tunnel
