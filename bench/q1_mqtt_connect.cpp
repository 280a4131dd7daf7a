// Q1 (shared/BENCHMARKS.md): N devices connecting over mutual-TLS MQTT 5, against (a) the broker
// torwartd runs with the torwart plugin and (b) plain Mosquitto with an ACL file. One harness on
// libmosquitto with ONE shared SSL_CTX: each connection still presents its own device
// certificate, chosen in the context's certificate callback by the connection's socket.
// Prints one JSON line per figure and the ratio b/a of connect throughput ("plugin overhead").
// Not run by `make test`; see bench/q1_prepare for setting up both brokers and the devices.
//
//   bench_q1_mqtt_connect --ca CA --devices-dir DIR --url-plugin mqtts://.. --url-plain mqtts://..
//       [--devices 200] [--rate 500] [--verify-host 127.0.0.1]
// DIR holds <client-id>.pem and <client-id>.key per device (client id = certificate CN).
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "torwart/mqtt/client.hpp"
#include "torwart/pki/x509.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Device {
  std::string id;
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
};

std::mutex g_fd_mu;
std::map<int, const Device*> g_by_fd;  // socket -> device, for the certificate callback

// Called during each handshake when the broker asks for a client certificate.
int CertCallback(SSL* ssl, void*) {
  const Device* d = nullptr;
  {
    std::lock_guard lock(g_fd_mu);
    auto it = g_by_fd.find(SSL_get_fd(ssl));
    if (it != g_by_fd.end()) d = it->second;
  }
  if (!d) return 0;
  return SSL_use_certificate(ssl, d->cert) == 1 && SSL_use_PrivateKey(ssl, d->key) == 1 ? 1 : 0;
}

struct Conn {
  mosquitto* m = nullptr;
  const Device* dev = nullptr;
  bool done = false, ok = false;
  Clock::time_point started, finished;
};

void OnConnect(mosquitto*, void* ud, int rc, int, const mosquitto_property*) {
  auto* c = static_cast<Conn*>(ud);
  c->done = true;
  c->ok = rc == 0;
  c->finished = Clock::now();
}

struct Result {
  int devices = 0, connected = 0, failed = 0;
  std::vector<double> latencies_ms;  // of the connections that succeeded
  double seconds = 0;
  double p50_ms = 0, p99_ms = 0;  // TCP connect -> CONNACK, per device
};

Result RunTarget(const std::string& url_text, SSL_CTX* ctx, const std::vector<Device>& devices,
                 int rate, int timeout_s) {
  auto url = torwart::mqtt::ParseUrl(url_text);
  Result r;
  r.devices = static_cast<int>(devices.size());
  if (!url) {
    std::fprintf(stderr, "%s\n", url.error().message().c_str());
    r.failed = r.devices;
    return r;
  }
  std::vector<Conn> conns(devices.size());
  auto start = Clock::now();
  size_t started = 0;
  auto deadline = start + std::chrono::seconds(timeout_s);
  while (Clock::now() < deadline) {
    // Start connections at the target rate.
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    size_t due = std::min(devices.size(), static_cast<size_t>(elapsed * rate) + 1);
    for (; started < due; ++started) {
      Conn& c = conns[started];
      c.dev = &devices[started];
      c.m = mosquitto_new(c.dev->id.c_str(), true, &c);
      c.started = Clock::now();
      mosquitto_int_option(c.m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
      mosquitto_int_option(c.m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
      mosquitto_void_option(c.m, MOSQ_OPT_SSL_CTX, ctx);
      mosquitto_connect_v5_callback_set(c.m, OnConnect);
      if (mosquitto_connect_async(c.m, url->host.c_str(), url->port, 60) != MOSQ_ERR_SUCCESS) {
        c.done = true;
        continue;
      }
      std::lock_guard lock(g_fd_mu);
      g_by_fd[mosquitto_socket(c.m)] = c.dev;
    }
    // One poll() over every open connection, then libmosquitto's read/write steps: its own
    // mosquitto_loop() uses select() and fails for descriptors above FD_SETSIZE (1024).
    size_t finished = 0;
    std::vector<pollfd> pfds;
    std::vector<size_t> idx;
    for (size_t i = 0; i < started; ++i) {
      Conn& c = conns[i];
      if (c.done) {
        ++finished;
        continue;
      }
      int fd = mosquitto_socket(c.m);
      if (fd < 0) {
        c.done = true;
        ++finished;
        continue;
      }
      short ev = POLLIN;
      if (mosquitto_want_write(c.m)) ev |= POLLOUT;
      pfds.push_back(pollfd{fd, ev, 0});
      idx.push_back(i);
    }
    if (!pfds.empty() && ::poll(pfds.data(), pfds.size(), 1) > 0) {
      for (size_t k = 0; k < pfds.size(); ++k) {
        Conn& c = conns[idx[k]];
        short rev = pfds[k].revents;
        int rc = MOSQ_ERR_SUCCESS;
        if (rev & (POLLIN | POLLERR | POLLHUP)) rc = mosquitto_loop_read(c.m, 1);
        if (rc == MOSQ_ERR_SUCCESS && !c.done && (rev & POLLOUT)) rc = mosquitto_loop_write(c.m, 1);
        if (rc != MOSQ_ERR_SUCCESS) c.done = true;
      }
    }
    if (finished == devices.size()) break;
    if (pfds.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> lat;
  for (auto& c : conns) {
    if (!c.ok) continue;
    ++r.connected;
    lat.push_back(std::chrono::duration<double, std::milli>(c.finished - c.started).count());
  }
  std::sort(lat.begin(), lat.end());
  if (!lat.empty()) {
    r.p50_ms = lat[lat.size() / 2];
    r.p99_ms = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  }
  r.failed = r.devices - r.connected;
  r.latencies_ms = std::move(lat);
  for (auto& c : conns) {
    if (!c.m) continue;
    if (c.ok) {
      mosquitto_disconnect(c.m);
      mosquitto_loop_write(c.m, 1);  // flush the DISCONNECT (no select(): see above)
    }
    mosquitto_destroy(c.m);
  }
  std::lock_guard lock(g_fd_mu);
  g_by_fd.clear();
  return r;
}

// libmosquitto holds three descriptors per client (socket + an internal socket pair), so 10k
// clients need more than one process may open here (the hard limit can be 20 000): the devices
// are split over `processes` forked children that connect at rate/processes each; their
// results are merged (counts summed, percentiles over all latencies, the longest duration).
Result RunSharded(const std::string& url, SSL_CTX* ctx, const std::vector<Device>& devices,
                  int rate, int timeout_s, int processes) {
  if (processes <= 1) return RunTarget(url, ctx, devices, rate, timeout_s);
  std::vector<std::pair<pid_t, int>> kids;
  for (int p = 0; p < processes; ++p) {
    int fds[2];
    if (::pipe(fds) != 0) break;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      std::vector<Device> mine;
      for (size_t i = p; i < devices.size(); i += processes) mine.push_back(devices[i]);
      Result r = RunTarget(url, ctx, mine, std::max(1, rate / processes), timeout_s);
      std::string out = std::to_string(r.devices) + " " + std::to_string(r.connected) + " " +
                        std::to_string(r.seconds) + "\n";
      for (double l : r.latencies_ms) out += std::to_string(l) + "\n";
      size_t off = 0;
      while (off < out.size()) {
        ssize_t n = ::write(fds[1], out.data() + off, out.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::_exit(0);
    }
    ::close(fds[1]);
    kids.emplace_back(pid, fds[0]);
  }
  Result all;
  for (auto& [pid, fd] : kids) {
    std::string text;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
    int dev = 0, conn = 0;
    double secs = 0;
    size_t pos = 0;
    if (std::sscanf(text.c_str(), "%d %d %lf", &dev, &conn, &secs) != 3) continue;
    all.devices += dev;
    all.connected += conn;
    all.seconds = std::max(all.seconds, secs);
    pos = text.find('\n');
    while (pos != std::string::npos && pos + 1 < text.size()) {
      size_t next = text.find('\n', pos + 1);
      all.latencies_ms.push_back(std::atof(text.c_str() + pos + 1));
      pos = next;
    }
  }
  all.devices = static_cast<int>(devices.size());  // a child that died counts as failures
  all.failed = all.devices - all.connected;
  auto& lat = all.latencies_ms;
  std::sort(lat.begin(), lat.end());
  if (!lat.empty()) {
    all.p50_ms = lat[lat.size() / 2];
    all.p99_ms = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  }
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Q1: mutual-TLS MQTT connects, torwart broker+plugin vs plain Mosquitto+ACL"};
  std::string ca, dir, url_plugin, url_plain, verify_host = "127.0.0.1";
  int devices = 200, rate = 500, timeout_s = 120;
  app.add_option("--ca", ca, "CA that signed the brokers' certificates")->required();
  app.add_option("--devices-dir", dir, "<id>.pem/<id>.key per device")->required();
  app.add_option("--url-plugin", url_plugin, "torwartd's broker (with the torwart plugin)");
  app.add_option("--url-plain", url_plain, "plain Mosquitto with an ACL file");
  app.add_option("--devices", devices, "number of devices (default 200; full run 10000)");
  app.add_option("--rate", rate, "target connects per second (default 500)");
  app.add_option("--verify-host", verify_host, "name/IP in the broker certificates");
  app.add_option("--timeout", timeout_s, "seconds per target");
  int processes = 0;
  app.add_option("--processes", processes,
                 "harness processes (default: as many as the descriptor limit needs)");
  CLI11_PARSE(app, argc, argv);
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (processes <= 0) {
    double per = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<double>(rl.rlim_cur) - 256 : 1000;
    processes = std::max(1, static_cast<int>(std::ceil(devices * 3.0 / std::max(per, 100.0))));
  }
  mosquitto_lib_init();

  std::vector<Device> devs;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".pem") continue;
    if (static_cast<int>(devs.size()) >= devices) break;
    auto key_path = e.path();
    key_path.replace_extension(".key");
    FILE* cf = std::fopen(e.path().c_str(), "r");
    FILE* kf = std::fopen(key_path.c_str(), "r");
    if (!cf || !kf) {
      if (cf) std::fclose(cf);
      if (kf) std::fclose(kf);
      continue;
    }
    Device d;
    d.id = e.path().stem().string();
    d.cert = PEM_read_X509(cf, nullptr, nullptr, nullptr);
    d.key = PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr);
    std::fclose(cf);
    std::fclose(kf);
    if (d.cert && d.key) devs.push_back(d);
  }
  if (static_cast<int>(devs.size()) < devices) {
    std::fprintf(stderr, "only %zu device identities in %s (need %d)\n", devs.size(), dir.c_str(),
                 devices);
    return 2;
  }
  // The one shared context: TLS 1.3, our CA, host check; the device certificate per connection.
  auto ctx = torwart::mqtt::MakeMqttTlsContext(ca, verify_host);
  if (!ctx) {
    std::fprintf(stderr, "%s\n", ctx.error().message().c_str());
    return 2;
  }
  SSL_CTX_set_cert_cb(ctx->get(), CertCallback, nullptr);

  Result plugin, plain;
  auto print = [&](const char* target, const Result& r) {
    std::printf(
        "{\"bench\":\"q1\",\"target\":\"%s\",\"devices\":%d,\"connected\":%d,\"failures\":%d,"
        "\"seconds\":%.3f,\"connects_per_s\":%.1f,\"target_rate\":%d,\"connect_p50_ms\":%.2f,"
        "\"connect_p99_ms\":%.2f}\n",
        target, r.devices, r.connected, r.failed, r.seconds,
        r.seconds > 0 ? r.connected / r.seconds : 0.0, rate, r.p50_ms, r.p99_ms);
    std::fflush(stdout);
  };
  if (!url_plugin.empty()) {
    plugin = RunSharded(url_plugin, ctx->get(), devs, rate, timeout_s, processes);
    print("torwart_plugin", plugin);
  }
  if (!url_plain.empty()) {
    plain = RunSharded(url_plain, ctx->get(), devs, rate, timeout_s, processes);
    print("mosquitto_acl", plain);
  }
  if (!url_plugin.empty() && !url_plain.empty() && plain.p50_ms > 0 && plain.p99_ms > 0) {
    std::printf("{\"bench\":\"q1\",\"figure\":\"plugin_overhead_p50\",\"ratio\":%.3f}\n",
                plugin.p50_ms / plain.p50_ms);
    std::printf(
        "{\"bench\":\"q1\",\"figure\":\"plugin_overhead_p99\",\"ratio\":%.3f,"
        "\"goal\":\"<= 1.2 and 0 failures at 500 connects/s\"}\n",
        plugin.p99_ms / plain.p99_ms);
  }
  for (auto& d : devs) {
    X509_free(d.cert);
    EVP_PKEY_free(d.key);
  }
  mosquitto_lib_cleanup();
  return 0;
}
