#include "inventory.hpp"

#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "torwart/core/clock.hpp"

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string ReadSmall(const std::string& path, size_t max = 64 * 1024) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::string s(max, '\0');
  in.read(s.data(), static_cast<std::streamsize>(max));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

std::string Trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n\"");
  auto e = s.find_last_not_of(" \t\r\n\"");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string OsPrettyName() {
  std::istringstream in(ReadSmall("/etc/os-release"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) return Trim(line.substr(12));
  }
  return "";
}

json Hardware() {
  json h;
  utsname u{};
  if (uname(&u) == 0) h["arch"] = u.machine;
  h["cpus"] = std::thread::hardware_concurrency();
  std::istringstream in(ReadSmall("/proc/cpuinfo", 256 * 1024));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      auto c = line.find(':');
      if (c != std::string::npos) {
        h["cpu_model"] = Trim(line.substr(c + 1));
        break;
      }
    }
  }
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0)
    h["mem_total_bytes"] = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
  std::string product = Trim(ReadSmall("/sys/class/dmi/id/product_name", 256));
  if (!product.empty()) h["product"] = product;
  return h;
}

json Interfaces() {
  std::map<std::string, json> by_name;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) == 0) {
    for (ifaddrs* p = ifa; p; p = p->ifa_next) {
      if (!p->ifa_name) continue;
      json& e = by_name[p->ifa_name];
      if (!e.contains("name")) {
        e["name"] = p->ifa_name;
        e["up"] = (p->ifa_flags & IFF_UP) != 0;
        e["addresses"] = json::array();
        std::string mac =
            Trim(ReadSmall(std::string("/sys/class/net/") + p->ifa_name + "/address", 64));
        if (!mac.empty()) e["mac"] = mac;
      }
      if (p->ifa_addr &&
          (p->ifa_addr->sa_family == AF_INET || p->ifa_addr->sa_family == AF_INET6)) {
        char host[NI_MAXHOST];
        socklen_t len =
            p->ifa_addr->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
        if (getnameinfo(p->ifa_addr, len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0) {
          e["addresses"].push_back(host);
        }
      }
    }
    freeifaddrs(ifa);
  }
  json out = json::array();
  for (auto& [name, e] : by_name) {
    if (out.size() >= 64) break;  // the server takes at most 64 KiB per message
    out.push_back(e);
  }
  return out;
}

// Runs `path` with no arguments; returns its stdout (bounded) or an error text.
bool RunScript(const std::string& path, std::string& out, std::string& err) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    err = "pipe failed";
    return false;
  }
  pid_t pid = fork();
  if (pid < 0) {
    err = "fork failed";
    close(pipefd[0]);
    close(pipefd[1]);
    return false;
  }
  if (pid == 0) {
    dup2(pipefd[1], 1);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 2);
    }
    char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
    char env_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    char* envp[] = {env_path, nullptr};
    execve(path.c_str(), argv, envp);
    _exit(127);
  }
  close(pipefd[1]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  char buf[4096];
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{pipefd[0], POLLIN, 0};
    int n = poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      timed_out = n == 0;
      break;
    }
    ssize_t r = read(pipefd[0], buf, sizeof buf);
    if (r <= 0) break;
    if (out.size() < 64 * 1024) out.append(buf, static_cast<size_t>(r));
  }
  close(pipefd[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out) {
    err = "timed out after 10 s";
    return false;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    err = "exited with status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return false;
  }
  return true;
}

}  // namespace

json RunInventoryScripts(const std::string& script_dir) {
  json attrs = json::object();
  if (script_dir.empty()) return attrs;
  std::error_code ec;
  std::vector<fs::path> scripts;
  for (auto& e : fs::directory_iterator(script_dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    if (access(e.path().c_str(), X_OK) != 0) continue;
    scripts.push_back(e.path());
  }
  std::sort(scripts.begin(), scripts.end());
  json errors = json::array();
  for (auto& p : scripts) {
    std::string out, err;
    if (!RunScript(p.string(), out, err)) {
      errors.push_back(p.filename().string() + ": " + err);
      continue;
    }
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      auto eq = line.find('=');
      if (eq == std::string::npos || eq == 0 || eq > 128) {
        errors.push_back(p.filename().string() + ": ignored line without key=value");
        continue;
      }
      std::string key = line.substr(0, eq), value = line.substr(eq + 1);
      if (value.size() > 4096) value.resize(4096);
      if (!attrs.contains(key)) attrs[key] = json::array();
      if (attrs[key].size() < 64) attrs[key].push_back(value);
    }
  }
  if (!errors.empty()) attrs["_errors"] = errors;
  return attrs;
}

json CollectInventory(const std::string& script_dir) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  utsname u{};
  uname(&u);
  std::string os = OsPrettyName();
  if (os.empty()) os = u.sysname;
  // Invalid UTF-8 from a script must not break serialisation later: dump() with replace.
  json inv{{"v", 1},
           {"ts", UnixSeconds()},
           {"hostname", host},
           {"os", os.substr(0, 256)},
           {"kernel", std::string(u.sysname) + " " + u.release},
           {"agent_version", kAgentVersion},
           {"hardware", Hardware()},
           {"interfaces", Interfaces()},
           {"attributes", RunInventoryScripts(script_dir)}};
  return inv;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json HealthSampler::Sample(const std::string& disk_path) {
  json h{{"v", 1}, {"ts", UnixSeconds()}};
  // CPU: aggregate line of /proc/stat.
  std::istringstream stat(ReadSmall("/proc/stat", 8192));
  std::string cpu;
  uint64_t v[10] = {};
  stat >> cpu;
  for (auto& x : v) stat >> x;
  uint64_t idle = v[3] + v[4], total = 0;
  for (auto x : v) total += x;
  double percent = 0;
  if (prev_total_ != 0 && total > prev_total_) {
    percent = 100.0 * (1.0 - static_cast<double>(idle - prev_idle_) /
                                 static_cast<double>(total - prev_total_));
  }
  prev_total_ = total;
  prev_idle_ = idle;
  h["cpu"] = std::clamp(percent, 0.0, 100.0);
  double load[3] = {};
  if (getloadavg(load, 3) == 3) h["load"] = {load[0], load[1], load[2]};
  // Memory: /proc/meminfo in kB.
  std::istringstream mem(ReadSmall("/proc/meminfo", 16384));
  std::string key, unit;
  uint64_t value = 0, mem_total = 0, mem_avail = 0;
  while (mem >> key >> value) {
    std::getline(mem, unit);
    if (key == "MemTotal:") mem_total = value * 1024;
    if (key == "MemAvailable:") mem_avail = value * 1024;
  }
  h["mem"] = {{"total", mem_total}, {"used", mem_total > mem_avail ? mem_total - mem_avail : 0}};
  struct statvfs sv {};
  if (statvfs(disk_path.c_str(), &sv) == 0) {
    uint64_t t = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
    uint64_t f = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    h["disk"] = {{"total", t}, {"used", t > f ? t - f : 0}, {"path", disk_path}};
  }
  std::istringstream up(ReadSmall("/proc/uptime", 256));
  double uptime = 0;
  up >> uptime;
  h["uptime"] = static_cast<uint64_t>(uptime);
  return h;
}

}  // namespace torwart::agent
