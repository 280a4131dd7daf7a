// torwart: the command-line client for operators, technicians, auditors and scripts.
// Talks to torwartd's REST API over HTTPS; `--json` prints machine-readable output.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "torwart/core/clock.hpp"
#include "torwart/http/client.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace torwart;

namespace {

struct Globals {
  std::string server, ca, config_dir;
  bool json_out = false;
};

std::string ConfigDir(const Globals& g) {
  if (!g.config_dir.empty()) return g.config_dir;
  if (const char* d = std::getenv("TORWART_CONFIG_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return std::string(x) + "/torwart";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.config/torwart";
  return ".torwart";
}

struct SessionFile {
  std::string server, ca, token, user;
};

std::optional<SessionFile> LoadSession(const Globals& g) {
  std::ifstream f(ConfigDir(g) + "/session.json");
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return SessionFile{j.value("server", ""), j.value("ca", ""), j.value("token", ""),
                     j.value("user", "")};
}

bool SaveSession(const Globals& g, const SessionFile& s) {
  std::string dir = ConfigDir(g);
  std::error_code ec;
  fs::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  std::string tmp = dir + "/session.json.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  std::string body =
      json{{"server", s.server}, {"ca", s.ca}, {"token", s.token}, {"user", s.user}}.dump(2) + "\n";
  bool ok = ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size());
  ::fsync(fd);
  ::close(fd);
  return ok && ::rename(tmp.c_str(), (dir + "/session.json").c_str()) == 0;
}

[[noreturn]] void Die(const std::string& msg, int code = 1) {
  std::cerr << "torwart: " << msg << "\n";
  std::exit(code);
}

std::string ReadSecret(const std::string& prompt) {
  std::string line;
  if (isatty(STDIN_FILENO)) {
    std::cerr << prompt << std::flush;
    termios old{};
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, line);
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  } else if (!std::getline(std::cin, line)) {
    Die("expected a line on standard input for: " + prompt);
  }
  return line;
}

class Api {
 public:
  Api(const Globals& g, bool need_session) {
    auto s = LoadSession(g);
    server_ = !g.server.empty() ? g.server : (s ? s->server : "");
    if (const char* e = std::getenv("TORWART_SERVER"); server_.empty() && e) server_ = e;
    ca_ = !g.ca.empty() ? g.ca : (s ? s->ca : "");
    if (s && (g.server.empty() || g.server == s->server)) token_ = s->token;
    if (server_.empty()) Die("no server: log in with `torwart login --server URL --ca FILE`", 2);
    if (need_session && token_.empty()) Die("not logged in: run `torwart login` first", 2);
  }
  json Call(const std::string& method, const std::string& path, const json& body = nullptr) {
    http::ClientSettings cs;
    cs.base_url = server_;
    cs.ca_file = ca_;
    http::Client c(cs);
    std::map<std::string, std::string> h{{"accept", "application/json"}};
    if (!token_.empty()) h["authorization"] = "Bearer " + token_;
    std::string b;
    if (!body.is_null()) {
      h["content-type"] = "application/json";
      b = body.dump();
    }
    auto r = c.Send(method, path, h, b);
    if (!r) Die(r.error().message());
    json j = json::parse(r->body, nullptr, false);
    if (r->status >= 400) {
      std::string msg = "server answered " + std::to_string(r->status);
      if (!j.is_discarded() && j.contains("error")) {
        msg = j["error"].value("message", msg);
        if (j["error"].value("code", "") == "unauthenticated") msg += " (run `torwart login`)";
      }
      Die(msg, r->status == 401 || r->status == 403 ? 3 : 1);
    }
    if (j.is_discarded()) Die("server sent a response that is not JSON");
    return j;
  }
  const std::string& server() const { return server_; }
  const std::string& ca() const { return ca_; }

 private:
  std::string server_, ca_, token_;
};

void PrintJson(const json& j) { std::cout << j.dump(2) << "\n"; }

std::string Col(const std::string& s, size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}

void PrintDevice(const json& d) {
  std::cout << "name:     " << d.value("name", "") << "\n"
            << "id:       " << d.value("id", "") << "\n"
            << "site:     " << d.value("site", "") << "\n";
  std::string tags;
  for (auto& t : d.value("tags", json::array())) tags += (tags.empty() ? "" : ", ") + t.get<std::string>();
  std::cout << "tags:     " << (tags.empty() ? "-" : tags) << "\n"
            << "status:   " << d.value("status", "") << "\n";
  if (d.contains("certificate")) {
    std::cout << "cert:     serial " << d["certificate"].value("serial", "") << ", valid until "
              << d["certificate"].value("not_after", "") << "\n";
  }
  if (d.value("bind_machine", false)) {
    std::cout << "binding:  machine " << d.value("machine_fingerprint", "(not yet enrolled)") << "\n";
  }
  if (d.contains("certificates") && !d["certificates"].empty()) {
    std::cout << "certificates:\n";
    for (auto& c : d["certificates"]) {
      std::cout << "  " << Col(c.value("serial", ""), 34) << Col(c.value("status", ""), 8)
                << c.value("not_before", "") << " .. " << c.value("not_after", "") << "\n";
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"torwart - secure remote maintenance: log in, register devices, read the audit trail."};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--server", g.server, "torwartd URL, e.g. https://127.0.0.1:8443 (remembered at login)");
  app.add_option("--ca", g.ca, "CA chain (PEM) to verify the server (remembered at login)");
  app.add_option("--config-dir", g.config_dir, "where the session is kept (default ~/.config/torwart)");
  app.add_flag("--json", g.json_out, "machine-readable output");
  app.set_version_flag("--version", "torwart 0.1.0");

  // login / logout / passwd / whoami
  auto* login = app.add_subcommand("login", "log in and keep a session token (0600) in the config dir");
  std::string user;
  bool pw_stdin = false;
  login->add_option("-u,--user", user, "user name")->required();
  login->add_flag("--password-stdin", pw_stdin, "read the password from standard input");
  login->callback([&] {
    Api api(g, false);
    std::string pw = ReadSecret("Password for " + user + ": ");
    json r = api.Call("POST", "/api/v1/auth/login", {{"user", user}, {"password", pw}});
    if (!SaveSession(g, {api.server(), api.ca(), r.value("token", ""), user})) {
      Die("cannot write the session file in " + ConfigDir(g));
    }
    bool must = r.value("must_change_password", false);
    if (g.json_out) {
      r.erase("token");
      PrintJson(r);
    } else {
      std::cout << "Logged in to " << api.server() << " as " << user << " (" << r.value("role", "")
                << "), session valid until " << r.value("expires", "") << ".\n";
    }
    if (must && !pw_stdin && isatty(STDIN_FILENO)) {
      std::cout << "Your one-time password must be changed now.\n";
      std::string n1 = ReadSecret("New password (at least 12 characters): ");
      std::string n2 = ReadSecret("Repeat new password: ");
      if (n1 != n2) Die("the two passwords differ; run `torwart passwd` to try again");
      Api a2(g, true);
      a2.Call("POST", "/api/v1/auth/password", {{"old_password", pw}, {"new_password", n1}});
      std::cout << "Password changed.\n";
    } else if (must && !g.json_out) {
      std::cout << "Your one-time password must be changed before anything else: run `torwart passwd`.\n";
    }
  });
  auto* passwd = app.add_subcommand("passwd", "change your password (reads current and new password; "
                                              "from stdin: two lines)");
  passwd->callback([&] {
    Api api(g, true);
    std::string o = ReadSecret("Current password: ");
    std::string n = ReadSecret("New password (at least 12 characters): ");
    if (isatty(STDIN_FILENO) && ReadSecret("Repeat new password: ") != n) Die("the two passwords differ");
    api.Call("POST", "/api/v1/auth/password", {{"old_password", o}, {"new_password", n}});
    if (g.json_out) PrintJson({{"changed", true}}); else std::cout << "Password changed.\n";
  });
  app.add_subcommand("logout", "end the session")->callback([&] {
    Api api(g, true);
    api.Call("POST", "/api/v1/auth/logout");
    auto s = LoadSession(g);
    if (s) { s->token.clear(); SaveSession(g, *s); }
    if (!g.json_out) std::cout << "Logged out.\n"; else PrintJson({{"logged_out", true}});
  });
  app.add_subcommand("whoami", "show the logged-in user")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/me");
    if (g.json_out) PrintJson(r); else std::cout << r.value("user", "") << " (" << r.value("role", "") << ") at " << api.server() << "\n";
  });

  // users
  auto* users = app.add_subcommand("user", "manage users (admin)");
  users->require_subcommand(1);
  auto* uadd = users->add_subcommand("add", "create a user; prints a one-time password");
  std::string uname, urole;
  uadd->add_option("NAME", uname, "login name")->required();
  uadd->add_option("--role", urole, "admin, operator, approver, technician, auditor, vendor")->required();
  uadd->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/users", {{"name", uname}, {"role", urole}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "User " << uname << " (" << urole << ") created. One-time password (shown once):\n\n    "
              << r.value("one_time_password", "") << "\n\nIt must be changed at the first login.\n";
  });
  users->add_subcommand("list", "list users")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/users");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("NAME", 20) << Col("ROLE", 12) << "STATE\n";
    for (auto& u : r["users"]) {
      std::string st = u.value("disabled", false) ? "disabled" : u.contains("locked_until") ? "locked" : u.value("must_change_password", false) ? "password change pending" : "active";
      std::cout << Col(u.value("name", ""), 20) << Col(u.value("role", ""), 12) << st << "\n";
    }
  });

  // devices
  auto* dev = app.add_subcommand("device", "register, inspect and revoke devices (gateways)");
  dev->require_subcommand(1);
  auto* dadd = dev->add_subcommand("add", "register a device; prints a one-time enrollment reference and secret");
  std::string dname, dsite, dttl, dreason;
  std::vector<std::string> dtags;
  bool dbind = false;
  dadd->add_option("NAME", dname, "device name")->required();
  dadd->add_option("--site", dsite, "site the device belongs to")->required();
  dadd->add_option("--tag", dtags, "tag (repeatable)");
  dadd->add_flag("--bind-machine", dbind, "bind the certificate to the machine it enrolls on");
  dadd->add_option("--ttl", dttl, "how long the enrollment secret stays valid (default 24h)");
  dadd->callback([&] {
    Api api(g, true);
    json body{{"name", dname}, {"site", dsite}, {"tags", dtags}, {"bind_machine", dbind}};
    if (!dttl.empty()) body["enrollment_ttl"] = dttl;
    json r = api.Call("POST", "/api/v1/devices", body);
    if (g.json_out) { PrintJson(r); return; }
    auto& e = r["enrollment"];
    std::cout << "Device " << dname << " registered (id " << r.value("id", "") << ").\n\n"
              << "One-time enrollment credentials (single use, valid until " << e.value("expires", "") << "):\n"
              << "    reference: " << e.value("reference", "") << "\n"
              << "    secret:    " << e.value("secret", "") << "\n\n"
              << "On the device:\n"
              << "    torwart-agent enroll --server " << api.server() << " --ca chain.pem \\\n"
              << "        --ref " << e.value("reference", "") << " --secret " << e.value("secret", "") << " --key-store file\n";
  });
  dev->add_subcommand("list", "list devices")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/devices");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("NAME", 20) << Col("SITE", 14) << Col("STATUS", 11) << "CERTIFICATE VALID UNTIL\n";
    for (auto& d : r["devices"]) {
      std::cout << Col(d.value("name", ""), 20) << Col(d.value("site", ""), 14) << Col(d.value("status", ""), 11)
                << (d.contains("certificate") ? d["certificate"].value("not_after", "") : "-") << "\n";
    }
  });
  auto* dshow = dev->add_subcommand("show", "show one device with its certificates");
  dshow->add_option("NAME", dname, "device name")->required();
  dshow->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/devices/" + dname);
    if (g.json_out) PrintJson(r); else PrintDevice(r);
  });
  auto* dsecret = dev->add_subcommand("enrollment", "issue a new one-time enrollment secret for a device");
  dsecret->add_option("NAME", dname, "device name")->required();
  dsecret->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/enrollment", json::object());
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "reference: " << r["enrollment"].value("reference", "") << "\nsecret:    "
              << r["enrollment"].value("secret", "") << "\nvalid until " << r["enrollment"].value("expires", "") << "\n";
  });
  auto* drevoke = dev->add_subcommand("revoke", "revoke every certificate of a device (CRL, renewal refused)");
  drevoke->add_option("NAME", dname, "device name")->required();
  drevoke->add_option("--reason", dreason, "why (e.g. keyCompromise, cessationOfOperation, or free text)")->required();
  drevoke->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/revoke", {{"reason", dreason}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Device " << dname << " revoked; " << r.value("certificates_revoked", 0)
              << " certificate(s) on the CRL. Renewal and re-enrollment are refused.\n";
  });

  // audit
  auto* aud = app.add_subcommand("audit", "read the audit trail (admin, auditor)");
  aud->require_subcommand(1);
  auto* alist = aud->add_subcommand("list", "list audit events, oldest first");
  std::string atype, aactor, atarget, asince, auntil;
  int alimit = 100;
  alist->add_option("--type", atype, "event type prefix, e.g. pki. or device.revoke");
  alist->add_option("--actor", aactor, "user name or device id");
  alist->add_option("--target", atarget, "target");
  alist->add_option("--since", asince, "RFC 3339 time");
  alist->add_option("--until", auntil, "RFC 3339 time");
  alist->add_option("--limit", alimit, "at most this many events (default 100)");
  alist->callback([&] {
    Api api(g, true);
    std::string q = "/api/v1/audit?limit=" + std::to_string(alimit);
    auto add = [&](const char* k, const std::string& v) {
      if (v.empty()) return;
      q += std::string("&") + k + "=";
      for (unsigned char c : v) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') q += static_cast<char>(c);
        else { char b[4]; std::snprintf(b, sizeof b, "%%%02X", c); q += b; }
      }
    };
    add("type", atype); add("actor", aactor); add("target", atarget); add("since", asince); add("until", auntil);
    json r = api.Call("GET", q);
    if (g.json_out) { PrintJson(r); return; }
    for (auto& e : r["events"]) {
      std::cout << e.value("time", "") << "  " << Col(e.value("type", ""), 24) << Col(e.value("result", ""), 8)
                << Col(e.value("actor", "-").empty() ? "-" : e.value("actor", "-"), 14)
                << e.value("target", "") << (e.value("reason", "").empty() ? "" : "  (" + e.value("reason", "") + ")") << "\n";
    }
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
