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

  cfg.log_level = r.String("log.level", cfg.log_level);
  if (cfg.log_level != "trace" && cfg.log_level != "debug" && cfg.log_level != "info" &&
      cfg.log_level != "warn" && cfg.log_level != "error" && cfg.log_level != "off") {
    r.AddError("log.level", "must be one of trace, debug, info, warn, error, off");
  }
  std::string fmt = r.String("log.format", cfg.log_json ? "json" : "text");
  if (fmt != "json" && fmt != "text") r.AddError("log.format", "must be \"text\" or \"json\"");
  cfg.log_json = fmt == "json";
  return r.Finish();
}

}  // namespace torwart::server
