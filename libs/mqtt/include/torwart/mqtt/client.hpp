// MQTT 5 client over mutual TLS: a libmosquitto adapter that owns one connection, its network
// thread and its reconnect policy (exponential backoff with full jitter, torwart::net::Backoff).
// Thread-safety: every public method is safe to call from any thread; handlers run on the
// client's own network thread, one at a time, and must not block (post work elsewhere) nor call
// Stop()/the destructor from inside a handler. Publish/Subscribe from inside a handler are fine.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/net/tls.hpp"

namespace torwart::mqtt {

// "mqtts://host:port" (TLS, default port 8883) or "mqtt://host:port" (plain, default 1883; tests
// and local listeners only). IPv6 literals in brackets: mqtts://[::1]:8883.
struct Url {
  bool tls = true;
  std::string host;
  int port = 8883;
  std::string ToString() const;
};
Expected<Url> ParseUrl(const std::string& url);

// The MQTT 5 properties we use. Empty strings mean "absent".
struct Properties {
  std::string response_topic;
  std::string correlation_data;  // binary
  std::string content_type;
  std::optional<uint32_t> message_expiry;  // seconds
  std::vector<std::pair<std::string, std::string>> user_properties;
};

struct Message {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  Properties properties;
};

struct PublishOptions {
  int qos = 1;
  bool retain = false;
  Properties properties;
};

struct Will {
  std::string topic;
  std::string payload;
  int qos = 1;
  bool retain = true;
};

// Returns the TLS context for the next connection attempt. Called on the network thread before
// every (re)connect, so a renewed certificate is picked up by returning a new context. The client
// takes a reference (SSL_CTX_up_ref) for as long as it uses the context; one context may be
// shared by many clients (it is thread-safe once built).
using TlsContextProvider = std::function<Expected<net::SslCtxPtr>()>;

struct ClientSettings {
  std::string url;        // see ParseUrl
  std::string client_id;  // devices: their UUID
  std::string username;   // optional
  // Required for mqtts://. libmosquitto does no hostname check with a caller's SSL_CTX: the
  // context must verify the peer and its name (MakeDeviceTlsContext does both).
  TlsContextProvider tls;
  std::optional<Will> will;
  std::chrono::seconds keepalive{30};
  bool clean_start = true;

  // Reconnect policy. auto_reconnect=false: a lost or failed connection stays down until
  // Reconnect() (used by benchmarks that measure single attempts).
  bool auto_reconnect = true;
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_cap{60000};
  uint64_t backoff_seed = 0;  // 0: random (production); fixed for reproducible tests
};

enum class State { kStopped, kConnecting, kConnected, kWaiting /* backoff before a retry */ };
const char* StateName(State s);

struct ConnectionEvent {
  State state;
  int reason_code = 0;  // MQTT 5 CONNACK/DISCONNECT reason, or libmosquitto error code
  std::string reason;   // human text (TLS errors, refused by broker, ...)
  std::chrono::milliseconds retry_in{0};  // for kWaiting
  int attempt = 0;                        // connection attempts since the last successful connect
};

struct Stats {
  State state = State::kStopped;
  uint64_t connects = 0;  // successful connections (CONNACK success) so far
  uint64_t connect_attempts = 0;
  std::string last_error;
  int attempt = 0;
};

class Client {
 public:
  using MessageHandler = std::function<void(const Message&)>;
  // Called on every state change. On kConnected, (re)subscribe and republish retained state:
  // the client does not remember subscriptions across connections (clean start).
  using ConnectionHandler = std::function<void(const ConnectionEvent&)>;

  // Validates settings and creates the libmosquitto handle; does not connect yet.
  static Expected<std::unique_ptr<Client>> Create(ClientSettings settings);
  ~Client();  // Stop()s
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Set handlers before Start().
  void OnMessage(MessageHandler h);
  void OnConnection(ConnectionHandler h);

  // Starts the network thread, which connects, and reconnects with backoff while auto_reconnect.
  Expected<void> Start();
  // Sends DISCONNECT (the broker does NOT publish the will), stops the thread. Idempotent.
  void Stop();
  // Ends the current connection cleanly (DISCONNECT: no will) and connects again at once, with a
  // fresh TLS context from the provider and a reset backoff (certificate renewed, new server).
  void Reconnect();
  // Drops the connection as if the network failed (no DISCONNECT: the broker publishes the
  // will) and continues with the normal backoff. For tests.
  void SimulateNetworkLoss();

  // Queues a message; fails with kUnavailable when not connected (qos 0) — qos>0 messages are
  // also refused while disconnected: callers republish state on kConnected instead.
  Expected<void> Publish(const std::string& topic, const std::string& payload,
                         const PublishOptions& options = {});
  Expected<void> Subscribe(const std::string& filter, int qos = 1);
  Expected<void> Unsubscribe(const std::string& filter);

  State state() const;
  Stats stats() const;
  const ClientSettings& settings() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Client TLS context for MQTT: TLS 1.3 (net::MakeClientTlsContext), the CA file to trust, the
// broker's name or IP literal to verify (empty: chain only), and optionally the client's
// certificate chain (PEM, leaf first) with its private key (file or PKCS#11 engine key; the
// context takes its own reference).
Expected<net::SslCtxPtr> MakeMqttTlsContext(const std::string& ca_file,
                                            const std::string& verify_host,
                                            const std::string& cert_chain_pem = "",
                                            EVP_PKEY* key = nullptr);

// The first published form: a client certificate + key and the CA, verifying the broker's chain
// but not its name. Prefer MakeMqttTlsContext with the broker's host.
Expected<net::SslCtxPtr> MakeDeviceTlsContext(const std::string& ca_file,
                                              const std::string& cert_chain_pem, EVP_PKEY* key);

}  // namespace torwart::mqtt
