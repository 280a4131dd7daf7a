// torwart-agent: runs on the gateway or device with no person at hand. Enrolls with CMP using a
// one-time secret (key generated on the device: file or PKCS#11 token), then keeps its
// certificate fresh: renews at ~2/3 of the lifetime with jitter, retrying with backoff.
// Outbound connections only.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "torwart/core/clock.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"
#include "torwart/net/backoff.hpp"
#include "torwart/pki/cmp_client.hpp"
#include "torwart/pki/fingerprint.hpp"
#include "torwart/pki/key_store.hpp"
#include "torwart/pki/x509.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace torwart;

namespace {

std::atomic<bool> g_stop{false};
std::mutex g_mu;
std::condition_variable g_cv;

void OnSignal(int) {
  g_stop = true;
  g_cv.notify_all();
}

// Sleeps until `d` passed or a stop signal arrived. Returns false when stopping.
bool SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(g_mu);
  return !g_cv.wait_for(lock, d, [] { return g_stop.load(); });
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
  std::string server, ca_file, key_store, device_id, device_name;
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

int Run(const Options& o, double renew_fraction, std::chrono::seconds backoff_cap) {
  auto s = LoadState(o.state_dir);
  if (!s) { std::cerr << "torwart-agent: " << s.error().message() << "\n"; return 2; }
  log::info("torwart-agent running as device {} against {}", s->device_id, s->server);
  net::Backoff backoff(std::chrono::seconds(1), backoff_cap);
  std::mt19937_64 rng(std::random_device{}());
  std::string last_error;
  while (!g_stop) {
    auto pem = ReadFile(o.state_dir + "/device.pem");
    auto cert = pem ? pki::CertFromPem(*pem) : Expected<pki::X509Ptr>(MakeError(pem.error()));
    if (!cert) { std::cerr << "torwart-agent: " << cert.error().message() << "\n"; return 1; }
    TimePoint nb = pki::NotBefore(cert->get()), na = pki::NotAfter(cert->get());
    auto lifetime = na - nb;
    // Renew at ~2/3 of the lifetime, +-5 % jitter so a fleet does not renew in lock-step.
    std::uniform_real_distribution<double> jitter(-0.05, 0.05);
    auto renew_at = nb + std::chrono::duration_cast<Duration>(lifetime * (renew_fraction + jitter(rng)));
    TimePoint now = SystemClock::Instance().Now();
    WriteStatus(o, {{"device_id", s->device_id}, {"serial", pki::SerialHex(cert->get())},
                    {"not_after", FormatRfc3339(na)}, {"next_renewal", FormatRfc3339(renew_at)},
                    {"last_error", last_error}, {"state", now < na ? "valid" : "expired"}});
    if (now < renew_at) {
      if (!SleepFor(std::chrono::duration_cast<std::chrono::milliseconds>(renew_at - now))) break;
      continue;
    }
    auto r = RenewOnce(o, *s);
    if (r) {
      log::info("certificate renewed; valid until {}", FormatRfc3339(*r));
      last_error.clear();
      backoff.Reset();
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
  log::info("torwart-agent stopped");
  return 0;
}

int Status(const Options& o) {
  auto s = LoadState(o.state_dir);
  if (!s) { std::cerr << "torwart-agent: " << s.error().message() << "\n"; return 2; }
  auto pem = ReadFile(o.state_dir + "/device.pem");
  auto cert = pem ? pki::CertFromPem(*pem) : Expected<pki::X509Ptr>(MakeError(pem.error()));
  json j{{"device_id", s->device_id}, {"server", s->server}, {"key_store", s->key_store}};
  if (cert) {
    TimePoint na = pki::NotAfter(cert->get());
    j["serial"] = pki::SerialHex(cert->get());
    j["not_after"] = FormatRfc3339(na);
    j["certificate_valid"] = SystemClock::Instance().Now() < na;
  }
  if (auto st = ReadFile(o.state_dir + "/status.json"); st) {
    auto sj = json::parse(*st, nullptr, false);
    if (!sj.is_discarded() && sj.contains("last_error")) j["last_error"] = sj["last_error"];
  }
  if (o.json_out) { std::cout << j.dump(2) << "\n"; return 0; }
  std::cout << "device:      " << s->device_id << "\nserver:      " << s->server
            << "\nkey:         " << s->key_store << "\n";
  if (cert) {
    std::cout << "certificate: " << j["serial"].get<std::string>() << ", valid until "
              << j["not_after"].get<std::string>()
              << (j["certificate_valid"].get<bool>() ? "" : " (EXPIRED)") << "\n";
  }
  if (j.contains("last_error") && !j["last_error"].get<std::string>().empty()) {
    std::cout << "last error:  " << j["last_error"].get<std::string>() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"torwart-agent - the torwart agent for gateways and devices.\n"
               "Enroll once with a one-time secret, then `run` keeps the certificate renewed."};
  app.require_subcommand(1);
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

  auto* run = app.add_subcommand("run", "keep running: renew the certificate before it expires");
  double renew_fraction = 2.0 / 3.0;
  int backoff_cap = 60;
  run->add_option("--renew-at", renew_fraction, "fraction of the lifetime at which to renew (default 0.667)")->check(CLI::Range(0.1, 0.95));
  run->add_option("--backoff-cap", backoff_cap, "maximum retry delay in seconds (default 60)")->check(CLI::Range(1, 3600));
  auto* renew = app.add_subcommand("renew", "renew the certificate now (kur) and exit");
  auto* status = app.add_subcommand("status", "show identity and certificate state");

  CLI11_PARSE(app, argc, argv);
  if (o.pin.empty()) {
    if (const char* p = std::getenv("TORWART_AGENT_PIN")) o.pin = p;
  }
  log::Init(log_level);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  if (enroll->parsed()) return Enroll(o, server, ca, ref, secret, key_spec, bind);
  if (run->parsed()) return Run(o, renew_fraction, std::chrono::seconds(backoff_cap));
  if (status->parsed()) return Status(o);
  if (renew->parsed()) {
    auto s = LoadState(o.state_dir);
    if (!s) { std::cerr << "torwart-agent: " << s.error().message() << "\n"; return 2; }
    auto r = RenewOnce(o, *s);
    if (!r) { std::cerr << "torwart-agent: renewal failed: " << r.error().message() << "\n"; return 1; }
    std::cout << "certificate renewed; valid until " << FormatRfc3339(*r) << "\n";
    return 0;
  }
  return 0;
}
