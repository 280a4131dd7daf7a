// The agent's local control API: JSON lines over a Unix stream socket in the state directory
// (docs/design/agent-local-api.md). The machine's own software and the `torwart-agent` CLI
// subcommands (status, connect, disconnect, profile, pin) are its clients.
// LocalApiServer runs one accept thread and serves each connection on its own short-lived thread;
// the Handler is called concurrently from those threads and must be thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "torwart/core/error.hpp"

namespace torwart::agent {

inline constexpr size_t kMaxRequestBytes = 64 * 1024;

struct Request {
  std::string op;       // status | connect | disconnect | profile.list | profile.use | pin |
                        // sessions.list | sessions.kill | consent.set | consent.changed
  nlohmann::json args;  // object; op-specific
  nlohmann::json id;    // echoed back if present (string or number), else null
};

// Parses one request line. Untrusted input: never throws, rejects anything not exactly
// {"v":1,"op":<known op>,["args":{...}],["id":<string|number>]} with a clear message.
Expected<Request> ParseRequest(std::string_view line);

// {"v":1,"ok":true,"result":...} / {"v":1,"ok":false,"error":"..."}, one line with '\n'.
std::string OkResponse(const Request& req, const nlohmann::json& result);
std::string ErrorResponse(const nlohmann::json& id, const std::string& message);

// Client side (the CLI): connects, sends one request, reads one response line.
Expected<nlohmann::json> CallLocalApi(const std::string& socket_path, const std::string& op,
                                      const nlohmann::json& args = nlohmann::json::object(),
                                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

class LocalApiServer {
 public:
  // Returns the result object, or an error for an ok=false answer.
  using Handler = std::function<Expected<nlohmann::json>(const Request&)>;

  // Binds `socket_path` (an existing stale socket is replaced; a live one is an error: another
  // agent runs), chmod 0660 — only the agent's user and group may talk to it — and additionally
  // checks each peer's credentials (SO_PEERCRED): root, our uid, or the socket's group.
  static Expected<std::unique_ptr<LocalApiServer>> Start(const std::string& socket_path,
                                                         Handler handler);
  ~LocalApiServer();  // stops accepting, waits for open connections, removes the socket
  LocalApiServer(const LocalApiServer&) = delete;
  LocalApiServer& operator=(const LocalApiServer&) = delete;

 private:
  LocalApiServer() = default;
  void AcceptLoop();
  void Serve(int fd);

  std::string path_;
  Handler handler_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<int> active_{0};
  std::thread thread_;
  gid_t group_ = 0;
};

}  // namespace torwart::agent
