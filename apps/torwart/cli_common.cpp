#include <fcntl.h>
#include <openssl/err.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/http/client.hpp"
#include "torwart/pki/grant_extension.hpp"
#include "torwart/pki/x509.hpp"

namespace fs = std::filesystem;

namespace torwart::cli {


std::string ConfigDir(const Globals& g) {
  if (!g.config_dir.empty()) return g.config_dir;
  if (const char* d = std::getenv("TORWART_CONFIG_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return std::string(x) + "/torwart";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.config/torwart";
  return ".torwart";
}

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

[[noreturn]] void Die(const std::string& msg, int code) {
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

Api::Api(const Globals& g, bool need_session) {
    auto s = LoadSession(g);
    server_ = !g.server.empty() ? g.server : (s ? s->server : "");
    if (const char* e = std::getenv("TORWART_SERVER"); server_.empty() && e) server_ = e;
    ca_ = !g.ca.empty() ? g.ca : (s ? s->ca : "");
    if (s && (g.server.empty() || g.server == s->server)) token_ = s->token;
    if (server_.empty()) Die("no server: log in with `torwart login --server URL --ca FILE`", 2);
    if (need_session && token_.empty()) Die("not logged in: run `torwart login` first", 2);
}

std::string Api::CallRaw(const std::string& method, const std::string& path) {
  http::ClientSettings cs;
  cs.base_url = server_;
  cs.ca_file = ca_;
  http::Client c(cs);
  std::map<std::string, std::string> h{{"accept", "application/x-ndjson, application/json"}};
  if (!token_.empty()) h["authorization"] = "Bearer " + token_;
  auto r = c.Send(method, path, h, "");
  if (!r) Die(r.error().message());
  if (r->status >= 400) {
    json j = json::parse(r->body, nullptr, false);
    std::string msg = "server answered " + std::to_string(r->status);
    if (!j.is_discarded() && j.contains("error")) msg = j["error"].value("message", msg);
    Die(msg, r->status == 401 || r->status == 403 ? 3 : 1);
  }
  return r->body;
}

Api::Download Api::Get(const std::string& path, size_t max_bytes) {
  http::ClientSettings cs;
  cs.base_url = server_;
  cs.ca_file = ca_;
  cs.max_response_bytes = max_bytes;
  cs.timeout = std::chrono::seconds(300);
  http::Client c(cs);
  std::map<std::string, std::string> h{{"accept", "application/octet-stream, application/json"}};
  if (!token_.empty()) h["authorization"] = "Bearer " + token_;
  auto r = c.Send("GET", path, h, "");
  if (!r) Die(r.error().message());
  if (r->status >= 400) {
    json j = json::parse(r->body, nullptr, false);
    std::string msg = "server answered " + std::to_string(r->status);
    if (!j.is_discarded() && j.contains("error")) msg = j["error"].value("message", msg);
    Die(msg, r->status == 401 || r->status == 403 ? 3 : 1);
  }
  return Download{std::move(r->body), std::move(r->headers)};
}

json Api::Call(const std::string& method, const std::string& path, const json& body) {
  auto [status, j] = Try(method, path, body);
  if (status >= 400) {
    std::string msg = "server answered " + std::to_string(status);
    if (j.is_object() && j.contains("error")) {
      msg = j["error"].value("message", msg);
      if (j["error"].value("code", "") == "unauthenticated") msg += " (run `torwart login`)";
    }
    Die(msg, status == 401 || status == 403 ? 3 : 1);
  }
  return j;
}

std::pair<int, json> Api::Try(const std::string& method, const std::string& path,
                              const json& body) {
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
  if (j.is_discarded()) {
    if (r->status < 400) Die("server sent a response that is not JSON");
    j = nullptr;
  }
  return {r->status, j};
}

std::string UrlEncode(const std::string& v) {
  std::string q;
  for (unsigned char c : v) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      q += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      q += b;
    }
  }
  return q;
}

void PrintJson(const json& j) { std::cout << j.dump(2) << "\n"; }

std::string Col(const std::string& s, size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}


namespace {

// True if the files at `cert_path`/`key_path` can serve grant `id` until `grant_end`.
bool UsableGrantCertificate(const std::string& cert_path, const std::string& key_path,
                            const std::string& id, const std::string& grant_end,
                            std::string* not_after) {
  std::error_code ec;
  if (!fs::exists(cert_path, ec) || !fs::exists(key_path, ec)) return false;
  auto cert = pki::ReadCertFile(cert_path);
  auto key = pki::ReadPrivateKeyFile(key_path);
  if (!cert || !key) return false;
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return false;
  }
  bool names_grant = false;
  for (const auto& uri : pki::SanUris(cert->get())) {
    names_grant = names_grant || uri == std::string(pki::kGrantUriPrefix) + id;
  }
  if (!names_grant) return false;
  TimePoint end = pki::NotAfter(cert->get());
  if (end <= std::chrono::system_clock::now() + std::chrono::seconds(5)) return false;
  if (!grant_end.empty()) {
    TimePoint want;
    if (!ParseRfc3339(grant_end, want)) return false;
    auto diff = std::chrono::duration_cast<std::chrono::seconds>(end - want).count();
    if (diff < -1 || diff > 1) return false;  // the grant changed (e.g. shortened)
  }
  *not_after = FormatRfc3339(end);
  return true;
}

}  // namespace

GrantCertificate EnsureGrantCertificate(Api& api, const Globals& g, const std::string& id,
                                        const std::string& dir_in, const std::string& grant_end,
                                        bool renew) {
  std::string dir = dir_in.empty() ? ConfigDir(g) + "/grants" : dir_in;
  GrantCertificate out{dir + "/" + id + ".pem", dir + "/" + id + ".key", "", false};
  std::error_code ec;
  fs::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  // Several `torwart connect` for one grant may start at once: one checks and fetches at a
  // time, so a key and a certificate from different requests never end up side by side.
  struct Lock {
    int fd;
    ~Lock() {
      if (fd >= 0) ::close(fd);  // also releases the flock
    }
  } lock{::open((dir + "/" + id + ".lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600)};
  if (lock.fd >= 0) ::flock(lock.fd, LOCK_EX);
  if (!renew && UsableGrantCertificate(out.cert_path, out.key_path, id, grant_end, &out.not_after)) {
    return out;
  }
  auto key = pki::GenerateP256Key();
  if (!key) Die(key.error().message());
  auto csr = pki::MakeCsr(key->get(), "torwart-grant-" + id);
  if (!csr) Die(csr.error().message());
  auto csr_pem = pki::CsrToPem(csr->get());
  if (!csr_pem) Die(csr_pem.error().message());
  json r = api.Call("POST", "/api/v1/access/" + id + "/certificate", json{{"csr", *csr_pem}});
  if (auto w = pki::WritePrivateKeyFile(out.key_path, key->get()); !w) Die(w.error().message());
  if (auto w = pki::WriteFileAtomic(out.cert_path, r.value("certificate", ""),
                                    fs::perms::owner_read | fs::perms::owner_write);
      !w) {
    Die(w.error().message());
  }
  out.not_after = r.value("not_after", "");
  out.obtained = true;
  return out;
}

}  // namespace torwart::cli
