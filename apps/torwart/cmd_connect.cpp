// torwart CLI command `connect`: the technician's end of a tunnel (docs/design/tunnel.md).
// Finds the caller's active grant for SITE/TARGET, makes sure a grant certificate exists, and
// runs a tunnel::Forwarder on a local port until the grant ends, a signal arrives, or the
// command given with --exec ends. Signals are taken synchronously (sigtimedwait) on the main
// thread; the Forwarder's I/O thread only prints through Reporter.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <thread>

#include "cli.hpp"
#include "connect_util.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/policy/policy.hpp"
#include "torwart/tunnel/endpoint.hpp"

namespace torwart::cli {
namespace {

using SysClock = std::chrono::system_clock;

constexpr int kExitNoGrant = 3;
constexpr int kExitGrantEnded = 4;

struct Grant {
  json raw;
  std::string id, site, target, ends;
  TimePoint end;
};

Grant ToGrant(const json& r) {
  Grant g{r, r.value("id", ""), r.value("site", ""), r.value("target", ""), r.value("ends", ""),
          {}};
  if (!ParseRfc3339(g.ends, g.end)) Die("the server sent grant " + g.id + " without a valid end");
  return g;
}

[[noreturn]] void NoGrant(const std::string& what, const std::string& extra = "") {
  Die("no active grant for " + what + extra + " — request one: torwart access request " + what +
          " --reason …",
      kExitNoGrant);
}

// The caller's active grant for site/target: `grant_id` if given, else the one ending last.
Grant FindGrant(Api& api, const std::string& site, const std::string& target,
                const std::string& grant_id) {
  const std::string what = site + "/" + target;
  if (!grant_id.empty()) {
    auto [status, r] = api.Try("GET", "/api/v1/access/" + UrlEncode(grant_id));
    if (status == 404) NoGrant(what, " (grant " + grant_id + " does not exist)");
    if (status >= 400) {
      std::string msg = r.is_object() && r.contains("error")
                            ? r["error"].value("message", "")
                            : "server answered " + std::to_string(status);
      Die(msg, status == 401 || status == 403 ? 3 : 1);
    }
    if (r.value("site", "") != site || r.value("target", "") != target) {
      Die("grant " + grant_id + " is for " + r.value("site", "") + "/" + r.value("target", "") +
              ", not " + what,
          2);
    }
    if (r.value("state", "") != "active") {
      NoGrant(what, " (grant " + grant_id + " is " + r.value("state", "") + ")");
    }
    return ToGrant(r);
  }
  json list = api.Call("GET", "/api/v1/access?filter=mine");
  std::optional<Grant> best;
  bool pending = false;
  for (const auto& r : list.value("requests", json::array())) {
    if (r.value("site", "") != site || r.value("target", "") != target) continue;
    std::string state = r.value("state", "");
    pending = pending || state == "pending";
    if (state != "active") continue;
    Grant g = ToGrant(r);
    if (!best || g.end > best->end) best = std::move(g);
  }
  if (!best) NoGrant(what, pending ? " (a request is still waiting for approval)" : "");
  return *best;
}

// The target's protocol: from the grant if the server says it, else from the active policy (if
// the caller may read it), else from the grant's scopes ("modbus:read" → modbus); "" if unknown.
// Also the target's gateway name, when the policy was readable.
std::pair<std::string, std::string> ProtocolAndGateway(Api& api, const Grant& g) {
  std::string protocol = g.raw.value("protocol", "");
  std::string gateway = g.raw.value("gateway", "");
  if (protocol.empty() || gateway.empty()) {
    auto [status, r] = api.Try("GET", "/api/v1/policy");
    if (status == 200 && r.is_object() && r.contains("text") && r["text"].is_string()) {
      policy::CompileOptions opts;
      opts.run_tests = false;
      auto p = policy::Compile(r["text"].get<std::string>(), opts);
      if (p) {
        if (const policy::Target* t = p->FindTarget(g.target); t && t->site == g.site) {
          if (protocol.empty()) protocol = t->protocol;
          if (gateway.empty()) gateway = t->gateway;
        }
      }
    }
  }
  if (protocol.empty()) {
    for (const auto& s : g.raw.value("scopes", json::array())) {
      if (!s.is_string()) continue;
      std::string scope = s.get<std::string>();
      if (size_t colon = scope.find(':'); colon != std::string::npos && colon > 0) {
        protocol = scope.substr(0, colon);
        break;
      }
    }
  }
  return {protocol, gateway};
}

// "valid until 14:05 (in 42m)" in local time.
std::string ValidUntil(TimePoint end) {
  std::time_t t = SysClock::to_time_t(end);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M", &tm);
  auto left = std::chrono::duration_cast<std::chrono::seconds>(end - SysClock::now());
  return std::string("valid until ") + buf + " (in " + HumanLeft(left) + ")";
}

// Output of the Forwarder's thread and the main thread, one line at a time.
class Reporter {
 public:
  explicit Reporter(bool json_out) : json_(json_out) {}
  void Event(const json& j, const std::string& human, bool to_stdout = false) {
    std::lock_guard lock(mu_);
    if (json_) {
      std::cout << j.dump() << std::endl;
    } else if (!human.empty()) {
      (to_stdout ? std::cout : std::cerr) << human << std::endl;
    }
  }

 private:
  bool json_;
  std::mutex mu_;
};

// Watches the grant on the server (every 15 s) and raises SIGUSR1 when it is no longer active.
// Errors reaching the server are ignored: the local deadline still holds.
class GrantWatch {
 public:
  GrantWatch(http::ClientSettings cs, std::string token, std::string grant_id)
      : cs_(std::move(cs)), token_(std::move(token)), id_(std::move(grant_id)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~GrantWatch() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  std::string state() {
    std::lock_guard lock(mu_);
    return state_;
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::seconds(15), [this] { return stop_; })) {
      lock.unlock();
      http::ClientSettings cs = cs_;
      cs.timeout = std::chrono::seconds(10);
      http::Client c(cs);
      auto r = c.Send("GET", "/api/v1/access/" + UrlEncode(id_),
                      {{"accept", "application/json"}, {"authorization", "Bearer " + token_}});
      std::string state;
      if (r && r->status == 200) {
        auto j = json::parse(r->body, nullptr, false);
        if (j.is_object()) state = j.value("state", "");
      } else if (r && r->status == 404) {
        state = "gone";
      }
      lock.lock();
      if (!state.empty() && state != "active") {
        state_ = state;
        ::kill(::getpid(), SIGUSR1);
        return;
      }
    }
  }

  http::ClientSettings cs_;
  std::string token_, id_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string state_;
  std::thread thread_;
};

struct ConnectOptions {
  std::string what, bind = "127.0.0.1", grant, exec;
  int local_port = 0;
};

int Connect(Globals& g, const ConnectOptions& o) {
  size_t slash = o.what.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == o.what.size()) {
    Die("give the target as SITE/TARGET", 2);
  }
  const std::string site = o.what.substr(0, slash), target = o.what.substr(slash + 1);
  // The tunnel library logs to stderr; its per-connection news is what on_end reports already.
  log::Init("warn");
  Api api(g, true);
  Grant grant = FindGrant(api, site, target, o.grant);
  if (api.ca().empty()) {
    Die("no CA file: log in with --ca FILE (the tunnel trusts only torwart's own CA)", 2);
  }

  auto [wk_status, wk] = api.Try("GET", "/.well-known/torwart/agent.json");
  std::string relay_url = wk_status == 200 && wk.is_object() ? wk.value("relay_url", "") : "";
  if (relay_url.empty())
    Die("the server offers no tunnel relay (no relay_url in /.well-known/torwart/agent.json)");
  auto relay = ParseRelayUrl(relay_url);
  if (!relay) Die("the server's relay_url is not tls://host:port: " + relay_url);

  auto [protocol, gateway] = ProtocolAndGateway(api, grant);
  std::string expected_device;
  if (!gateway.empty()) {  // pin the gateway's device id when the caller may read it
    auto [st, d] = api.Try("GET", "/api/v1/devices/" + UrlEncode(gateway));
    if (st == 200 && d.is_object()) expected_device = d.value("id", "");
  }

  GrantCertificate gc = EnsureGrantCertificate(api, g, grant.id, "", grant.ends, false);
  auto chain = pki::ReadFile(gc.cert_path);
  auto key = pki::ReadPrivateKeyFile(gc.key_path);
  if (!chain) Die("reading " + gc.cert_path + ": " + chain.error().message());
  if (!key) Die("reading " + gc.key_path + ": " + key.error().message());
  auto outer = tunnel::MakeOuterClientContext(*chain, key->get(), api.ca());
  if (!outer) Die("outer TLS: " + outer.error().message());
  auto inner = tunnel::MakeInnerClientContext(*chain, key->get(), api.ca());
  if (!inner) Die("inner TLS: " + inner.error().message());

  // Signals are taken by sigtimedwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1}) sigaddset(&sigs, s);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &sigs, &old_mask);

  Reporter out(g.json_out);
  tunnel::ForwarderSettings fs;
  std::string bind = o.bind;
  if (bind.size() > 2 && bind.front() == '[' && bind.back() == ']')
    bind = bind.substr(1, bind.size() - 2);
  fs.listen = HostForUrl(bind) + ":" + std::to_string(o.local_port);
  fs.relay_host = relay->host;
  fs.relay_port = relay->port;
  fs.outer = std::move(*outer);
  fs.inner = std::move(*inner);
  tunnel::ForwarderHooks hooks;
  hooks.verify_gateway = [expected_device](const std::string& der, const std::string& device) {
    return VerifyGateway(der, device, expected_device);
  };
  hooks.on_open = [&out](const std::string& stream, const std::string& peer) {
    out.Event(json{{"event", "open"}, {"stream", stream}, {"peer", peer}},
              "torwart: stream " + stream + " opened (" + peer + ")");
  };
  hooks.on_end = [&out](const std::string& stream, const std::string& reason, bool error) {
    json j{{"event", "end"}, {"stream", stream}, {"reason", reason}, {"error", error}};
    std::string human = stream.empty() ? "torwart: connection failed: " + reason
                        : error        ? "torwart: stream " + stream + " failed: " + reason
                                       : "torwart: stream " + stream + " ended: " + reason;
    out.Event(j, human);
  };
  auto fwd = tunnel::Forwarder::Start(std::move(fs), std::move(hooks));
  if (!fwd)
    Die("cannot listen on " + o.bind + ":" + std::to_string(o.local_port) + ": " +
        fwd.error().message());
  const uint16_t port = (*fwd)->port();
  std::string host = bind;
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";

  auto until = ValidUntil(grant.end);
  json listening{{"event", "listening"},       {"port", port},         {"host", host},
                 {"grant", grant.id},          {"until", grant.ends},  {"site", site},
                 {"target", target},           {"protocol", protocol}, {"relay", relay_url},
                 {"certificate", gc.cert_path}};
  std::string human = "Tunnel to " + o.what + " on " + HostForUrl(host) + ":" +
                      std::to_string(port) + " (grant " + grant.id + ", " + until + ").\n";
  if (o.exec.empty()) {
    auto lines = UsageLines(protocol, host, port);
    listening["usage"] = lines.front();
    human += "Use it:\n";
    for (const auto& l : lines) human += "    " + l + "\n";
    human += "Every connection is a separate stream; Ctrl-C ends the tunnel.";
  } else {
    human += "Running: " + Substitute(o.exec, HostForUrl(host), std::to_string(port));
  }
  out.Event(listening, human, o.exec.empty());

  pid_t child = -1;
  if (!o.exec.empty()) {
    ::setenv("TORWART_PORT", std::to_string(port).c_str(), 1);
    ::setenv("TORWART_HOST", host.c_str(), 1);
    std::string cmd = Substitute(o.exec, HostForUrl(host), std::to_string(port));
    std::cout.flush();
    child = ::fork();
    if (child < 0) Die("fork failed");
    if (child == 0) {
      pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }

  std::optional<GrantWatch> watch;
  if (auto s = LoadSession(g); s && !s->token.empty()) {
    http::ClientSettings cs;
    cs.base_url = api.server();
    cs.ca_file = api.ca();
    watch.emplace(cs, s->token, grant.id);
  }

  int exit_code = 0;
  std::string why;
  for (;;) {
    auto left = grant.end - SysClock::now();
    if (left <= SysClock::duration::zero()) {
      why = "grant " + grant.id + " expired";
      exit_code = kExitGrantEnded;
      break;
    }
    auto wait = std::min<SysClock::duration>(left, std::chrono::seconds(1));
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    siginfo_t info{};
    int sig = sigtimedwait(&sigs, &info, &ts);
    if (sig < 0) continue;  // timeout or EINTR
    if (sig == SIGCHLD && child > 0) {
      int status = 0;
      if (::waitpid(child, &status, WNOHANG) == child) {
        child = -1;
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        why = "command ended with status " + std::to_string(exit_code);
        break;
      }
      continue;
    }
    if (sig == SIGUSR1) {
      why =
          "grant " + grant.id + " is " + (watch ? watch->state() : std::string("no longer active"));
      exit_code = kExitGrantEnded;
      break;
    }
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      why = std::string("stopped (") +
            (sig == SIGINT    ? "SIGINT"
             : sig == SIGTERM ? "SIGTERM"
                              : "SIGHUP") +
            ")";
      if (child > 0) {  // pass it on and take the command's status
        ::kill(child, sig);
        int status = 0;
        ::waitpid(child, &status, 0);
        child = -1;
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      break;
    }
  }
  if (child > 0) {  // the grant ended while the command runs
    ::kill(child, SIGTERM);
    int status = 0;
    ::waitpid(child, &status, 0);
  }
  watch.reset();
  (*fwd)->Stop();
  out.Event(json{{"event", "closed"}, {"reason", why}, {"exit", exit_code}},
            "torwart: tunnel closed: " + why);
  return exit_code;
}

}  // namespace

void RegisterConnectCommands(CLI::App& app, Globals& g) {
  static ConnectOptions o;
  auto* c = app.add_subcommand(
      "connect", "open a local port that tunnels to a target you hold an active grant for");
  c->add_option("TARGET", o.what, "SITE/TARGET, e.g. werk-hamburg/presse-1-plc")->required();
  c->add_option("--local-port", o.local_port, "local port to listen on (default 0: a free one)")
      ->check(CLI::Range(0, 65535));
  c->add_option("--bind", o.bind, "local address to listen on (default 127.0.0.1)");
  c->add_option("--grant", o.grant, "use this grant (default: your active one ending last)");
  c->add_option("--exec", o.exec,
                "run CMD (via /bin/sh -c) against the tunnel and close when it ends; {port} and "
                "{host} are replaced, TORWART_PORT/TORWART_HOST are set; exit status = CMD's");
  c->add_flag("--json", g.json_out, "JSON lines: listening, open, end, closed");
  c->footer(
      "Each TCP connection to the local port becomes one end-to-end encrypted stream: TLS to the "
      "relay in torwartd, inside it mutual TLS with the gateway (your grant certificate, kept in "
      "<config dir>/grants/, against its device certificate). The tunnel closes when the grant "
      "ends (exit 4), on Ctrl-C/SIGTERM (exit 0), or when the --exec command ends. Exit 3: no "
      "active grant (request one with `torwart access request`).");
  c->callback([&g] { std::exit(Connect(g, o)); });
}

}  // namespace torwart::cli
