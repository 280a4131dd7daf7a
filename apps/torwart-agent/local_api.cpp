#include "local_api.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "torwart/core/log.hpp"

namespace torwart::agent {
namespace {

using nlohmann::json;

const std::set<std::string, std::less<>>& KnownOps() {
  static const std::set<std::string, std::less<>> ops = {
      "status", "connect", "disconnect", "profile.list", "profile.use", "pin",
      // tunnels (docs/design/agent-tunnels.md)
      "sessions.list", "sessions.kill", "consent.set", "consent.changed"};
  return ops;
}

Expected<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return MakeError(
        Errc::kInvalidArgument,
        "socket path must be 1-" + std::to_string(sizeof(addr.sun_path) - 1) + " bytes: " + path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

Expected<Request> ParseRequest(std::string_view line) {
  if (line.size() > kMaxRequestBytes) {
    return MakeError(Errc::kResourceExhausted, "request longer than 64 KiB");
  }
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return MakeError(Errc::kParse, "request is not valid JSON");
  if (!j.is_object()) return MakeError(Errc::kInvalidArgument, "request must be a JSON object");
  Request r;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k != "v" && k != "op" && k != "args" && k != "id") {
      return MakeError(Errc::kInvalidArgument, "unknown request field \"" + k + "\"");
    }
  }
  if (j.contains("id")) {
    const json& id = j["id"];
    if (!id.is_string() && !id.is_number_integer()) {
      return MakeError(Errc::kInvalidArgument, "\"id\" must be a string or an integer");
    }
    if (id.is_string() && id.get_ref<const std::string&>().size() > 256) {
      return MakeError(Errc::kInvalidArgument, "\"id\" longer than 256 characters");
    }
    r.id = id;
  }
  if (!j.contains("v") || !j["v"].is_number_integer() || j["v"].get<int64_t>() != 1) {
    return MakeError(Errc::kInvalidArgument, "\"v\" must be 1");
  }
  if (!j.contains("op") || !j["op"].is_string()) {
    return MakeError(Errc::kInvalidArgument, "\"op\" must be a string");
  }
  r.op = j["op"].get<std::string>();
  if (!KnownOps().contains(r.op)) {
    return MakeError(Errc::kInvalidArgument, "unknown op \"" + r.op.substr(0, 64) + "\"");
  }
  r.args = json::object();
  if (j.contains("args")) {
    if (!j["args"].is_object())
      return MakeError(Errc::kInvalidArgument, "\"args\" must be an object");
    r.args = j["args"];
  }
  // Per-op arguments: exactly what each op takes.
  auto only = [&](std::initializer_list<const char*> allowed) -> Expected<void> {
    for (auto it = r.args.begin(); it != r.args.end(); ++it) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || it.key() == a;
      if (!ok)
        return MakeError(Errc::kInvalidArgument,
                         "op " + r.op + ": unknown argument \"" + it.key() + "\"");
    }
    return {};
  };
  if (r.op == "profile.use") {
    if (auto ok = only({"name"}); !ok) return MakeError(ok.error());
    if (!r.args.contains("name") || !r.args["name"].is_string()) {
      return MakeError(Errc::kInvalidArgument, "profile.use needs args.name (string)");
    }
    const auto& name = r.args["name"].get_ref<const std::string&>();
    if (name.empty() || name.size() > 64 ||
        name.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
            std::string::npos) {
      return MakeError(Errc::kInvalidArgument, "profile name must be 1-64 of [A-Za-z0-9_-]");
    }
  } else if (r.op == "pin") {
    if (auto ok = only({"pin"}); !ok) return MakeError(ok.error());
    if (!r.args.contains("pin") || !r.args["pin"].is_string()) {
      return MakeError(Errc::kInvalidArgument, "pin needs args.pin (string)");
    }
    const auto& pin = r.args["pin"].get_ref<const std::string&>();
    if (pin.empty() || pin.size() > 256 || pin.find('\0') != std::string::npos) {
      return MakeError(Errc::kInvalidArgument, "PIN must be 1-256 bytes without NUL");
    }
  } else if (r.op == "consent.set") {
    if (auto ok = only({"on", "until"}); !ok) return MakeError(ok.error());
    if (!r.args.contains("on") || !r.args["on"].is_boolean()) {
      return MakeError(Errc::kInvalidArgument, "consent.set needs args.on (true or false)");
    }
    bool on = r.args["on"].get<bool>();
    if (on != r.args.contains("until")) {
      return MakeError(Errc::kInvalidArgument,
                       "consent.set: args.until (Unix seconds) goes with on = true, only");
    }
    if (on && (!r.args["until"].is_number_integer() || r.args["until"].get<int64_t>() <= 0)) {
      return MakeError(Errc::kInvalidArgument, "consent.set: args.until must be Unix seconds");
    }
  } else if (r.op == "sessions.kill") {
    if (auto ok = only({"id", "all"}); !ok) return MakeError(ok.error());
    bool has_id = r.args.contains("id"), all = r.args.contains("all");
    if (has_id == all) {
      return MakeError(Errc::kInvalidArgument,
                       "sessions.kill needs args.id or args.all (not both)");
    }
    if (all && !(r.args["all"].is_boolean() && r.args["all"].get<bool>())) {
      return MakeError(Errc::kInvalidArgument, "sessions.kill: args.all must be true");
    }
    if (has_id) {
      const json& id = r.args["id"];
      if (!id.is_string() || id.get_ref<const std::string&>().size() != 19 ||
          id.get_ref<const std::string&>().rfind("st-", 0) != 0 ||
          id.get_ref<const std::string&>().find_first_not_of("0123456789abcdef", 3) !=
              std::string::npos) {
        return MakeError(Errc::kInvalidArgument,
                         "sessions.kill: args.id must be a stream id (st- and 16 hex digits)");
      }
    }
  } else {
    if (auto ok = only({}); !ok) return MakeError(ok.error());
  }
  return r;
}

std::string OkResponse(const Request& req, const json& result) {
  json j{{"v", 1}, {"ok", true}, {"result", result}};
  if (!req.id.is_null()) j["id"] = req.id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string ErrorResponse(const json& id, const std::string& message) {
  json j{{"v", 1}, {"ok", false}, {"error", message}};
  if (!id.is_null()) j["id"] = id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Expected<json> CallLocalApi(const std::string& socket_path, const std::string& op, const json& args,
                            std::chrono::milliseconds timeout) {
  auto addr = UnixAddress(socket_path);
  if (!addr) return MakeError(addr.error());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return MakeError(Errc::kIo, std::string("socket: ") + strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0) {
    return MakeError(Errc::kUnavailable, "the agent is not running (no local API at " +
                                             socket_path + ": " + strerror(errno) + ")");
  }
  json req{{"v", 1}, {"op", op}, {"args", args}};
  if (!WriteAll(fd, req.dump() + "\n")) {
    return MakeError(Errc::kUnavailable, std::string("local API: write: ") + strerror(errno));
  }
  std::string buf;
  char chunk[4096];
  while (buf.find('\n') == std::string::npos) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return MakeError(n == 0 ? Errc::kUnavailable : Errc::kTimeout,
                       "local API: no answer from the agent");
    }
    buf.append(chunk, static_cast<size_t>(n));
    if (buf.size() > (16u << 20))
      return MakeError(Errc::kResourceExhausted, "local API: answer too long");
  }
  json resp = json::parse(buf.substr(0, buf.find('\n')), nullptr, false);
  if (resp.is_discarded() || !resp.is_object() || !resp.contains("ok") ||
      !resp["ok"].is_boolean()) {
    return MakeError(Errc::kParse, "local API: malformed answer");
  }
  if (!resp["ok"].get<bool>()) {
    return MakeError(Errc::kFailedPrecondition, resp.contains("error") && resp["error"].is_string()
                                                    ? resp["error"].get<std::string>()
                                                    : std::string("request failed"));
  }
  return resp.contains("result") ? resp["result"] : json::object();
}

Expected<std::unique_ptr<LocalApiServer>> LocalApiServer::Start(const std::string& socket_path,
                                                                Handler handler) {
  auto addr = UnixAddress(socket_path);
  if (!addr) return MakeError(addr.error());
  // A socket file left by a crashed agent is replaced; a live one means another agent runs.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return MakeError(Errc::kAlreadyExists, socket_path + " exists and is not a socket");
    }
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) == 0;
    ::close(probe);
    if (live) {
      return MakeError(Errc::kAlreadyExists, "another agent already serves " + socket_path +
                                                 " (one agent per state dir)");
    }
    ::unlink(socket_path.c_str());
  }
  std::unique_ptr<LocalApiServer> s(new LocalApiServer());
  s->path_ = socket_path;
  s->handler_ = std::move(handler);
  s->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd_ < 0) return MakeError(Errc::kIo, std::string("socket: ") + strerror(errno));
  // Created with no permissions for others from the start (no window before chmod).
  mode_t old = ::umask(0117);
  int rc = ::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  ::umask(old);
  if (rc != 0) return MakeError(Errc::kIo, "bind " + socket_path + ": " + strerror(errno));
  ::chmod(socket_path.c_str(), 0660);
  if (::lstat(socket_path.c_str(), &st) == 0) s->group_ = st.st_gid;
  if (::listen(s->listen_fd_, 16) != 0)
    return MakeError(Errc::kIo, std::string("listen: ") + strerror(errno));
  if (::pipe2(s->wake_pipe_, O_CLOEXEC) != 0)
    return MakeError(Errc::kIo, std::string("pipe: ") + strerror(errno));
  s->thread_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

LocalApiServer::~LocalApiServer() {
  stop_ = true;
  if (wake_pipe_[1] >= 0) (void)!::write(wake_pipe_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  // Connection threads are detached; wait (bounded) for them to finish with the handler.
  for (int i = 0; i < 200 && active_ > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_pipe_) {
    if (fd >= 0) ::close(fd);
  }
  if (!path_.empty()) ::unlink(path_.c_str());
}

void LocalApiServer::AcceptLoop() {
  while (!stop_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (stop_ || fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        !(cred.uid == 0 || cred.uid == ::geteuid() || cred.gid == group_)) {
      log::warn("local API: refused a connection from uid {} gid {}", cred.uid, cred.gid);
      (void)WriteAll(fd, ErrorResponse(nullptr, "permission denied"));
      ::close(fd);
      continue;
    }
    if (active_ >= 32) {
      (void)WriteAll(fd, ErrorResponse(nullptr, "too many local API connections"));
      ::close(fd);
      continue;
    }
    ++active_;
    std::thread([this, fd] {
      Serve(fd);
      ::close(fd);
      --active_;
    }).detach();
  }
}

void LocalApiServer::Serve(int fd) {
  // Idle connections are closed after 30 s; a request line is at most 64 KiB.
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buf;
  char chunk[4096];
  while (!stop_) {
    size_t nl;
    while ((nl = buf.find('\n')) == std::string::npos) {
      if (buf.size() > kMaxRequestBytes) {
        (void)WriteAll(fd, ErrorResponse(nullptr, "request longer than 64 KiB"));
        return;
      }
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      buf.append(chunk, static_cast<size_t>(n));
    }
    std::string line = buf.substr(0, nl);
    buf.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto req = ParseRequest(line);
    std::string out;
    if (!req) {
      out = ErrorResponse(nullptr, req.error().message());
    } else {
      auto r = handler_(*req);
      out = r ? OkResponse(*req, *r) : ErrorResponse(req->id, r.error().message());
    }
    if (!WriteAll(fd, out)) return;
  }
}

}  // namespace torwart::agent
