// torwartd's typed configuration, read from TOML (optional) plus command-line overrides.
// Plain value type; built once in main.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "torwart/core/config.hpp"
#include "torwart/core/error.hpp"

namespace torwart::server {

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

  std::string log_level = "info";
  bool log_json = false;
};

// Reads every known key from `r` into `cfg` (defaults stay where a key is absent) and returns
// all errors at once: unknown keys and bad values with file:line:col.
Expected<void> ReadConfig(ConfigReader& r, ServerConfig& cfg);

// "host:port" -> address and port; IPv6 as "[::1]:8443".
Expected<void> ParseListen(const std::string& text, std::string& address, uint16_t& port);

}  // namespace torwart::server
