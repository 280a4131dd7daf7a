#include "server_config.hpp"

#include <charconv>

namespace torwart::server {

Expected<void> ParseListen(const std::string& text, std::string& address, uint16_t& port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return MakeError(Errc::kInvalidArgument, "listen address '" + text + "' is not host:port");
  }
  std::string host = text.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned p = 0;
  auto ps = text.substr(colon + 1);
  auto [ptr, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), p);
  if (ec != std::errc() || ptr != ps.data() + ps.size() || p > 65535) {
    return MakeError(Errc::kInvalidArgument, "listen port in '" + text + "' is not 0-65535");
  }
  address = host;
  port = static_cast<uint16_t>(p);
  return {};
}

Expected<uint64_t> ParseByteSize(std::string_view text) {
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || ptr == text.data()) {
    return MakeError(Errc::kInvalidArgument, "'" + std::string(text) + "' is not a size like 256MiB");
  }
  std::string_view unit(ptr, static_cast<size_t>(text.data() + text.size() - ptr));
  struct Unit {
    std::string_view name;
    uint64_t factor;
  };
  constexpr Unit kUnits[] = {{"", 1},          {"B", 1},           {"KiB", 1ull << 10},
                             {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"kB", 1000},
                             {"MB", 1000000},     {"GB", 1000000000}};
  for (const Unit& u : kUnits) {
    if (unit == u.name) {
      if (n > UINT64_MAX / u.factor) break;
      return n * u.factor;
    }
  }
  return MakeError(Errc::kInvalidArgument,
                   "'" + std::string(text) + "' is not a size like 256MiB (B, KiB, MiB, GiB)");
}

Expected<void> ReadConfig(ConfigReader& r, ServerConfig& cfg) {
  using std::chrono::seconds;
  cfg.data_dir = r.String("server.data_dir", cfg.data_dir);
  std::string listen = r.String(
      "server.listen", cfg.listen_address + ":" + std::to_string(cfg.listen_port));
  if (auto ok = ParseListen(listen, cfg.listen_address, cfg.listen_port); !ok) {
    r.AddError("server.listen", ok.error().message());
  }
  cfg.public_names = r.Strings("server.public_names", cfg.public_names);
  cfg.worker_threads = static_cast<int>(r.Int("server.worker_threads", cfg.worker_threads, 1, 64));

  cfg.organisation = r.String("pki.organisation", cfg.organisation);
  cfg.device_lifetime = r.Seconds("pki.device_lifetime", cfg.device_lifetime, seconds(10));
  cfg.crl_validity = r.Seconds("pki.crl_validity", cfg.crl_validity, seconds(60));
  cfg.enrollment_ttl = r.Seconds("pki.enrollment_ttl", cfg.enrollment_ttl, seconds(10));

  cfg.session_ttl = r.Seconds("auth.session_ttl", cfg.session_ttl, seconds(60));
  cfg.idle_timeout = r.Seconds("auth.idle_timeout", cfg.idle_timeout, seconds(60));
  cfg.max_failed_logins =
      static_cast<int>(r.Int("auth.max_failed_logins", cfg.max_failed_logins, 1, 1000));
  cfg.lockout = r.Seconds("auth.lockout", cfg.lockout, seconds(1));
  cfg.min_password_length =
      static_cast<int>(r.Int("auth.min_password_length", cfg.min_password_length, 8, 1024));

  // [[webhooks]] url = "...", secret = "...", events = ["access.requested", ...], ca_file = "..."
  for (size_t i = 0, n = r.TableArraySize("webhooks"); i < n; ++i) {
    const std::string k = "webhooks[" + std::to_string(i) + "]";
    WebhookConfig w;
    w.url = r.String(k + ".url", "");
    w.secret = r.String(k + ".secret", "");
    w.events = r.Strings(k + ".events", {});
    w.ca_file = r.String(k + ".ca_file", "");
    if (w.url.rfind("https://", 0) != 0 && w.url.rfind("http://", 0) != 0) {
      r.AddError(k + ".url", "must be an https:// (or, for tests, http://) URL");
    }
    if (w.secret.size() < 16) r.AddError(k + ".secret", "must have at least 16 characters");
    cfg.webhooks.push_back(std::move(w));
  }

  cfg.log_level = r.String("log.level", cfg.log_level);
  if (cfg.log_level != "trace" && cfg.log_level != "debug" && cfg.log_level != "info" &&
      cfg.log_level != "warn" && cfg.log_level != "error" && cfg.log_level != "off") {
    r.AddError("log.level", "must be one of trace, debug, info, warn, error, off");
  }
  std::string fmt = r.String("log.format", cfg.log_json ? "json" : "text");
  if (fmt != "json" && fmt != "text") r.AddError("log.format", "must be \"text\" or \"json\"");
  cfg.log_json = fmt == "json";

  cfg.broker.enabled = r.Bool("broker.enabled", cfg.broker.enabled);
  cfg.broker.device_listen = r.String("broker.device_listen", cfg.broker.device_listen);
  {
    std::string a;
    uint16_t p = 0;
    if (auto ok = ParseListen(cfg.broker.device_listen, a, p); !ok) {
      r.AddError("broker.device_listen", ok.error().message());
    }
  }
  cfg.broker.external = r.String("broker.external", cfg.broker.external);
  if (!cfg.broker.external.empty() && cfg.broker.external.rfind("mqtts://", 0) != 0) {
    r.AddError("broker.external", "must be an mqtts://host:port URL");
  }
  cfg.broker.mosquitto_path = r.String("broker.mosquitto_path", cfg.broker.mosquitto_path);
  cfg.broker.plugin_path = r.String("broker.plugin_path", cfg.broker.plugin_path);
  cfg.broker.public_url = r.String("broker.public_url", cfg.broker.public_url);
  if (!cfg.broker.public_url.empty() && cfg.broker.public_url.rfind("mqtts://", 0) != 0) {
    r.AddError("broker.public_url", "must be an mqtts://host:port URL");
  }
  // [relay]
  cfg.relay.enabled = r.Bool("relay.enabled", cfg.relay.enabled);
  cfg.relay.listen = r.String("relay.listen", cfg.relay.listen);
  {
    std::string a;
    uint16_t p = 0;
    if (auto ok = ParseListen(cfg.relay.listen, a, p); !ok) {
      r.AddError("relay.listen", ok.error().message());
    }
  }
  cfg.relay.public_address = r.String("relay.public_address", cfg.relay.public_address);
  if (!cfg.relay.public_address.empty()) {
    std::string a;
    uint16_t p = 0;
    if (auto ok = ParseListen(cfg.relay.public_address, a, p); !ok || p == 0) {
      r.AddError("relay.public_address",
                 "must be host:port with a port, e.g. \"relay.example:8444\"");
    }
  }
  cfg.relay.pair_timeout = r.Seconds("relay.pair_timeout", cfg.relay.pair_timeout, seconds(1));
  // [recordings]
  {
    std::string max = r.String("recordings.max_upload", "");
    if (!max.empty()) {
      auto n = ParseByteSize(max);
      if (!n) {
        r.AddError("recordings.max_upload", n.error().message());
      } else if (*n < (uint64_t{1} << 10) || *n > (uint64_t{1} << 30)) {
        r.AddError("recordings.max_upload", "must be between 1KiB and 1GiB");
      } else {
        cfg.recordings.max_upload = *n;
      }
    }
  }
  // [audit]
  cfg.audit.checkpoint_every =
      r.Int("audit.checkpoint_every", cfg.audit.checkpoint_every, 1, 1'000'000'000);
  cfg.audit.checkpoint_interval =
      r.Seconds("audit.checkpoint_interval", cfg.audit.checkpoint_interval, seconds(1));
  cfg.audit.capacity_bytes =
      r.Int("audit.capacity_bytes", cfg.audit.capacity_bytes, 0, int64_t{1} << 50);
  cfg.audit.retention_interval =
      r.Seconds("audit.retention_interval", cfg.audit.retention_interval, seconds(1));
  // Known categories only: a typo is an unknown-key error, not a silently ignored rule.
  for (const char* category : {"access", "audit", "auth", "config", "device", "fleet", "grant",
                               "net", "pki", "policy", "recording", "server", "session",
                               "stream", "update", "user"}) {
    const std::string key = std::string("audit.retention.") + category;
    if (r.Has(key)) cfg.audit.retention.emplace_back(category, r.Seconds(key, seconds(0), seconds(1)));
  }
  cfg.audit.syslog.address = r.String("audit.syslog.address", cfg.audit.syslog.address);
  if (!cfg.audit.syslog.address.empty()) {
    std::string host;
    uint16_t port = 0;
    if (auto ok = ParseListen(cfg.audit.syslog.address, host, port); !ok || port == 0) {
      r.AddError("audit.syslog.address", "must be host:port, e.g. \"127.0.0.1:6514\"");
    }
  }
  cfg.audit.syslog.ca_file = r.String("audit.syslog.ca_file", cfg.audit.syslog.ca_file);
  cfg.audit.syslog.cert_file = r.String("audit.syslog.cert_file", cfg.audit.syslog.cert_file);
  cfg.audit.syslog.key_file = r.String("audit.syslog.key_file", cfg.audit.syslog.key_file);
  if (cfg.audit.syslog.cert_file.empty() != cfg.audit.syslog.key_file.empty()) {
    r.AddError("audit.syslog.cert_file", "cert_file and key_file go together");
  }
  cfg.audit.syslog.server_name =
      r.String("audit.syslog.server_name", cfg.audit.syslog.server_name);
  cfg.audit.syslog.hostname = r.String("audit.syslog.hostname", cfg.audit.syslog.hostname);
  return r.Finish();
}

}  // namespace torwart::server
