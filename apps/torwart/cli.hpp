// Shared plumbing of the torwart CLI: global options, the session file, the REST client, and
// output helpers. Each area registers its subcommands from its own cmd_<area>.cpp.
// Single-threaded (a CLI run).
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace torwart::cli {

using nlohmann::json;

struct Globals {
  std::string server, ca, config_dir;
  bool json_out = false;
};

struct SessionFile {
  std::string server, ca, token, user;
};

std::string ConfigDir(const Globals& g);
std::optional<SessionFile> LoadSession(const Globals& g);
bool SaveSession(const Globals& g, const SessionFile& s);

// Prints "torwart: msg" to stderr and exits with `code`.
[[noreturn]] void Die(const std::string& msg, int code = 1);
// Reads a line without echo from a terminal, or a plain line from a pipe.
std::string ReadSecret(const std::string& prompt);

// The REST API of the server in the session (or --server/--ca). Exits with a clear message on
// any error: 1 generic, 2 usage/session, 3 authentication or permission.
class Api {
 public:
  Api(const Globals& g, bool need_session);
  json Call(const std::string& method, const std::string& path, const json& body = nullptr);
  // Same, for endpoints that answer with something other than a JSON document (JSON lines).
  std::string CallRaw(const std::string& method, const std::string& path);
  // Like Call, but hands back HTTP errors (status >= 400, body as JSON or null) instead of
  // exiting; transport errors still exit.
  std::pair<int, json> Try(const std::string& method, const std::string& path,
                           const json& body = nullptr);
  // GET of a binary document (e.g. a recording): body and lower-case response headers. Exits on
  // errors like Call; `max_bytes` caps the body.
  struct Download {
    std::string body;
    std::map<std::string, std::string> headers;
  };
  Download Get(const std::string& path, size_t max_bytes);
  const std::string& server() const { return server_; }
  const std::string& ca() const { return ca_; }

 private:
  std::string server_, ca_, token_;
};

// Percent-encodes a query value.
std::string UrlEncode(const std::string& v);
void PrintJson(const json& j);
// Left-aligned column of width w (at least one space after).
std::string Col(const std::string& s, size_t w);

// A grant certificate on disk (docs/design/grant-certificate.md): <dir>/<id>.pem (leaf, issuing
// CA) and <dir>/<id>.key (0600).
struct GrantCertificate {
  std::string cert_path, key_path;
  std::string not_after;  // RFC 3339
  bool obtained = false;  // fetched from the server in this call
};
// Reuses the files in `dir` (default: <config dir>/grants) when they belong together, name grant
// `id`, are still valid and end at `grant_end` (RFC 3339; empty: any end); otherwise, or with
// `renew`, makes a new P-256 key here and asks the server for a certificate. Exits on errors.
GrantCertificate EnsureGrantCertificate(Api& api, const Globals& g, const std::string& id,
                                        const std::string& dir, const std::string& grant_end,
                                        bool renew);

// Registration of each area's subcommands.
void RegisterSessionCommands(CLI::App& app, Globals& g);
void RegisterUserCommands(CLI::App& app, Globals& g);
void RegisterDeviceCommands(CLI::App& app, Globals& g);
void RegisterAuditCommands(CLI::App& app, Globals& g);
void RegisterMfaCommands(CLI::App& app, Globals& g);
void RegisterPolicyCommands(CLI::App& app, Globals& g);
void RegisterAccessCommands(CLI::App& app, Globals& g);
void RegisterRecordingCommands(CLI::App& app, Globals& g);  // torwart recording list|show
void RegisterConnectCommands(CLI::App& app, Globals& g);        // torwart connect
void RegisterTunnelSessionCommands(CLI::App& app, Globals& g);  // torwart session list|kill
void RegisterReportCommands(CLI::App& app, Globals& g);         // torwart report monthly|subject

}  // namespace torwart::cli
