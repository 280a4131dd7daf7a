// torwartd: the control plane. Composition root: reads configuration, opens storage and the CA,
// wires the REST API, CMP/EST endpoints and CRL publication, and serves HTTPS until SIGTERM.
#include <signal.h>
#include <sys/stat.h>
#include <sodium.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "api.hpp"
#include "audit_api.hpp"
#include "audit_service.hpp"
#include "auth.hpp"
#include "context.hpp"
#include "demo.hpp"
#include "control_channel.hpp"
#include "pki_service.hpp"
#include "server_config.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/server.hpp"
#include "torwart/net/tls.hpp"
#include "torwart/storage/store.hpp"
#include "users_api.hpp"
#include "access.hpp"
#include "policy_api.hpp"
#include "webhooks.hpp"
#include "tunnel_service.hpp"
#include "recordings.hpp"
#include "reports.hpp"
#include "device_registry.hpp"

namespace fs = std::filesystem;
using namespace torwart;

namespace {

// Audits bad input from the network, at most kPerMinute events a minute so a flood of garbage
// cannot fill the audit store; the rest are counted into the next event.
class BadInputAuditor {
 public:
  static constexpr int kPerMinute = 120;
  explicit BadInputAuditor(server::Context& ctx) : ctx_(ctx) {}
  void operator()(const std::string& peer, const std::string& what) {
    std::lock_guard lock(mu_);
    TimePoint now = ctx_.clock->Now();
    if (now - window_start_ > std::chrono::minutes(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (++in_window_ > kPerMinute) {
      ++suppressed_;
      return;
    }
    audit::Event e;
    e.time = now;
    e.actor_type = audit::ActorType::kAnonymous;
    e.source = peer;
    e.category = "net";
    e.type = "net.bad_input";
    e.result = audit::Result::kFailure;
    e.reason = what;
    e.details = nlohmann::json{{"suppressed_before", suppressed_}}.dump();
    suppressed_ = 0;
    (void)server::Audit(ctx_, e);
    log::warn("bad input from {}: {}", peer, what);
  }

 private:
  server::Context& ctx_;
  std::mutex mu_;
  TimePoint window_start_{};
  int in_window_ = 0;
  int64_t suppressed_ = 0;
};


int Serve(server::ServerConfig cfg) {
  std::error_code ec;
  fs::create_directories(cfg.data_dir, ec);
  if (ec) {
    std::cerr << "torwartd: cannot create data directory " << cfg.data_dir << ": " << ec.message()
              << "\n";
    return 1;
  }
  ::chmod(cfg.data_dir.c_str(), 0700);
  cfg.data_dir = fs::canonical(cfg.data_dir).string();

  auto store = storage::OpenSqlite({.path = cfg.data_dir + "/torwart.db"});
  if (!store) {
    std::cerr << "torwartd: " << store.error().WithContext("opening database").message() << "\n";
    return 1;
  }
  server::Context ctx;
  ctx.config = &cfg;
  ctx.store = store->get();
  ctx.clock = &SystemClock::Instance();
  // The audit trail (audit_service.*): group commit, signed checkpoints, fail-closed health,
  // SIEM forwarding and retention. Set up before anything that audits.
  auto audit_key = server::LoadOrCreateAuditKey(cfg.data_dir + "/audit");
  if (!audit_key) {
    std::cerr << "torwartd: " << audit_key.error().WithContext("audit key").message() << "\n";
    return 1;
  }
  server::AuditService audit_service(ctx.store->audit(), ctx.store->kv(), cfg.audit,
                                     std::move(*audit_key), *ctx.clock);
  if (auto r = audit_service.Start(); !r) {
    std::cerr << "torwartd: " << r.error().WithContext("starting the audit trail").message()
              << "\n";
    return 1;
  }
  ctx.audit = &audit_service;
  ctx.audit_available = [&audit_service] { return audit_service.Available(); };
  server::AuthService auth(ctx);
  ctx.auth = &auth;
  auto sealing_key = server::LoadOrCreateSealingKey(cfg.data_dir + "/secrets.key");
  if (!sealing_key) {
    std::cerr << "torwartd: " << sealing_key.error().WithContext("secrets key").message() << "\n";
    return 1;
  }
  auth.SetSealingKey(*sealing_key);

  auto pki = server::MakePkiService(ctx);
  if (!pki) {
    std::cerr << "torwartd: " << pki.error().WithContext("setting up the CA").message() << "\n";
    return 1;
  }
  auto admin = auth.BootstrapAdmin();
  if (!admin) {
    std::cerr << "torwartd: " << admin.error().message() << "\n";
    return 1;
  }
  if (auto r = server::SetUpDemoIfRequested(ctx); !r) {  // --demo (make run), demo.cpp
    std::cerr << "torwartd: demo: " << r.error().message() << "\n";
    return 1;
  }

  http::Router router;
  server::RegisterApi(ctx, **pki, router);
  server::RegisterAuditApi(ctx, audit_service, router);
  server::RegisterIdentityApi(ctx, router);
  // Policy and just-in-time access (policy_api.*, access.*, webhooks.*).
  server::PolicyService policies(ctx);
  if (auto r = policies.Load(); !r) {
    std::cerr << "torwartd: " << r.error().message() << "\n";
    return 1;
  }
  server::Webhooks webhooks(ctx);
  server::PkiService& pki_service = **pki;
  // Tunnels (tunnel_service.*): made below; a revoked grant's streams end first.
  std::unique_ptr<server::TunnelService> tunnels;
  server::AccessService access(ctx, policies, &webhooks,
                               [&pki_service, &tunnels](const storage::AccessRequest& r) {
                                 if (tunnels) tunnels->OnGrantRevoked(r);
                                 if (auto n = pki_service.RevokeGrantCertificates(r.id); !n) {
                                   log::error("revoking certificates of grant {}: {}", r.id,
                                              n.error().message());
                                 }
                               });
  server::RegisterPolicyApi(ctx, policies, router);
  server::RegisterAccessApi(ctx, access, pki_service, router);
  webhooks.Start();
  (*pki)->RegisterRoutes(router);
  // Control channel: managed Mosquitto + plugin state, device registry, ping (control_channel.*).
  auto control = server::StartControlChannel(ctx, **pki, router);
  if (!control) {
    std::cerr << "torwartd: " << control.error().WithContext("control channel").message() << "\n";
    return 1;
  }
  // Tunnels: the relay, its hooks and the kill paths (tunnel_service.*).
  tunnels = std::make_unique<server::TunnelService>(ctx, access, policies);
  if (server::DeviceRegistry* registry = (*control)->registry()) {
    tunnels->SetCommandSender([registry](const std::string& id, const std::string& cmd,
                                         const std::string& args, std::chrono::milliseconds t) {
      return registry->Command(id, cmd, args, t);
    });
    registry->OnDeviceOnline([t = tunnels.get()](const std::string& id) { t->OnDeviceOnline(id); });
  }
  if (auto r = tunnels->Start(pki_service); !r) {
    std::cerr << "torwartd: " << r.error().WithContext("tunnel relay").message() << "\n";
    return 1;
  }
  server::RegisterTunnelApi(ctx, *tunnels, router);
  // Recordings gateways upload (recordings.*): stored under <data>/recordings.
  server::RecordingService recordings(ctx, pki_service, cfg.data_dir + "/recordings",
                                      cfg.recordings.max_upload);
  if (auto r = recordings.Init(); !r) {
    std::cerr << "torwartd: " << r.error().WithContext("recordings").message() << "\n";
    return 1;
  }
  recordings.RegisterRoutes(router);
  // Compliance reports (reports.*): monthly per site, GDPR Art. 15 per person; read-only.
  server::ReportService reports(ctx, access, [&audit_service] { return audit_service.Verify(); });
  server::RegisterReportApi(ctx, reports, router);

  auto tls = net::MakeServerTlsContext({.cert_chain_file = (*pki)->server_cert_file(),
                                        .key_file = (*pki)->server_key_file(),
                                        .request_client_cert = true,
                                        .client_ca_file = (*pki)->ca_chain_file()});
  if (!tls) {
    std::cerr << "torwartd: " << tls.error().WithContext("TLS set-up").message() << "\n";
    return 1;
  }
  BadInputAuditor bad_input(ctx);
  http::ServerSettings hs;
  hs.address = cfg.listen_address;
  hs.port = cfg.listen_port;
  hs.tls = tls->get();
  hs.worker_threads = cfg.worker_threads;
  hs.on_bad_input = [&bad_input](const std::string& p, const std::string& w) { bad_input(p, w); };
  hs.body_limit_for = [&recordings, limit = hs.max_body_bytes](const http::Request& head) {
    return recordings.BodyLimitFor(head, limit);  // large bodies: recording uploads only
  };
  http::Server server(hs, router);
  auto port = server.Start();
  if (!port) {
    std::cerr << "torwartd: " << port.error().WithContext("starting the HTTPS listener").message()
              << "\n";
    return 1;
  }
  std::string host = cfg.listen_address.find(':') != std::string::npos
                         ? "[" + cfg.listen_address + "]"
                         : cfg.listen_address;
  std::string url = "https://" + host + ":" + std::to_string(*port);
  {
    // Where scripts and tests find the running server (port 0 picks a free port).
    std::ofstream f(cfg.data_dir + "/endpoint.json", std::ios::trunc);
    f << nlohmann::json{{"url", url}, {"ca", (*pki)->ca_chain_file()}, {"pid", getpid()}}.dump()
      << "\n";
  }
  (void)server::AuditSystem(ctx, "server", "server.start", nlohmann::json{{"url", url}, {"version", "0.1.0"}}.dump());
  log::info("torwartd listening on {} (data in {})", url, cfg.data_dir);

  if (admin->has_value()) {
    std::cout << "\n"
              << "  First start: created user 'admin' with a one-time password:\n\n"
              << "      " << **admin << "\n\n"
              << "  It is shown only this once and must be changed at the first login:\n"
              << "      torwart login --server " << url << " --ca " << (*pki)->ca_chain_file()
              << " --user admin\n\n"
              << std::flush;
  }
  std::cout << "torwartd ready: " << url << std::endl;

  // CRL refresh: regenerate before nextUpdate (checked every 30 s; RefreshCrl decides).
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread crl_thread([&] {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return stopping; })) {
      lock.unlock();
      if (auto r = (*pki)->RefreshCrl(false); !r) log::error("CRL refresh: {}", r.error().message());
      lock.lock();
    }
  });

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  log::info("torwartd stopping (signal {})", sig);
  {
    std::lock_guard lock(mu);
    stopping = true;
  }
  cv.notify_all();
  crl_thread.join();
  webhooks.Stop();
  server.Stop();
  tunnels->Stop();   // ends every stream (recorded) before the registry goes
  control->reset();  // the registry, then the broker
  (void)server::AuditSystem(ctx, "server", "server.stop", nlohmann::json{{"signal", sig}}.dump());
  audit_service.Stop();  // drains the writer and signs a final checkpoint
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are handled by sigwait in Serve; block them in every thread we start.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (sodium_init() < 0) {
    std::cerr << "torwartd: libsodium failed to initialise\n";
    return 1;
  }

  CLI::App app{
      "torwartd - the torwart control plane: REST API, CA with CMP/EST enrollment, CRL.\n"
      "Runs with no configuration at all (data in ./var/torwart); see docs/ for the config file."};
  std::string config_file, data_dir, listen, log_level, device_lifetime;
  app.add_option("-c,--config", config_file, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("-d,--data-dir", data_dir, "data directory (default ./var/torwart)");
  app.add_option("-l,--listen", listen, "HTTPS listen address host:port (default 127.0.0.1:8443)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  std::string broker_listen;
  app.add_option("--broker-listen", broker_listen,
                 "device listener of the managed MQTT broker, host:port (port 0: pick a free one)");
  std::string relay_listen;
  app.add_option("--relay-listen", relay_listen,
                 "listener of the tunnel relay, host:port (port 0: pick a free one)");
  app.add_option("--device-lifetime", device_lifetime,
                 "lifetime of device certificates, e.g. 30d, 1h, 60s");
  server::AddDemoOption(app);  // --demo, demo.cpp
  app.set_version_flag("--version", "torwartd 0.1.0");

  auto* ca = app.add_subcommand("ca", "manage the certificate authority (offline root)");
  std::string export_out, import_cert, import_key;
  auto* exp = ca->add_subcommand("export-root-key",
                                 "move the root CA private key out of the data directory");
  exp->add_option("OUT", export_out, "where to write the root key (e.g. removable media)")
      ->required();
  auto* imp = ca->add_subcommand("import-issuing", "install a new issuing CA signed by the root");
  imp->add_option("--cert", import_cert, "issuing CA certificate (PEM)")->required()->check(CLI::ExistingFile);
  imp->add_option("--key", import_key, "issuing CA private key (PEM)")->required()->check(CLI::ExistingFile);
  ca->require_subcommand(1);

  auto* aud = app.add_subcommand("audit", "offline audit tools (read the database directly)");
  auto* averify = aud->add_subcommand(
      "verify",
      "verify the audit chain and its signed checkpoints in --data-dir; exit 0 if intact, 1 if "
      "tampering was found (with the seq of each problem), 2 on error");
  std::string audit_pubkey;
  bool audit_json = false;
  averify->add_option("--public-key", audit_pubkey,
                      "audit public key (PEM) to trust; default <data-dir>/audit/audit.pub. Use "
                      "a copy kept outside the server to detect a replaced key");
  averify->add_flag("--json", audit_json, "print the report as JSON");
  aud->require_subcommand(1);

  CLI11_PARSE(app, argc, argv);

  server::ServerConfig cfg;
  auto reader = config_file.empty() ? Expected<ConfigReader>(ConfigReader())
                                    : ConfigReader::FromFile(config_file);
  if (!reader) {
    std::cerr << "torwartd: " << reader.error().message() << "\n";
    return 2;
  }
  if (auto r = server::ReadConfig(*reader, cfg); !r) {
    std::cerr << "torwartd: invalid configuration:\n" << r.error().message() << "\n";
    return 2;
  }
  if (!data_dir.empty()) cfg.data_dir = data_dir;
  if (!listen.empty()) {
    if (auto r = server::ParseListen(listen, cfg.listen_address, cfg.listen_port); !r) {
      std::cerr << "torwartd: --listen: " << r.error().message() << "\n";
      return 2;
    }
  }
  if (!broker_listen.empty()) {
    std::string a;
    uint16_t p = 0;
    if (auto r = server::ParseListen(broker_listen, a, p); !r) {
      std::cerr << "torwartd: --broker-listen: " << r.error().message() << "\n";
      return 2;
    }
    cfg.broker.device_listen = broker_listen;
  }
  if (!relay_listen.empty()) {
    std::string a;
    uint16_t p = 0;
    if (auto r = server::ParseListen(relay_listen, a, p); !r) {
      std::cerr << "torwartd: --relay-listen: " << r.error().message() << "\n";
      return 2;
    }
    cfg.relay.listen = relay_listen;
  }
  if (!log_level.empty()) cfg.log_level = log_level;
  if (!device_lifetime.empty()) {
    auto d = ParseDuration(device_lifetime);
    if (!d || d->count() < 10) {
      std::cerr << "torwartd: --device-lifetime must be a duration of at least 10s\n";
      return 2;
    }
    cfg.device_lifetime = *d;
  }
  log::Init(cfg.log_level, cfg.log_json);

  if (averify->parsed()) {
    return server::RunOfflineVerify(cfg.data_dir, audit_pubkey, audit_json);
  }
  if (ca->parsed()) {
    std::string pki_dir = cfg.data_dir + "/pki";
    Expected<void> r = exp->parsed() ? server::ExportRootKey(pki_dir, export_out)
                                     : server::ImportIssuing(pki_dir, import_cert, import_key);
    if (!r) {
      std::cerr << "torwartd: " << r.error().message() << "\n";
      return 1;
    }
    std::cout << (exp->parsed() ? "root key written to " + export_out +
                                      " and removed from the data directory; keep it offline\n"
                                : std::string("issuing CA installed; restart torwartd\n"));
    return 0;
  }
  return Serve(std::move(cfg));
}
