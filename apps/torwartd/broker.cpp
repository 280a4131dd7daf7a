#include "broker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "plugin_state.hpp"
#include "torwart/core/log.hpp"
#include "torwart/net/backoff.hpp"
#include "torwart/pki/x509.hpp"

namespace fs = std::filesystem;

namespace torwart::server {
namespace {

using nlohmann::json;

// True if `port` can be bound on `address` right now.
bool CanBind(const std::string& address, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  bool ok = inet_pton(AF_INET, address.c_str(), &sa.sin_addr) == 1 &&
            ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

// A port the kernel considers free on `address` (bind to 0, read it back, close). Another
// process may take it before mosquitto binds; the supervisor then retries with the same port,
// which is logged loudly. Good enough for tests and `make run`; production configures a port.
Expected<uint16_t> PickFreePort(const std::string& address) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return MakeError(Errc::kUnavailable, "socket() failed");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
    ::close(fd);
    return MakeError(
        Errc::kInvalidArgument,
        "broker listen address must be an IPv4 literal when the port is 0: " + address);
  }
  socklen_t len = sizeof sa;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    ::close(fd);
    return MakeError(Errc::kUnavailable, "cannot find a free port on " + address);
  }
  ::close(fd);
  return ntohs(sa.sin_port);
}

std::string FindPlugin(const std::string& configured) {
  if (!configured.empty()) return configured;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) {
    candidates.push_back(exe.parent_path() / "libtorwart_mosquitto.so");
    // Build tree: build/<x>/apps/torwartd/torwartd -> build/<x>/plugins/mosquitto/
    candidates.push_back(exe.parent_path().parent_path().parent_path() / "plugins" / "mosquitto" /
                         "libtorwart_mosquitto.so");
    candidates.push_back(exe.parent_path().parent_path() / "lib" / "torwart" /
                         "libtorwart_mosquitto.so");
  }
  candidates.push_back("/usr/lib/torwart/libtorwart_mosquitto.so");
  for (const auto& c : candidates) {
    if (fs::exists(c, ec)) return fs::weakly_canonical(c, ec).string();
  }
  return candidates.back().string();
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

Expected<BrokerPlan> PlanBroker(const ServerConfig& cfg, const std::string& cert_file,
                                const std::string& key_file, const std::string& ca_file) {
  BrokerPlan p;
  p.dir = cfg.data_dir + "/broker";
  std::error_code ec;
  fs::create_directories(p.dir, ec);
  if (ec) return MakeError(Errc::kUnavailable, "cannot create " + p.dir + ": " + ec.message());
  ::chmod(p.dir.c_str(), 0700);
  p.conf_file = p.dir + "/mosquitto.conf";
  p.state_file = p.dir + "/plugin-state";
  p.plugin_path = FindPlugin(cfg.broker.plugin_path);
  p.mosquitto_path = cfg.broker.mosquitto_path;
  p.cert_file = cert_file;
  p.key_file = key_file;
  p.ca_file = ca_file;
  if (::geteuid() == 0) p.run_as_user = "root";
  if (auto r = ParseListen(cfg.broker.device_listen, p.device_address, p.device_port); !r) {
    return MakeError(r.error().WithContext("broker.device_listen"));
  }

  // Ports chosen earlier are kept across restarts (agents remember the URL).
  json remembered = json::object();
  {
    std::ifstream f(p.dir + "/ports.json");
    if (f) {
      remembered = json::parse(f, nullptr, false);
      if (!remembered.is_object()) remembered = json::object();
    }
  }
  auto pick = [&](const char* key, const std::string& address) -> Expected<uint16_t> {
    auto it = remembered.find(key);
    if (it != remembered.end() && it->is_number_unsigned() && it->get<unsigned>() > 0 &&
        it->get<unsigned>() < 65536 &&
        CanBind(address, static_cast<uint16_t>(it->get<unsigned>()))) {
      return static_cast<uint16_t>(it->get<unsigned>());
    }
    return PickFreePort(address);
  };
  if (p.device_port == 0) {
    auto port = pick("device", p.device_address);
    if (!port) return MakeError(port.error());
    p.device_port = *port;
  }
  auto sport = pick("server", p.server_address);
  if (!sport) return MakeError(sport.error());
  p.server_port = *sport;
  {
    std::ofstream f(p.dir + "/ports.json", std::ios::trunc);
    f << json{{"device", p.device_port}, {"server", p.server_port}}.dump() << "\n";
  }

  std::string public_host = p.device_address;
  if (public_host == "0.0.0.0" || public_host == "::") {
    public_host = cfg.public_names.empty() ? "localhost" : cfg.public_names.front();
  }
  p.agent_url = !cfg.broker.public_url.empty()
                    ? cfg.broker.public_url
                    : "mqtts://" + HostForUrl(public_host) + ":" + std::to_string(p.device_port);
  p.server_url = "mqtts://" + p.server_address + ":" + std::to_string(p.server_port);
  return p;
}

std::string MosquittoConfig(const BrokerPlan& p) {
  std::ostringstream o;
  o << "# Written by torwartd at every start of the broker; edits are overwritten.\n"
    << "# See docs/design/control-channel.md.\n"
    // Global security settings: Mosquitto 2.0.11 never sends MOSQ_EVT_TICK to per-listener
    // plugins, and the plugin needs the tick to disconnect revoked and expired devices. The
    // plugin tells torwartd (pinned certificate) from devices by certificate, on any listener.
    << "per_listener_settings false\n"
    << "allow_anonymous false\n"
    << "plugin " << p.plugin_path << "\n"
    << "plugin_opt_state_file " << p.state_file << "\n"
    << "persistence false\n"
    << "log_dest stderr\n"  // unbuffered: lines reach torwartd's log at once
    << "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
    << "log_timestamp false\n"
    << "connection_messages true\n"
    // Large enough that torwartd sees (and audits) oversized device messages, small enough
    // that nobody fills the broker's memory.
    << "max_packet_size 262144\n";
  if (!p.run_as_user.empty()) o << "user " << p.run_as_user << "\n";
  auto listener = [&](const std::string& address, uint16_t port, const char* role) {
    o << "\n# " << role << " listener\n"
      << "listener " << port << " " << address << "\n"
      << "protocol mqtt\n"
      << "certfile " << p.cert_file << "\n"
      << "keyfile " << p.key_file << "\n"
      << "cafile " << p.ca_file << "\n"
      << "require_certificate true\n"
      // false: the plugin's BASIC_AUTH must run (it maps the certificate to the identity).
      << "use_identity_as_username false\n"
      << "tls_version tlsv1.3\n";
  };
  listener(p.device_address, p.device_port, "device");
  // torwartd's own listener: loopback only, so torwartd does not depend on the device
  // listener's address and limits; the pinned certificate is what makes a client privileged.
  listener(p.server_address, p.server_port, "torwartd");
  return o.str();
}

// --- BrokerStateWriter ---

void BrokerStateWriter::AddServerFingerprint(const std::string& sha256_hex) {
  std::lock_guard lock(mu_);
  server_fingerprints_.insert(sha256_hex);
}

Expected<void> BrokerStateWriter::Write() {
  // One writer at a time, so an older snapshot never overwrites a newer one.
  std::lock_guard lock(mu_);
  const TimePoint now = ctx_.clock->Now();
  broker_plugin::State s;
  s.generated = ToUnix(now);
  s.server_fingerprints.insert(server_fingerprints_.begin(), server_fingerprints_.end());
  auto devices = ctx_.store->devices().List();
  if (!devices) return MakeError(devices.error().WithContext("broker state"));
  for (const auto& d : *devices) {
    if (d.status == "revoked") continue;
    auto certs = ctx_.store->certificates().ListForDevice(d.id);
    if (!certs) return MakeError(certs.error().WithContext("broker state"));
    for (const auto& c : *certs) {
      if (c.status != "valid" || c.not_after <= now) continue;
      std::string serial = broker_plugin::NormalizeSerial(c.serial);
      if (serial.empty() || !broker_plugin::IsLowerUuid(d.id)) continue;
      s.certs[serial] = {d.id, ToUnix(c.not_after)};
    }
  }
  return pki::WriteFileAtomic(path_, broker_plugin::FormatState(s), fs::perms(0600));
}

// --- MosquittoSupervisor ---

MosquittoSupervisor::MosquittoSupervisor(
    BrokerPlan plan, std::function<void(const std::string&, const std::string&)> on_event)
    : plan_(std::move(plan)), on_event_(std::move(on_event)) {}

MosquittoSupervisor::~MosquittoSupervisor() { Stop(); }

Expected<void> MosquittoSupervisor::Start() {
  if (::access(plan_.mosquitto_path.c_str(), X_OK) != 0) {
    return MakeError(Errc::kNotFound, "mosquitto not found at " + plan_.mosquitto_path +
                                          " (apt-get install mosquitto, or set "
                                          "[broker] mosquitto_path)");
  }
  if (::access(plan_.plugin_path.c_str(), R_OK) != 0) {
    return MakeError(Errc::kNotFound, "torwart broker plugin not found at " + plan_.plugin_path +
                                          " (set [broker] plugin_path)");
  }
  auto w = pki::WriteFileAtomic(plan_.conf_file, MosquittoConfig(plan_), fs::perms(0600));
  if (!w) return MakeError(w.error().WithContext("writing mosquitto.conf"));
  thread_ = std::thread([this] { Run(); });
  return {};
}

void MosquittoSupervisor::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (pid_t p = pid_.load(); p > 0) ::kill(p, SIGTERM);
  if (thread_.joinable()) thread_.join();
}

void MosquittoSupervisor::Run() {
  net::Backoff backoff(std::chrono::milliseconds(500), std::chrono::seconds(30));
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    auto started = std::chrono::steady_clock::now();
    int status = RunOnce();
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    // A broker that ran for a while gets a fresh backoff; one that dies at once backs off.
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(30)) backoff.Reset();
    auto delay = backoff.Next();
    std::string how = WIFEXITED(status)     ? "exit code " + std::to_string(WEXITSTATUS(status))
                      : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                            : "status " + std::to_string(status);
    log::error("mosquitto stopped unexpectedly ({}); restarting in {} ms", how, delay.count());
    if (on_event_) {
      on_event_("broker.exit", json{{"how", how}, {"restart_in_ms", delay.count()}}.dump());
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, delay, [this] { return stopping_; })) return;
  }
}

int MosquittoSupervisor::RunOnce() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  const std::string conf = plan_.conf_file;
  const std::string exe = plan_.mosquitto_path;
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. Die with torwartd (this thread) so a
    // crashed torwartd never leaves an orphan broker holding the ports.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    const char* argv[] = {exe.c_str(), "-c", conf.c_str(), nullptr};
    ::execv(exe.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[1]);
  pid_.store(pid);
  int n = ++starts_;
  log::info("mosquitto started (pid {}, device listener {}:{}, start #{})", pid,
            plan_.device_address, plan_.device_port, n);
  if (on_event_) {
    on_event_("broker.start",
              json{{"pid", pid}, {"start", n}, {"device_port", plan_.device_port}}.dump());
  }
  {
    std::lock_guard lock(mu_);
    if (stopping_) ::kill(pid, SIGTERM);  // Stop() raced with the fork
  }

  std::string buf;
  auto flush_line = [](const std::string& line) {
    if (line.empty()) return;
    if (line.find("should not be run as root") != std::string::npos) {
      log::info("mosquitto: {}", line);  // torwartd runs as root (containers): same privileges
    } else if (line.find("Error") != std::string::npos) {
      log::error("mosquitto: {}", line);
    } else if (line.find("Warning") != std::string::npos) {
      log::warn("mosquitto: {}", line);
    } else {
      log::info("mosquitto: {}", line);
    }
  };
  std::chrono::steady_clock::time_point kill_at{};
  while (true) {
    pollfd pfd{fds[0], POLLIN, 0};
    int r = ::poll(&pfd, 1, 200);
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping) {
      auto now = std::chrono::steady_clock::now();
      if (kill_at == std::chrono::steady_clock::time_point{}) {
        kill_at = now + std::chrono::seconds(5);
      } else if (now > kill_at) {
        ::kill(pid, SIGKILL);
      }
    }
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char chunk[4096];
    ssize_t got = ::read(fds[0], chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: mosquitto exited (or closed its output)
    buf.append(chunk, static_cast<size_t>(got));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      flush_line(buf.substr(0, nl));
      buf.erase(0, nl + 1);
    }
    if (buf.size() > 16384) {
      flush_line(buf);
      buf.clear();
    }
  }
  flush_line(buf);
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  pid_.store(0);
  return status;
}

}  // namespace torwart::server
