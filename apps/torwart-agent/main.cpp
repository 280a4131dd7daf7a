// torwart-agent: runs on the gateway or device with no person at hand. Enrolls with CMP using a
// one-time secret (key generated on the device: file or PKCS#11 token), then keeps its
// certificate fresh: renews at ~2/3 of the lifetime with jitter, retrying with backoff.
// Outbound connections only.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "gateway_state.hpp"
#include "local_api.hpp"
#include "profiles.hpp"
#include "session.hpp"
#include "site_config.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/config.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"
#include "torwart/mqtt/client.hpp"
#include "torwart/net/backoff.hpp"
#include "torwart/pki/cmp_client.hpp"
#include "torwart/pki/fingerprint.hpp"
#include "torwart/pki/key_store.hpp"
#include "torwart/pki/x509.hpp"
#include "tunnels.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace torwart;

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_wake{false};  // the renewal loop should look at its flags (profile switch)
std::mutex g_mu;
std::condition_variable g_cv;

void OnSignal(int) {
  g_stop = true;
  g_cv.notify_all();
}

// Sleeps until `d` passed or a stop signal arrived. Returns false when stopping.
bool SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(g_mu);
  g_cv.wait_for(lock, d, [] { return g_stop.load() || g_wake.load(); });
  return !g_stop;
}

using pki::ReadFile;

Expected<void> WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  return pki::WriteFileAtomic(path, data, static_cast<fs::perms>(mode));
}

// Leaf followed by its chain, PEM.
Expected<std::string> PemBundle(const X509* leaf, const std::vector<pki::X509Ptr>& chain) {
  auto out = pki::CertToPem(leaf);
  if (!out) return out;
  for (auto& c : chain) {
    auto pem = pki::CertToPem(c.get());
    if (!pem) return pem;
    *out += *pem;
  }
  return out;
}

struct AgentState {
  std::string server, ca_file, key_store, device_id, device_name, mqtt_url;
  bool bind_machine = false;
};

Expected<AgentState> LoadState(const std::string& dir) {
  auto text = ReadFile(dir + "/agent.json");
  if (!text) return MakeError(Errc::kNotFound, "not enrolled: no " + dir + "/agent.json (run `torwart-agent enroll` first)");
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return MakeError(Errc::kParse, dir + "/agent.json is corrupt");
  AgentState s;
  s.server = j.value("server", "");
  s.ca_file = j.value("ca_file", "");
  s.key_store = j.value("key_store", "file");
  s.device_id = j.value("device_id", "");
  s.bind_machine = j.value("bind_machine", false);
  s.mqtt_url = j.value("mqtt_url", "");
  return s;
}

pki::CmpTransfer MakeTransfer(const std::string& server, const std::string& ca_file,
                              std::chrono::seconds timeout) {
  return [server, ca_file, timeout](const std::string& der) -> Expected<std::string> {
    http::ClientSettings cs;
    cs.base_url = server;
    cs.ca_file = ca_file;
    cs.timeout = timeout;
    http::Client c(cs);
    auto r = c.Send("POST", "/.well-known/cmp", {{"content-type", "application/pkixcmp"}}, der);
    if (!r) return MakeError(r.error());
    // Refusals come as 4xx with the CMP error message as body: let the CMP client read the reason.
    bool cmp_body = r->headers.count("content-type") &&
                    r->headers.at("content-type").rfind("application/pkixcmp", 0) == 0;
    if (r->status != 200 && !(cmp_body && r->status >= 400 && r->status < 500)) {
      return MakeError(Errc::kUnavailable, "CMP endpoint answered HTTP " + std::to_string(r->status) +
                                               (r->body.size() < 300 ? ": " + r->body : ""));
    }
    return r->body;
  };
}

std::string FingerprintIfBound(bool bind, const std::string& machine_id_file) {
  if (!bind) return "";
  pki::FingerprintSources src;
  if (!machine_id_file.empty()) src.machine_id = machine_id_file;
  auto fp = pki::MachineFingerprint(src);
  if (!fp) {
    std::cerr << "torwart-agent: machine fingerprint: " << fp.error().message() << "\n";
    std::exit(1);
  }
  return *fp;
}

// The broker address torwartd announces for agents: GET /.well-known/torwart/agent.json.
Expected<std::string> FetchMqttUrl(const std::string& server, const std::string& ca_file) {
  http::ClientSettings cs;
  cs.base_url = server;
  cs.ca_file = ca_file;
  cs.timeout = std::chrono::seconds(10);
  http::Client c(cs);
  auto r = c.Send("GET", "/.well-known/torwart/agent.json");
  if (!r) return MakeError(r.error());
  if (r->status != 200) {
    return MakeError(Errc::kUnavailable, "GET /.well-known/torwart/agent.json: HTTP " + std::to_string(r->status));
  }
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("mqtt_url") || !j["mqtt_url"].is_string()) {
    return MakeError(Errc::kParse, "agent.json from the server has no mqtt_url");
  }
  std::string url = j["mqtt_url"].get<std::string>();
  if (auto u = mqtt::ParseUrl(url); !u) return MakeError(u.error());
  return url;
}

// Rewrites one field of <dir>/agent.json, keeping the others.
void UpdateStateField(const std::string& dir, const std::string& key, const std::string& value) {
  auto text = ReadFile(dir + "/agent.json");
  if (!text) return;
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value(key, "") == value) return;
  j[key] = value;
  (void)WriteFileAtomic(dir + "/agent.json", j.dump(2) + "\n", 0600);
}

struct Options {
  std::string state_dir = "./var/torwart-agent";
  std::string pin;
  std::string pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  std::string machine_id_file;
  bool json_out = false;
};

Expected<std::unique_ptr<pki::KeyStore>> OpenStore(const Options& o, const std::string& spec) {
  pki::KeyStoreOptions ko;
  ko.state_dir = o.state_dir;
  ko.pkcs11_module = o.pkcs11_module;
  ko.pin = o.pin;
  return pki::OpenKeyStore(spec, ko);
}

int Enroll(const Options& o, const std::string& server, const std::string& ca,
           const std::string& ref, const std::string& secret, const std::string& key_spec,
           bool bind) {
  std::error_code ec;
  fs::create_directories(o.state_dir, ec);
  ::chmod(o.state_dir.c_str(), 0700);
  auto ca_pem = ReadFile(ca);
  if (!ca_pem) { std::cerr << "torwart-agent: --ca: " << ca_pem.error().message() << "\n"; return 2; }
  std::string ca_copy = o.state_dir + "/server-ca.pem";
  if (auto w = WriteFileAtomic(ca_copy, *ca_pem, 0644); !w) { std::cerr << "torwart-agent: " << w.error().message() << "\n"; return 1; }

  auto store = OpenStore(o, key_spec);
  if (!store) { std::cerr << "torwart-agent: key store: " << store.error().message() << "\n"; return 1; }
  auto key = (*store)->Load();
  if (!key) {
    if (!key.error().Is(Errc::kNotFound)) { std::cerr << "torwart-agent: key store: " << key.error().message() << "\n"; return 1; }
    key = (*store)->Generate();
    if (!key) { std::cerr << "torwart-agent: generating the device key: " << key.error().message() << "\n"; return 1; }
    log::info("generated a new P-256 key in {}", (*store)->Describe());
  }
  std::string fp = FingerprintIfBound(bind, o.machine_id_file);
  auto enrolled = pki::InitialEnroll(MakeTransfer(server, ca_copy, std::chrono::seconds(30)),
                                     *ca_pem, ref, secret, key->get(), fp);
  if (!enrolled) {
    std::cerr << "torwart-agent: enrollment failed: " << enrolled.error().message() << "\n";
    return 1;
  }
  auto bundle = PemBundle(enrolled->cert.get(), enrolled->chain);
  if (!bundle) { std::cerr << "torwart-agent: " << bundle.error().message() << "\n"; return 1; }
  std::string uuid = pki::SubjectCn(enrolled->cert.get());
  if (auto w = WriteFileAtomic(o.state_dir + "/device.pem", *bundle, 0644); !w) { std::cerr << w.error().message() << "\n"; return 1; }
  json st{{"server", server}, {"ca_file", ca_copy}, {"key_store", (*store)->Describe()},
          {"device_id", uuid}, {"bind_machine", bind}};
  if (auto mq = FetchMqttUrl(server, ca_copy); mq) {
    st["mqtt_url"] = *mq;
  } else {
    log::warn("no control-channel address from the server yet ({}); `run` asks again",
              mq.error().message());
  }
  if (auto w = WriteFileAtomic(o.state_dir + "/agent.json", st.dump(2) + "\n", 0600); !w) { std::cerr << w.error().message() << "\n"; return 1; }
  if (o.json_out) {
    std::cout << json{{"device_id", uuid}, {"serial", pki::SerialHex(enrolled->cert.get())},
                      {"not_after", FormatRfc3339(pki::NotAfter(enrolled->cert.get()))},
                      {"key_store", (*store)->Describe()}}.dump() << "\n";
  } else {
    std::cout << "Enrolled as device " << uuid << "; certificate valid until "
              << FormatRfc3339(pki::NotAfter(enrolled->cert.get())) << ".\nKey: "
              << (*store)->Describe() << ". Start the agent with: torwart-agent run --state-dir "
              << o.state_dir << "\n";
  }
  return 0;
}

// One renewal with kur. Writes the new certificate atomically.
Expected<TimePoint> RenewOnce(const Options& o, const AgentState& s) {
  auto pem = ReadFile(o.state_dir + "/device.pem");
  if (!pem) return MakeError(pem.error());
  auto cert = pki::CertFromPem(*pem);
  if (!cert) return MakeError(cert.error());
  auto store = OpenStore(o, s.key_store);
  if (!store) return MakeError(store.error());
  auto key = (*store)->Load();
  if (!key) return MakeError(key.error().WithContext("loading the device key"));
  auto ca_pem = ReadFile(s.ca_file);
  if (!ca_pem) return MakeError(ca_pem.error());
  std::string fp = FingerprintIfBound(s.bind_machine, o.machine_id_file);
  auto r = pki::Renew(MakeTransfer(s.server, s.ca_file, std::chrono::seconds(30)), *ca_pem,
                      cert->get(), key->get(), fp);
  if (!r) return MakeError(r.error());
  auto bundle = PemBundle(r->cert.get(), r->chain);
  if (!bundle) return MakeError(bundle.error());
  if (auto w = WriteFileAtomic(o.state_dir + "/device.pem", *bundle, 0644); !w) {
    return MakeError(w.error());
  }
  return pki::NotAfter(r->cert.get());
}

void WriteStatus(const Options& o, const json& j) {
  (void)WriteFileAtomic(o.state_dir + "/status.json", j.dump(2) + "\n", 0644);
}

struct RunSettings {
  double renew_fraction = 2.0 / 3.0;
  std::chrono::seconds backoff_cap{60};
  std::string mqtt_url;          // override of the server's announcement
  std::string mqtt_server_name;  // name/IP to verify in the broker certificate (default: URL host)
  std::chrono::seconds keepalive{30};
  std::chrono::seconds health_interval{60};
  std::chrono::seconds inventory_interval{300};
  std::string inventory_dir;
  std::string site_config;  // default <state-dir>/site.toml (docs/design/agent-tunnels.md)
};

// The agent config file (TOML, strict: unknown keys are errors). Flags given on the command
// line win; this fills only what they left at the default.
Expected<void> LoadAgentConfig(const std::string& path, RunSettings& rs, const CLI::App& run) {
  auto cr = ConfigReader::FromFile(path);
  if (!cr) return MakeError(cr.error());
  auto given = [&](const char* flag) { return run.count(flag) > 0; };
  std::string url = cr->String("mqtt.url", "");
  if (!given("--mqtt-url") && !url.empty()) rs.mqtt_url = url;
  std::string sn = cr->String("mqtt.server_name", "");
  if (!given("--mqtt-server-name") && !sn.empty()) rs.mqtt_server_name = sn;
  auto ka = cr->Seconds("mqtt.keepalive", rs.keepalive, std::chrono::seconds(5));
  if (!given("--keepalive")) rs.keepalive = ka;
  auto cap = cr->Seconds("mqtt.backoff_cap", rs.backoff_cap, std::chrono::seconds(1));
  if (!given("--backoff-cap")) rs.backoff_cap = cap;
  auto hi = cr->Seconds("telemetry.health_interval", rs.health_interval, std::chrono::seconds(1));
  if (!given("--health-interval")) rs.health_interval = hi;
  auto ii = cr->Seconds("telemetry.inventory_interval", rs.inventory_interval, std::chrono::seconds(1));
  if (!given("--inventory-interval")) rs.inventory_interval = ii;
  std::string dir = cr->String("telemetry.inventory_dir", "");
  if (!given("--inventory-dir") && !dir.empty()) rs.inventory_dir = dir;
  return cr->Finish();
}

// State shared by the renewal loop (main thread) and the local API threads.
struct Runtime {
  std::mutex mu;
  // shared: a local API thread may still use it (outside `mu`: Stop joins the network thread,
  // whose TLS provider takes `mu`) while the renewal loop replaces it on a profile switch.
  std::shared_ptr<agent::Session> session;
  bool user_disconnected = false;
  std::string pin;            // entered through the local API
  std::string profile;
  std::string profile_dir;
  std::string pending_profile;  // set by profile.use, applied by the renewal loop
  std::string mqtt_error;       // why there is no session (no address, ...)
  bool needs_pin = false;
  // Tunnels of the current profile (shared: local API threads use it outside `mu`, because its
  // hooks may need the key cache, which takes `mu`).
  std::shared_ptr<agent::TunnelManager> tunnels;
  std::string tunnels_error;
};

// The device key from the key store, opened once and kept (a PKCS#11 engine key needs its store
// alive), shared by the control channel's TLS, the tunnels and the recording uploads.
struct KeyCache {
  std::mutex mu;
  std::unique_ptr<pki::KeyStore> store;
  pki::EvpPkeyPtr key;
  std::string pin;
};

// A new reference to the cached key; (re)opens the store when there is none or a new PIN came.
Expected<pki::EvpPkeyPtr> CachedDeviceKey(KeyCache& cache, const Options& po, const AgentState& s,
                                          Runtime* rt) {
  std::lock_guard cl(cache.mu);
  Options o2 = po;
  {
    std::lock_guard lock(rt->mu);
    if (!rt->pin.empty()) o2.pin = rt->pin;
  }
  if (!cache.key || cache.pin != o2.pin) {
    cache.key.reset();
    auto store = OpenStore(o2, s.key_store);
    if (!store) return MakeError(store.error());
    auto key = (*store)->Load();
    if (!key) {
      std::lock_guard lock(rt->mu);
      rt->needs_pin = s.key_store.rfind("pkcs11:", 0) == 0 && o2.pin.empty();
      return MakeError(key.error().WithContext(
          rt->needs_pin ? "key store needs a PIN (torwart-agent pin)" : "loading the device key"));
    }
    cache.store = std::move(*store);
    cache.key = std::move(*key);
    cache.pin = o2.pin;
    std::lock_guard lock(rt->mu);
    rt->needs_pin = false;
  }
  return pki::UpRef(cache.key.get());
}

// The TLS context of the device: its certificate as on disk now (renewals replace it) and its key
// from the key store, opened once and kept (a PKCS#11 engine key needs its store alive).
mqtt::TlsContextProvider MakeTlsProvider(const Options& po, const AgentState& s,
                                         std::string verify_host, Runtime* rt,
                                         std::shared_ptr<KeyCache> cache) {
  // shared: copies of the provider (and the tunnels) share one key
  return [po, s, verify_host, rt, cache]() -> Expected<net::SslCtxPtr> {
    auto key = CachedDeviceKey(*cache, po, s, rt);
    if (!key) return MakeError(key.error());
    auto pem = ReadFile(po.state_dir + "/device.pem");
    if (!pem) return MakeError(pem.error());
    return mqtt::MakeMqttTlsContext(s.ca_file, verify_host, *pem, key->get());
  };
}

json IdentityJson(const std::string& dir, const std::string& profile) {
  json j{{"profile", profile}};
  auto s = LoadState(dir);
  if (!s) {
    j["error"] = s.error().message();
    return j;
  }
  j["device_id"] = s->device_id;
  j["server"] = s->server;
  j["key_store"] = s->key_store;
  if (!s->mqtt_url.empty()) j["mqtt_url"] = s->mqtt_url;
  auto pem = ReadFile(dir + "/device.pem");
  auto cert = pem ? pki::CertFromPem(*pem) : Expected<pki::X509Ptr>(MakeError(pem.error()));
  if (cert) {
    TimePoint na = pki::NotAfter(cert->get());
    j["serial"] = pki::SerialHex(cert->get());
    j["not_after"] = FormatRfc3339(na);
    j["certificate_valid"] = SystemClock::Instance().Now() < na;
  }
  if (auto st = ReadFile(dir + "/status.json"); st) {
    auto sj = json::parse(*st, nullptr, false);
    if (!sj.is_discarded() && sj.contains("last_error")) j["last_error"] = sj["last_error"];
  }
  return j;
}

// The local API's tunnel ops (sessions, consent). The manager is used outside rt.mu.
Expected<json> HandleLocalTunnels(Runtime& rt, const agent::Request& req) {
  std::shared_ptr<agent::TunnelManager> tm;
  std::string why;
  {
    std::lock_guard lock(rt.mu);
    tm = rt.tunnels;
    why = rt.tunnels_error;
  }
  if (req.op == "sessions.list") return tm ? tm->Sessions() : json::array();
  if (req.op == "consent.set") {
    std::optional<int64_t> until;
    if (req.args["on"].get<bool>()) until = req.args["until"].get<int64_t>();
    if (!tm) {  // the CLI then writes consent.json itself
      return MakeError(Errc::kFailedPrecondition,
                       "tunnels are not running" + (why.empty() ? "" : ": " + why));
    }
    return tm->SetConsent(until);
  }
  if (req.op == "consent.changed") {
    if (!tm)
      return json{{"killed", 0},
                  {"note", "tunnels are not running" + (why.empty() ? "" : ": " + why)}};
    return tm->ConsentChanged();
  }
  if (req.op == "sessions.kill") {
    if (!tm) return MakeError(Errc::kFailedPrecondition, "no streams: tunnels are not running");
    const std::string reason = "on site (torwart-agent sessions kill)";
    if (req.args.contains("all")) return json{{"killed", tm->KillAll(reason)}};
    std::string id = req.args["id"].get<std::string>();
    size_t n = tm->Kill(id, reason);
    if (n == 0) return MakeError(Errc::kNotFound, "no live stream " + id);
    return json{{"killed", n}};
  }
  return MakeError(Errc::kInvalidArgument, "unknown op");
}

Expected<json> HandleLocal(Runtime& rt, const std::string& root, const agent::Request& req) {
  if (req.op.rfind("sessions.", 0) == 0 || req.op.rfind("consent.", 0) == 0) {
    return HandleLocalTunnels(rt, req);
  }
  if (req.op == "status") {
    std::shared_ptr<agent::TunnelManager> tm;
    {
      std::lock_guard lock(rt.mu);
      tm = rt.tunnels;
    }
    json tunnels = tm ? tm->Status() : json(nullptr);
    std::lock_guard lock(rt.mu);
    if (!tm && !rt.tunnels_error.empty()) tunnels = json{{"error", rt.tunnels_error}};
    json j = IdentityJson(rt.profile_dir, rt.profile);
    json c = rt.session ? rt.session->Status() : json{{"state", "disconnected"}};
    if (rt.user_disconnected) c["state"] = "disconnected";
    c["user_disconnected"] = rt.user_disconnected;
    if (!rt.mqtt_error.empty()) c["last_error"] = rt.mqtt_error;
    j["connection"] = c;
    j["needs_pin"] = rt.needs_pin;
    j["agent_running"] = true;
    if (!tunnels.is_null()) j["tunnels"] = tunnels;
    return j;
  }
  if (req.op == "connect") {
    std::lock_guard lock(rt.mu);
    rt.user_disconnected = false;
    if (!rt.session) return MakeError(Errc::kFailedPrecondition, "no control channel: " + rt.mqtt_error);
    if (rt.session->running()) {
      rt.session->Reconnect();
    } else if (auto r = rt.session->Start(); !r) {
      return MakeError(r.error());
    }
    return json{{"state", "connecting"}};
  }
  if (req.op == "disconnect") {
    std::shared_ptr<agent::Session> session;
    {
      std::lock_guard lock(rt.mu);
      rt.user_disconnected = true;
      session = rt.session;
    }
    if (session) session->Stop();
    return json{{"state", "disconnected"}};
  }
  if (req.op == "profile.list") return agent::ListProfiles(root);
  if (req.op == "profile.use") {
    std::string name = req.args["name"].get<std::string>();
    if (auto r = agent::SetActiveProfile(root, name); !r) return MakeError(r.error());
    {
      std::lock_guard lock(rt.mu);
      rt.pending_profile = name;
    }
    g_wake = true;
    g_cv.notify_all();
    return json{{"profile", name}};
  }
  if (req.op == "pin") {
    std::lock_guard lock(rt.mu);
    rt.pin = req.args["pin"].get<std::string>();
    if (rt.session && rt.session->running()) rt.session->Reconnect();
    return json{{"accepted", true}};
  }
  return MakeError(Errc::kInvalidArgument, "unknown op");
}

// One profile: renew the certificate at ~2/3 of its lifetime and keep the control channel up.
// Returns when stopping or when another profile was chosen.
void RunProfile(const Options& root_o, Runtime& rt, const RunSettings& rs) {
  std::string profile = agent::ActiveProfile(root_o.state_dir);
  Options o = root_o;
  o.state_dir = agent::ProfileDir(root_o.state_dir, profile);
  auto s = LoadState(o.state_dir);
  if (!s) {
    log::error("profile {}: {}", profile, s.error().message());
    std::lock_guard lock(rt.mu);
    rt.profile = profile;
    rt.profile_dir = o.state_dir;
    rt.mqtt_error = s.error().message();
    return;
  }
  // The broker address: flag/config override, else what the server announces now, else the
  // address stored at enrollment.
  std::string mqtt_url = rs.mqtt_url;
  if (mqtt_url.empty()) {
    if (auto mq = FetchMqttUrl(s->server, s->ca_file); mq) {
      mqtt_url = *mq;
      UpdateStateField(o.state_dir, "mqtt_url", mqtt_url);
    } else {
      log::warn("could not refresh the control-channel address: {}", mq.error().message());
      mqtt_url = s->mqtt_url;
    }
  }
  log::info("torwart-agent running as device {} against {} (profile {}, control channel {})",
            s->device_id, s->server, profile, mqtt_url.empty() ? "unknown" : mqtt_url);
  // Tunnels (stream.open, stream.kill, quarantine): decided and enforced here, with or without
  // the server (docs/design/agent-tunnels.md).
  auto key_cache = std::make_shared<KeyCache>();
  std::shared_ptr<agent::TunnelManager> tunnels;
  std::string tunnels_error;
  {
    agent::TunnelSettings ts;
    ts.state_dir = root_o.state_dir;
    ts.site_config = rs.site_config;
    ts.profile_dir = o.state_dir;
    ts.device_id = s->device_id;
    ts.server = s->server;
    ts.ca_file = s->ca_file;
    Runtime* rtp = &rt;
    ts.key = [key_cache, o, st = *s, rtp] { return CachedDeviceKey(*key_cache, o, st, rtp); };
    ts.publish_event = [rtp](const std::string& payload) -> Expected<void> {
      std::shared_ptr<agent::Session> session;
      {
        std::lock_guard lock(rtp->mu);
        session = rtp->session;
      }
      if (!session) return MakeError(Errc::kUnavailable, "no control channel");
      return session->Publish("event", payload, 1);
    };
    auto tm = agent::TunnelManager::Create(std::move(ts));
    if (tm) {
      tunnels = std::move(*tm);
    } else {
      tunnels_error = tm.error().message();
      log::error("tunnels unavailable: {}", tunnels_error);
    }
  }
  {
    std::lock_guard lock(rt.mu);
    rt.tunnels = tunnels;
    rt.tunnels_error = tunnels_error;
    rt.profile = profile;
    rt.profile_dir = o.state_dir;
    rt.mqtt_error.clear();
    rt.session.reset();
    if (mqtt_url.empty()) {
      rt.mqtt_error = "no MQTT address: the server announced none and --mqtt-url is not set";
    } else {
      auto url = mqtt::ParseUrl(mqtt_url);
      agent::SessionSettings ss;
      ss.device_id = s->device_id;
      ss.mqtt_url = mqtt_url;
      ss.server = s->server;
      ss.profile = profile;
      ss.keepalive = rs.keepalive;
      ss.backoff_cap = std::chrono::duration_cast<std::chrono::milliseconds>(rs.backoff_cap);
      ss.health_interval = rs.health_interval;
      ss.inventory_check_interval = rs.inventory_interval;
      ss.inventory_dir = rs.inventory_dir;
      ss.disk_path = o.state_dir;
      std::string verify = !rs.mqtt_server_name.empty() ? rs.mqtt_server_name : (url ? url->host : "");
      ss.tls = MakeTlsProvider(o, *s, verify, &rt, key_cache);
      ss.commands = [tunnels, tunnels_error](const std::string& cmd,
                                             const json& args) -> std::optional<json> {
        if (tunnels) return tunnels->HandleCommand(cmd, args);
        if (cmd == "stream.open" || cmd == "stream.kill" || cmd == "quarantine") {
          return json{{"v", 1},
                      {"ok", false},
                      {"code", "busy"},
                      {"error", "tunnels are unavailable on this gateway: " + tunnels_error}};
        }
        return std::nullopt;
      };
      ss.on_connected = [tunnels] {
        if (tunnels) tunnels->OnControlConnected();
      };
      auto session = agent::Session::Create(std::move(ss));
      if (!session) {
        rt.mqtt_error = session.error().message();
        log::error("control channel: {}", rt.mqtt_error);
      } else {
        rt.session = std::move(*session);
        if (!rt.user_disconnected) (void)rt.session->Start();
      }
    }
  }

  net::Backoff backoff(std::chrono::seconds(1), rs.backoff_cap);
  std::mt19937_64 rng(std::random_device{}());
  std::string last_error;
  auto switching = [&] {
    std::lock_guard lock(rt.mu);
    return !rt.pending_profile.empty();
  };
  while (!g_stop && !switching()) {
    g_wake = false;
    auto pem = ReadFile(o.state_dir + "/device.pem");
    auto cert = pem ? pki::CertFromPem(*pem) : Expected<pki::X509Ptr>(MakeError(pem.error()));
    if (!cert) {
      log::error("{}", cert.error().message());
      SleepFor(std::chrono::seconds(30));
      continue;
    }
    TimePoint nb = pki::NotBefore(cert->get()), na = pki::NotAfter(cert->get());
    auto lifetime = na - nb;
    // Renew at ~2/3 of the lifetime, +-5 % jitter so a fleet does not renew in lock-step.
    std::uniform_real_distribution<double> jitter(-0.05, 0.05);
    auto renew_at = nb + std::chrono::duration_cast<Duration>(lifetime * (rs.renew_fraction + jitter(rng)));
    TimePoint now = SystemClock::Instance().Now();
    WriteStatus(o, {{"device_id", s->device_id}, {"serial", pki::SerialHex(cert->get())},
                    {"not_after", FormatRfc3339(na)}, {"next_renewal", FormatRfc3339(renew_at)},
                    {"last_error", last_error}, {"state", now < na ? "valid" : "expired"}});
    if (now < renew_at) {
      if (!SleepFor(std::chrono::duration_cast<std::chrono::milliseconds>(renew_at - now))) break;
      continue;
    }
    Options ro = o;
    {
      std::lock_guard lock(rt.mu);
      if (!rt.pin.empty()) ro.pin = rt.pin;
    }
    auto r = RenewOnce(ro, *s);
    if (r) {
      log::info("certificate renewed; valid until {}", FormatRfc3339(*r));
      last_error.clear();
      backoff.Reset();
      // Present the new certificate to the broker at once.
      std::lock_guard lock(rt.mu);
      if (rt.session && rt.session->running()) rt.session->Reconnect();
      continue;
    }
    last_error = r.error().message();
    auto wait = backoff.Next();
    if (SystemClock::Instance().Now() >= na) {
      log::error("certificate expired and renewal failed: {} (re-enroll with a new secret if this persists)", last_error);
    } else {
      log::warn("renewal failed: {}; retrying in {} ms", last_error, wait.count());
    }
    WriteStatus(o, {{"device_id", s->device_id}, {"serial", pki::SerialHex(cert->get())},
                    {"not_after", FormatRfc3339(na)}, {"last_error", last_error},
                    {"state", SystemClock::Instance().Now() < na ? "renewal failing" : "expired"}});
    if (!SleepFor(wait)) break;
  }
  std::shared_ptr<agent::TunnelManager> old_tunnels;
  {
    std::lock_guard lock(rt.mu);
    old_tunnels = std::move(rt.tunnels);
  }
  // Ends the streams and flushes their events while the control channel is still up.
  if (old_tunnels) old_tunnels->Stop();
  std::shared_ptr<agent::Session> old;
  {
    std::lock_guard lock(rt.mu);
    old = std::move(rt.session);
  }
  if (old) old->Stop();  // publishes status offline, clean disconnect
}

int Run(const Options& o, RunSettings rs, const std::string& config_path, const CLI::App& run_cmd) {
  std::string cfg = config_path;
  if (cfg.empty() && fs::exists(o.state_dir + "/agent.toml")) cfg = o.state_dir + "/agent.toml";
  if (!cfg.empty()) {
    if (auto r = LoadAgentConfig(cfg, rs, run_cmd); !r) {
      std::cerr << "torwart-agent: " << r.error().message() << "\n";
      return 2;
    }
  }
  std::string profile = agent::ActiveProfile(o.state_dir);
  if (auto s = LoadState(agent::ProfileDir(o.state_dir, profile)); !s) {
    std::cerr << "torwart-agent: " << s.error().message() << "\n";
    return 2;
  }
  Runtime rt;
  rt.pin = o.pin;
  auto api = agent::LocalApiServer::Start(
      o.state_dir + "/agent.sock",
      [&rt, root = o.state_dir](const agent::Request& req) { return HandleLocal(rt, root, req); });
  if (!api) {
    std::cerr << "torwart-agent: local API: " << api.error().message() << "\n";
    return 1;
  }
  while (!g_stop) {
    RunProfile(o, rt, rs);
    std::string next;
    {
      std::lock_guard lock(rt.mu);
      next = rt.pending_profile;
      rt.pending_profile.clear();
    }
    if (g_stop) break;
    if (next.empty()) {
      // The profile could not be loaded: wait for a switch or stop.
      SleepFor(std::chrono::hours(1));
      continue;
    }
    log::info("switching to profile {}", next);
  }
  api->reset();
  log::info("torwart-agent stopped");
  return 0;
}

std::string Until(int64_t until) { return FormatRfc3339(FromUnix(until)); }

// Streams, quarantine and consent (the "tunnels" part of status).
void PrintTunnels(const json& t) {
  if (t.contains("error")) {
    std::cout << "tunnels:     unavailable: " << t["error"].get<std::string>() << "\n";
    return;
  }
  if (t.contains("quarantine")) {
    const json& q = t["quarantine"];
    std::cout << "quarantine:  "
              << (q.value("on", false)
                      ? "ON" + (q.value("reason", "").empty() ? std::string()
                                                              : " (" + q.value("reason", "") + ")")
                      : std::string("off"))
              << "\n";
  }
  if (t.contains("consent")) {
    const json& c = t["consent"];
    std::cout << "consent:     ";
    if (!c.value("on", false)) {
      std::cout << "off";
    } else if (c.value("input_on", false)) {
      std::cout << "on (input " << c.value("input", "") << ")";
    } else {
      std::cout << "on until " << Until(c.value("until", int64_t{0}));
    }
    if (c.contains("problem")) std::cout << " [" << c["problem"].get<std::string>() << "]";
    std::cout << "\n";
  }
  if (t.contains("site") && t["site"].contains("error")) {
    std::cout << "site config: INVALID (nothing is allowed): "
              << t["site"]["error"].get<std::string>() << "\n";
  } else if (t.contains("site") && !t["site"].value("present", true)) {
    std::cout << "site config: none (" << t["site"].value("file", "")
              << "): no target is allowed\n";
  } else if (t.contains("site") && t["site"].contains("targets")) {
    std::cout << "targets:     " << t["site"]["targets"].size() << " allowed\n";
  }
  if (t.contains("streams") && t["streams"].is_array()) {
    std::cout << "streams:     " << t["streams"].size() << "\n";
    for (const auto& st : t["streams"]) {
      std::cout << "  " << st.value("id", "") << "  " << st.value("target", "") << "  "
                << st.value("user", "") << "  " << st.value("state", "") << "  until "
                << Until(st.value("deadline", int64_t{0})) << "\n";
    }
  }
  if (t.contains("recordings") && t["recordings"].value("full", false)) {
    std::cout
        << "recordings:  quota FULL of recordings not yet uploaded: new streams are refused\n";
  }
}

void PrintStatus(const json& j) {
  auto str = [&](const json& o, const char* k) {
    return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : std::string();
  };
  std::cout << "profile:     " << str(j, "profile") << "\ndevice:      " << str(j, "device_id")
            << "\nserver:      " << str(j, "server") << "\nkey:         " << str(j, "key_store")
            << "\n";
  if (j.contains("serial")) {
    std::cout << "certificate: " << str(j, "serial") << ", valid until " << str(j, "not_after")
              << (j.value("certificate_valid", false) ? "" : " (EXPIRED)") << "\n";
  }
  if (j.contains("connection")) {
    const json& c = j["connection"];
    std::cout << "connection:  " << str(c, "state");
    if (!str(c, "mqtt_url").empty()) std::cout << " (" << str(c, "mqtt_url") << ")";
    if (c.contains("retry_in_ms")) std::cout << ", retry in " << c["retry_in_ms"].get<int64_t>() << " ms";
    std::cout << "\n";
    if (!str(c, "last_error").empty()) std::cout << "last error:  " << str(c, "last_error") << "\n";
  }
  if (j.value("needs_pin", false)) std::cout << "key PIN:     needed (torwart-agent pin)\n";
  if (!str(j, "last_error").empty()) std::cout << "renewal:     " << str(j, "last_error") << "\n";
  if (j.contains("tunnels") && j["tunnels"].is_object()) PrintTunnels(j["tunnels"]);
}

// What can be said about tunnels without a running agent: the switches on disk.
json OfflineTunnels(const Options& o, const std::string& site_config) {
  std::string path = site_config.empty() ? o.state_dir + "/site.toml" : site_config;
  auto site = agent::LoadSiteConfig(path);
  auto q = agent::ReadQuarantine(o.state_dir);
  auto c = agent::ReadConsent(o.state_dir, site ? site->consent_input : "",
                              ToUnix(SystemClock::Instance().Now()));
  json cj{{"on", c.on}, {"until", c.until}, {"switch", c.switch_on}, {"input_on", c.input_on}};
  if (!c.input.empty()) cj["input"] = c.input;
  if (!c.problem.empty()) cj["problem"] = c.problem;
  json t{{"streams", json::array()},
         {"quarantine", {{"on", q.on}, {"reason", q.reason}, {"since", q.since}}},
         {"consent", cj}};
  if (site) {
    json names = json::array();
    for (const auto& tg : site->targets) names.push_back(tg.name);
    t["site"] = json{{"file", path}, {"present", site->present}, {"targets", names}};
  } else {
    t["site"] = json{{"file", path}, {"error", site.error().message()}};
  }
  return t;
}

int Status(const Options& o) {
  json j;
  auto live = agent::CallLocalApi(o.state_dir + "/agent.sock", "status");
  if (live) {
    j = *live;
  } else {
    std::string profile = agent::ActiveProfile(o.state_dir);
    std::string dir = agent::ProfileDir(o.state_dir, profile);
    if (auto s = LoadState(dir); !s) {
      std::cerr << "torwart-agent: " << s.error().message() << "\n";
      return 2;
    }
    j = IdentityJson(dir, profile);
    j["agent_running"] = false;
    j["connection"] = {{"state", "agent not running"}};
    j["tunnels"] = OfflineTunnels(o, "");
  }
  if (o.json_out) {
    std::cout << j.dump(2) << "\n";
  } else {
    PrintStatus(j);
  }
  return 0;
}

// Thin client of the running agent's local API.
int LocalCall(const Options& o, const std::string& op, const json& args, const std::string& done) {
  auto r = agent::CallLocalApi(o.state_dir + "/agent.sock", op, args);
  if (!r) {
    std::cerr << "torwart-agent: " << r.error().message() << "\n";
    return r.error().Is(Errc::kUnavailable) ? 3 : 1;
  }
  if (o.json_out) {
    std::cout << r->dump(2) << "\n";
  } else if (!done.empty()) {
    std::cout << done << "\n";
  }
  return 0;
}

int ProfileList(const Options& o) {
  json list = agent::ListProfiles(o.state_dir);
  if (o.json_out) {
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  if (list.empty()) std::cout << "no profiles enrolled\n";
  for (auto& p : list) {
    std::cout << (p["active"].get<bool>() ? "* " : "  ") << p["name"].get<std::string>() << "  "
              << p.value("server", "") << "  " << p.value("device_id", "") << "\n";
  }
  return 0;
}

int ProfileUse(const Options& o, const std::string& name) {
  auto r = agent::CallLocalApi(o.state_dir + "/agent.sock", "profile.use", {{"name", name}});
  if (!r && r.error().Is(Errc::kUnavailable)) {
    // No agent running: just record the choice for the next start.
    auto w = agent::SetActiveProfile(o.state_dir, name);
    if (!w) { std::cerr << "torwart-agent: " << w.error().message() << "\n"; return 1; }
    if (o.json_out) std::cout << json{{"profile", name}, {"agent_running", false}}.dump() << "\n";
    else std::cout << "profile " << name << " is active (the agent is not running)\n";
    return 0;
  }
  if (!r) { std::cerr << "torwart-agent: " << r.error().message() << "\n"; return 1; }
  if (o.json_out) std::cout << json{{"profile", name}, {"agent_running", true}}.dump() << "\n";
  else std::cout << "switching the running agent to profile " << name << "\n";
  return 0;
}

// Reads a PIN without echo from the terminal, or one line from stdin when it is not a terminal.
std::string ReadPin() {
  std::string pin;
  if (isatty(STDIN_FILENO)) {
    std::cerr << "PIN of the device key: " << std::flush;
    termios old{};
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, pin);
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  } else {
    std::getline(std::cin, pin);
  }
  return pin;
}

// `torwart-agent consent on --for 2h | off | status`: the on-site switch. Works without a
// running agent (it only writes <state-dir>/consent.json); a running agent is told at once, so
// it audits the change and, on `off`, ends the live streams that needed consent.
int ConsentCmd(const Options& o, const std::string& action, const std::string& for_text,
               const std::string& site_config) {
  int64_t now = ToUnix(SystemClock::Instance().Now());
  if (action == "on" || action == "off") {
    int64_t until = 0;
    json args{{"on", action == "on"}};
    if (action == "on") {
      auto d = ParseDuration(for_text);
      if (!d || d->count() < 60 || d->count() > 30 * 86400) {
        std::cerr << "torwart-agent: --for must be a duration from 1m to 30d, e.g. 2h\n";
        return 2;
      }
      until = now + d->count();
      args["until"] = until;
    }
    // A running agent makes the change itself (audited, live streams ended at once); else the
    // file is written here and applies when the agent starts.
    auto r = agent::CallLocalApi(o.state_dir + "/agent.sock", "consent.set", args);
    bool running = r || !r.error().Is(Errc::kUnavailable);
    if (!r) {
      if (running) {
        std::cerr << "torwart-agent: the running agent did not take the change ("
                  << r.error().message() << "); writing it for the next start\n";
      }
      std::error_code ec;
      fs::create_directories(o.state_dir, ec);
      auto w = action == "on" ? agent::WriteConsentOn(o.state_dir, until, now)
                              : agent::WriteConsentOff(o.state_dir);
      if (!w) {
        std::cerr << "torwart-agent: " << w.error().message() << "\n";
        return 1;
      }
    }
    json out = OfflineTunnels(o, site_config)["consent"];
    out["agent_running"] = running;
    if (r && r->contains("killed")) out["killed"] = (*r)["killed"];
    if (r && r->contains("on")) {  // the running agent's view (its --site-config, its input)
      out["on"] = (*r)["on"];
      out["until"] = (*r)["until"];
    }
    if (o.json_out) {
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    if (action == "on") {
      std::cout << "on-site consent is ON until " << Until(until) << "\n";
    } else {
      std::cout << "on-site consent switched off";
      if (out.value("killed", 0) > 0) {
        std::cout << "; " << out["killed"].get<int>() << " live stream(s) that needed it ended";
      }
      std::cout << "\n";
      if (out.value("on", false)) {
        std::cout << "note: the consent input " << out.value("input", "(see site.toml)")
                  << " still reads 1, so consent stays ON until it is switched off\n";
      }
    }
    if (!r) std::cout << "(the agent is not running: the change applies when it starts)\n";
    return 0;
  }
  // status
  json c;
  auto live = agent::CallLocalApi(o.state_dir + "/agent.sock", "status");
  if (live && live->contains("tunnels") && (*live)["tunnels"].contains("consent")) {
    c = (*live)["tunnels"]["consent"];
    c["agent_running"] = true;
  } else {
    c = OfflineTunnels(o, site_config)["consent"];
    c["agent_running"] = static_cast<bool>(live);
  }
  if (o.json_out) {
    std::cout << c.dump(2) << "\n";
    return 0;
  }
  PrintTunnels(json{{"consent", c}});
  return 0;
}

// `torwart-agent sessions [list] | kill ID | kill --all`, through the running agent.
int SessionsCmd(const Options& o, bool kill, const std::string& id, bool all) {
  std::string sock = o.state_dir + "/agent.sock";
  if (kill) {
    if (all == !id.empty()) {
      std::cerr << "torwart-agent: sessions kill needs a stream ID or --all\n";
      return 2;
    }
    json args = all ? json{{"all", true}} : json{{"id", id}};
    auto r = agent::CallLocalApi(sock, "sessions.kill", args);
    if (!r) {
      std::cerr << "torwart-agent: " << r.error().message() << "\n";
      return r.error().Is(Errc::kUnavailable) ? 3 : 1;
    }
    if (o.json_out) {
      std::cout << r->dump(2) << "\n";
    } else {
      std::cout << (*r)["killed"].get<int64_t>() << " stream(s) ended\n";
    }
    return 0;
  }
  auto r = agent::CallLocalApi(sock, "sessions.list");
  if (!r) {
    std::cerr << "torwart-agent: " << r.error().message() << "\n";
    return r.error().Is(Errc::kUnavailable) ? 3 : 1;
  }
  if (o.json_out) {
    std::cout << r->dump(2) << "\n";
    return 0;
  }
  if (r->empty()) {
    std::cout << "no streams\n";
    return 0;
  }
  std::printf("%-20s %-20s %-28s %-16s %-10s %-20s %s\n", "ID", "TARGET", "USER", "GRANT", "STATE",
              "UNTIL", "BYTES (to/from)");
  for (const auto& st : *r) {
    std::printf("%-20s %-20s %-28s %-16s %-10s %-20s %llu/%llu\n", st.value("id", "").c_str(),
                st.value("target", "").c_str(), st.value("user", "").c_str(),
                st.value("grant", "").c_str(), st.value("state", "").c_str(),
                Until(st.value("deadline", int64_t{0})).c_str(),
                static_cast<unsigned long long>(st.value("bytes_to_target", uint64_t{0})),
                static_cast<unsigned long long>(st.value("bytes_from_target", uint64_t{0})));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"torwart-agent - the torwart agent for gateways and devices.\n"
               "Enroll once with a one-time secret; `run` keeps the control channel up and the certificate\n"
               "renewed, and serves the local API (<state-dir>/agent.sock) that status, connect,\n"
               "disconnect, profile and pin use."};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--json, --state-dir, ...) also after the subcommand
  Options o;
  std::string log_level = "info";
  app.add_option("--state-dir", o.state_dir, "where identity and state are kept (default ./var/torwart-agent)");
  app.add_option("--pin", o.pin, "PIN of the PKCS#11 token (or TORWART_AGENT_PIN)");
  app.add_option("--pkcs11-module", o.pkcs11_module, "PKCS#11 module (default SoftHSM2)");
  app.add_option("--machine-id-file", o.machine_id_file, "machine id source for binding (default /etc/machine-id)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.add_flag("--json", o.json_out, "machine-readable output");
  app.set_version_flag("--version", "torwart-agent 0.1.0");

  auto* enroll = app.add_subcommand("enroll", "generate the device key and enroll with CMP (ir)");
  std::string server, ca, ref, secret, key_spec = "file";
  bool bind = false;
  enroll->add_option("--server", server, "torwartd URL, e.g. https://torwart.example:8443")->required();
  enroll->add_option("--ca", ca, "torwart CA chain (PEM) to trust")->required()->check(CLI::ExistingFile);
  enroll->add_option("--ref", ref, "one-time enrollment reference")->required();
  enroll->add_option("--secret", secret, "one-time enrollment secret")->required();
  enroll->add_option("--key-store", key_spec, "file | file:/path | pkcs11:<RFC 7512 URI>");
  enroll->add_flag("--bind-machine", bind, "report this machine's fingerprint (certificate bound to it)");

  std::string profile = agent::kDefaultProfile;
  enroll->add_option("--profile", profile, "enroll into this server profile (default: \"default\")");

  auto* run = app.add_subcommand("run", "keep running: control channel (MQTT), certificate renewal, local API");
  RunSettings rs;
  int backoff_cap = 60, keepalive = 30, health_interval = 60, inventory_interval = 300;
  std::string config_path;
  run->add_option("--renew-at", rs.renew_fraction, "fraction of the lifetime at which to renew (default 0.667)")->check(CLI::Range(0.1, 0.95));
  run->add_option("--backoff-cap", backoff_cap, "maximum retry delay in seconds (default 60)")->check(CLI::Range(1, 3600));
  run->add_option("--config", config_path, "agent config file (TOML; default <state-dir>/agent.toml if present)")->check(CLI::ExistingFile);
  run->add_option("--mqtt-url", rs.mqtt_url, "broker address, overriding the server's announcement (mqtts://host:port)");
  run->add_option("--mqtt-server-name", rs.mqtt_server_name, "name or IP to verify in the broker certificate (default: the URL host)");
  run->add_option("--keepalive", keepalive, "MQTT keepalive in seconds (default 30)")->check(CLI::Range(5, 3600));
  run->add_option("--health-interval", health_interval, "seconds between health reports (default 60)")->check(CLI::Range(1, 86400));
  run->add_option("--inventory-interval", inventory_interval, "seconds between inventory change checks (default 300)")->check(CLI::Range(1, 86400));
  run->add_option("--inventory-dir", rs.inventory_dir, "directory of executable inventory scripts printing key=value lines");
  run->add_option("--site-config", rs.site_config,
                  "the site's tunnel configuration: allowed targets, consent input, limits "
                  "(default <state-dir>/site.toml; re-read on every stream)");
  auto* renew = app.add_subcommand("renew", "renew the certificate now (kur) and exit");
  auto* status = app.add_subcommand("status", "show identity, certificate and connection state");
  auto* connect = app.add_subcommand("connect", "ask the running agent to (re)connect its control channel now");
  auto* disconnect = app.add_subcommand("disconnect", "ask the running agent to close its control channel until `connect`");
  auto* profile_cmd = app.add_subcommand("profile", "server profiles: list, or switch the agent to another server");
  profile_cmd->require_subcommand(1);
  auto* profile_list = profile_cmd->add_subcommand("list", "list enrolled profiles (* = active)");
  auto* profile_use = profile_cmd->add_subcommand("use", "make NAME active; a running agent moves to that server");
  std::string use_name;
  profile_use->add_option("name", use_name, "profile name")->required();
  auto* pin_cmd = app.add_subcommand("pin", "enter the PIN of a PIN-protected key (prompted, or one line on stdin) for the running agent");
  auto* consent_cmd = app.add_subcommand(
      "consent", "the on-site consent switch for remote maintenance: on --for 2h | off | status");
  consent_cmd->require_subcommand(1);
  std::string consent_for, consent_site_config;
  auto* consent_on = consent_cmd->add_subcommand(
      "on", "allow streams that need on-site consent, for a limited time");
  consent_on->add_option("--for", consent_for, "how long, e.g. 30m, 2h (1m to 30d)")->required();
  auto* consent_off = consent_cmd->add_subcommand(
      "off", "withdraw consent; a running agent ends live streams that needed it");
  auto* consent_status =
      consent_cmd->add_subcommand("status", "show whether consent is on (switch and input)");
  consent_status->add_option("--site-config", consent_site_config,
                             "site.toml naming the consent input (default <state-dir>/site.toml)");
  auto* sessions_cmd = app.add_subcommand(
      "sessions",
      "live tunnel streams of the running agent: list (default) | kill ID | kill --all");
  auto* sessions_list = sessions_cmd->add_subcommand("list", "list live streams");
  auto* sessions_kill =
      sessions_cmd->add_subcommand("kill", "end one stream (ID) or all of them (--all) at once");
  std::string kill_id;
  bool kill_all = false;
  sessions_kill->add_option("id", kill_id, "stream id (st-...)");
  sessions_kill->add_flag("--all", kill_all, "end every stream");

  CLI11_PARSE(app, argc, argv);
  // State paths end up in files (agent.json, key store): keep them absolute, so a relative
  // --state-dir works the same from any working directory.
  {
    std::error_code ec;
    auto abs = fs::absolute(o.state_dir, ec);
    if (!ec) o.state_dir = abs.lexically_normal().string();
  }
  if (o.pin.empty()) {
    if (const char* p = std::getenv("TORWART_AGENT_PIN")) o.pin = p;
  }
  log::Init(log_level);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  if (enroll->parsed()) {
    if (!agent::ValidProfileName(profile)) {
      std::cerr << "torwart-agent: --profile must be 1-64 of [A-Za-z0-9_-]\n";
      return 2;
    }
    Options po = o;
    po.state_dir = agent::ProfileDir(o.state_dir, profile);
    std::error_code ec;
    fs::create_directories(po.state_dir, ec);
    ::chmod(o.state_dir.c_str(), 0700);
    return Enroll(po, server, ca, ref, secret, key_spec, bind);
  }
  if (run->parsed()) {
    rs.backoff_cap = std::chrono::seconds(backoff_cap);
    rs.keepalive = std::chrono::seconds(keepalive);
    rs.health_interval = std::chrono::seconds(health_interval);
    rs.inventory_interval = std::chrono::seconds(inventory_interval);
    return Run(o, rs, config_path, *run);
  }
  if (status->parsed()) return Status(o);
  if (connect->parsed()) return LocalCall(o, "connect", json::object(), "connecting");
  if (disconnect->parsed()) return LocalCall(o, "disconnect", json::object(), "disconnected");
  if (profile_list->parsed()) return ProfileList(o);
  if (profile_use->parsed()) return ProfileUse(o, use_name);
  if (consent_on->parsed()) return ConsentCmd(o, "on", consent_for, "");
  if (consent_off->parsed()) return ConsentCmd(o, "off", "", "");
  if (consent_status->parsed()) return ConsentCmd(o, "status", "", consent_site_config);
  if (sessions_cmd->parsed()) {
    (void)sessions_list;
    return SessionsCmd(o, sessions_kill->parsed(), kill_id, kill_all);
  }
  if (pin_cmd->parsed()) {
    std::string pin = ReadPin();
    if (pin.empty()) { std::cerr << "torwart-agent: no PIN given\n"; return 2; }
    return LocalCall(o, "pin", {{"pin", pin}}, "PIN handed to the agent");
  }
  if (renew->parsed()) {
    Options po = o;
    po.state_dir = agent::ProfileDir(o.state_dir, agent::ActiveProfile(o.state_dir));
    auto s = LoadState(po.state_dir);
    if (!s) { std::cerr << "torwart-agent: " << s.error().message() << "\n"; return 2; }
    auto r = RenewOnce(po, *s);
    if (!r) { std::cerr << "torwart-agent: renewal failed: " << r.error().message() << "\n"; return 1; }
    std::cout << "certificate renewed; valid until " << FormatRfc3339(*r) << "\n";
    return 0;
  }
  return 0;
}
