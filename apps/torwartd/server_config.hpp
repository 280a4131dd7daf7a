// torwartd's typed configuration, read from TOML (optional) plus command-line overrides.
// Plain value type; built once in main.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/config.hpp"
#include "torwart/core/error.hpp"

namespace torwart::server {

// One `[[webhooks]]` table: where to POST which events, signed with HMAC-SHA256 of the body.
struct WebhookConfig {
  std::string url;                  // https://... (http:// only for loopback tests)
  std::string secret;               // HMAC key; X-Torwart-Signature: sha256=<hex>
  std::vector<std::string> events;  // e.g. access.requested; empty or "*" = all
  std::string ca_file;              // PEM bundle to verify an https receiver; empty = system
};

// [broker]: the MQTT broker of the control channel (docs/design/control-channel.md).
struct BrokerConfig {
  bool enabled = true;                          // false: no control channel at all
  std::string device_listen = "127.0.0.1:8883";  // port 0: torwartd picks a free port
  std::string external;  // "mqtts://host:port": use a broker torwartd does not manage
  std::string mosquitto_path = "/usr/sbin/mosquitto";
  std::string plugin_path;  // "" = next to torwartd's build output or /usr/lib/torwart
  std::string public_url;   // what agents are told; "" = derived from device_listen
};

// [relay]: the tunnel relay (docs/design/tunnel.md).
struct RelayConfig {
  bool enabled = true;
  std::string listen = "127.0.0.1:8444";  // port 0: torwartd picks a free port (remembered)
  std::string public_address;  // "host:port" told to CLI and agents; "" = listen (0.0.0.0 ->
                               // the first server.public_names)
  std::chrono::seconds pair_timeout{10};  // a technician waits this long for the gateway
};

// [recordings]: stream recordings uploaded by gateways (docs/design/recording.md).
struct RecordingsConfig {
  uint64_t max_upload = uint64_t{256} << 20;  // largest recording accepted (bytes)
};

// [audit] and its sub-tables (docs/design/audit.md).
struct AuditSyslogConfig {
  std::string address;      // "host:port" of an RFC 5425 collector; "" = no forwarding
  std::string ca_file;      // PEM CA(s) that issued the collector's certificate
  std::string cert_file;    // optional client certificate (PEM chain) ...
  std::string key_file;     // ... and its key
  std::string server_name;  // name to verify in the collector's certificate; "" = host part
  std::string hostname;     // HOSTNAME field of our messages; "" = the machine's host name
};

struct AuditConfig {
  int64_t checkpoint_every = 1000;                       // sign a checkpoint every N events
  std::chrono::seconds checkpoint_interval{60};          // ... or after this long
  int64_t capacity_bytes = 0;                            // database size cap; 0 = unlimited
  std::chrono::seconds retention_interval{3600};         // how often retention runs
  std::vector<std::pair<std::string, std::chrono::seconds>> retention;  // category -> keep
  AuditSyslogConfig syslog;
};

struct ServerConfig {
  std::string data_dir = "./var/torwart";
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 8443;
  std::vector<std::string> public_names = {"localhost", "127.0.0.1"};
  int worker_threads = 4;

  std::string organisation = "torwart";
  std::chrono::seconds device_lifetime = std::chrono::hours(24 * 30);
  std::chrono::seconds crl_validity = std::chrono::hours(24 * 7);
  std::chrono::seconds enrollment_ttl = std::chrono::hours(24);

  std::chrono::seconds session_ttl = std::chrono::hours(12);
  std::chrono::seconds idle_timeout = std::chrono::minutes(30);
  int max_failed_logins = 10;
  std::chrono::seconds lockout = std::chrono::minutes(30);
  int min_password_length = 12;

  std::vector<WebhookConfig> webhooks;
  int webhook_max_attempts = 10;

  std::string log_level = "info";
  bool log_json = false;

  BrokerConfig broker;

  RelayConfig relay;

  AuditConfig audit;

  RecordingsConfig recordings;
};

// Reads every known key from `r` into `cfg` (defaults stay where a key is absent) and returns
// all errors at once: unknown keys and bad values with file:line:col.
Expected<void> ReadConfig(ConfigReader& r, ServerConfig& cfg);

// "256MiB", "64KiB", "1GiB", "1000000" (bytes; also kB/MB/GB in powers of 10) -> bytes.
Expected<uint64_t> ParseByteSize(std::string_view text);

// "host:port" -> address and port; IPv6 as "[::1]:8443".
Expected<void> ParseListen(const std::string& text, std::string& address, uint16_t& port);

}  // namespace torwart::server
