// plcsim: a simulated PLC on Modbus/TCP (libmodbus) for the demo, the system tests and the
// benchmarks. One thread: a ppoll loop over the listening socket and the clients, a process
// image that changes every second, and a request log on stderr. See --help for the registers.
#include <arpa/inet.h>
#include <errno.h>
#include <modbus/modbus.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int kPoints = 100;  // coils, discrete inputs, holding and input registers each
constexpr size_t kMaxClients = 100;
constexpr double kPi = 3.14159265358979323846;

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string listen = "127.0.0.1:1502";
  int unit = 1;
  bool any_unit = false;
  bool json = false;
};

std::string_view FunctionName(int fc) {
  switch (fc) {
    case 1:
      return "read coils";
    case 2:
      return "read discrete inputs";
    case 3:
      return "read holding registers";
    case 4:
      return "read input registers";
    case 5:
      return "write single coil";
    case 6:
      return "write single register";
    case 15:
      return "write multiple coils";
    case 16:
      return "write multiple registers";
    case 22:
      return "mask write register";
    case 23:
      return "read/write multiple registers";
    case 43:
      return "read device identification";
    default:
      return "unsupported";
  }
}

// The process image at `t` seconds after start. Registers 0..9 are live values (a client's write
// there is overwritten on the next tick); 10 is the motor speed setpoint the speed (3) follows;
// everything else keeps what clients write.
void Tick(modbus_mapping_t* m, int64_t t, uint16_t& speed) {
  uint16_t* hr = m->tab_registers;
  double s = static_cast<double>(t);
  uint16_t setpoint = hr[10];
  if (speed < setpoint) speed = static_cast<uint16_t>(std::min<int>(setpoint, speed + 50));
  if (speed > setpoint) speed = static_cast<uint16_t>(std::max<int>(setpoint, speed - 50));
  uint16_t temperature = static_cast<uint16_t>(std::lround(215 + 25 * std::sin(2 * kPi * s / 60)));
  hr[0] = static_cast<uint16_t>(t);  // uptime counter, s
  hr[1] = temperature;               // °C × 10
  hr[2] = static_cast<uint16_t>(std::lround(1013 + 12 * std::sin(2 * kPi * s / 45)));    // hPa
  hr[3] = speed;                                                                         // rpm
  hr[4] = static_cast<uint16_t>((speed > 0 ? 1 : 0) | (temperature > 235 ? 2 : 0));      // status
  hr[5] = static_cast<uint16_t>(t % 200 < 100 ? (t % 200) * 10 : (200 - t % 200) * 10);  // level ‰
  hr[6] = static_cast<uint16_t>(speed / 10);                                         // flow, l/min
  hr[7] = static_cast<uint16_t>(std::lround(2300 + 5 * std::sin(2 * kPi * s / 7)));  // V × 10
  hr[8] = static_cast<uint16_t>(speed / 3);                                          // A × 100
  hr[9] = static_cast<uint16_t>(hr[9] == 0 ? 0xACE1 : (hr[9] >> 1) ^ (-(hr[9] & 1) & 0xB400));
  for (int i = 0; i < 10; ++i) m->tab_input_registers[i] = hr[i];
  for (int i = 0; i < 8; ++i) m->tab_input_bits[i] = static_cast<uint8_t>((hr[0] >> i) & 1);
  m->tab_input_bits[8] = hr[4] & 1;
  m->tab_input_bits[9] = (hr[4] >> 1) & 1;
}

uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

struct Client {
  int fd;
  std::string peer;
  std::string buf;  // a partial request
};

void Log(const Options& o, const Client& c, const uint8_t* q, int len, std::string_view outcome) {
  int unit = q[6];
  int fc = len > 7 ? q[7] : -1;
  int addr = len >= 10 ? U16(q + 8) : -1;
  int count = -1;
  if (len >= 12 && ((fc >= 1 && fc <= 4) || fc == 15 || fc == 16 || fc == 23)) count = U16(q + 10);
  if (fc == 5 || fc == 6) count = 1;
  if (o.json) {
    nlohmann::json j = {{"client", c.peer},
                        {"unit", unit},
                        {"function", fc},
                        {"name", FunctionName(fc)},
                        {"outcome", outcome}};
    if (addr >= 0 && fc != 43) j["addr"] = addr;
    if (count >= 0) j["count"] = count;
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  } else {
    std::string line = "plcsim: " + c.peer + " unit " + std::to_string(unit) + " function " +
                       std::to_string(fc) + " (" + std::string(FunctionName(fc)) + ")";
    if (addr >= 0 && fc != 43) line += " addr " + std::to_string(addr);
    if (count >= 0) line += " count " + std::to_string(count);
    line += " -> " + std::string(outcome);
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

bool SendAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// FC 43 / MEI 14, basic device identification (libmodbus has no server side for it).
bool ReplyDeviceId(modbus_t* ctx, int fd, const uint8_t* q, int len) {
  static const char* kObjects[] = {"torwart", "plcsim", "0.1.0"};  // vendor, product, revision
  if (len < 11) return modbus_reply_exception(ctx, q, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE) != -1;
  int code = q[9], first = q[10];
  if (code < 1 || code > 4) {
    return modbus_reply_exception(ctx, q, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE) != -1;
  }
  if (code == 4 && first > 2) {
    return modbus_reply_exception(ctx, q, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS) != -1;
  }
  if (first > 2) first = 0;
  int last = code == 4 ? first : 2;
  std::string pdu = {
      43, 14, static_cast<char>(code), 0x01, 0, 0, static_cast<char>(last - first + 1)};
  for (int i = first; i <= last; ++i) {
    pdu.push_back(static_cast<char>(i));
    pdu.push_back(static_cast<char>(std::strlen(kObjects[i])));
    pdu += kObjects[i];
  }
  size_t n = pdu.size() + 1;
  std::string adu = {
      static_cast<char>(q[0]), static_cast<char>(q[1]), 0, 0, static_cast<char>(n >> 8),
      static_cast<char>(n),    static_cast<char>(q[6])};
  return SendAll(fd, adu + pdu);
}

// Answers one whole request ADU; false closes the connection.
bool Answer(modbus_t* ctx, modbus_mapping_t* map, const Options& o, const Client& c,
            std::string_view adu) {
  // libmodbus reads request fields by offset, bounded by its own limits within one maximal ADU:
  // a zeroed buffer of that size keeps a short request from reading anything but zeros.
  uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH] = {};
  std::memcpy(q, adu.data(), adu.size());
  int len = static_cast<int>(adu.size());
  modbus_set_socket(ctx, c.fd);
  int unit = q[6];
  if (!o.any_unit && unit != o.unit && unit != 0 && unit != 255) {
    Log(o, c, q, len, "exception 0b (no such unit)");
    return modbus_reply_exception(ctx, q, MODBUS_EXCEPTION_GATEWAY_TARGET) != -1;
  }
  if (q[7] == 43 && len > 8 && q[8] == 14) {
    Log(o, c, q, len, "device identification");
    return ReplyDeviceId(ctx, c.fd, q, len);
  }
  int rc = modbus_reply(ctx, q, len, map);
  Log(o, c, q, len, rc == -1 ? std::string("error: ") + modbus_strerror(errno) : "ok");
  return rc != -1;
}

// Reads what a readable client sent and answers every whole ADU, framed by the MBAP length
// (libmodbus frames requests by function code, which breaks on codes it does not know).
// False closes the connection: end of stream, a socket error or a malformed MBAP header.
bool Serve(modbus_t* ctx, modbus_mapping_t* map, const Options& o, Client& c) {
  char tmp[4096];
  ssize_t n = ::recv(c.fd, tmp, sizeof tmp, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
  if (n <= 0) return false;
  c.buf.append(tmp, static_cast<size_t>(n));
  size_t pos = 0;
  bool open = true;
  while (open && c.buf.size() - pos >= 7) {
    const auto* h = reinterpret_cast<const uint8_t*>(c.buf.data() + pos);
    uint16_t protocol = U16(h + 2), length = U16(h + 4);
    if (protocol != 0 || length < 2 || length > 254) {
      std::fprintf(stderr, "plcsim: %s: malformed MBAP header (protocol %u, length %u), closing\n",
                   c.peer.c_str(), protocol, length);
      return false;
    }
    if (c.buf.size() - pos < 6u + length) break;
    open = Answer(ctx, map, o, c, std::string_view(c.buf).substr(pos, 6u + length));
    pos += 6u + length;
  }
  c.buf.erase(0, pos);  // at most one partial ADU (< 260 bytes) stays
  return open;
}

int Run(const Options& o) {
  size_t colon = o.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    std::fprintf(stderr, "plcsim: --listen wants HOST:PORT, got '%s'\n", o.listen.c_str());
    return 2;
  }
  std::string host = o.listen.substr(0, colon), port = o.listen.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  modbus_t* ctx = modbus_new_tcp_pi(host.c_str(), port.c_str());
  modbus_mapping_t* map = modbus_mapping_new(kPoints, kPoints, kPoints, kPoints);
  if (ctx == nullptr || map == nullptr) {
    std::fprintf(stderr, "plcsim: out of memory\n");
    return 1;
  }
  int server = modbus_tcp_pi_listen(ctx, 16);
  if (server < 0) {
    std::fprintf(stderr, "plcsim: cannot listen on %s: %s\n", o.listen.c_str(),
                 modbus_strerror(errno));
    modbus_mapping_free(map);
    modbus_free(ctx);
    return 1;
  }
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  getsockname(server, reinterpret_cast<sockaddr*>(&ss), &sl);
  int bound_port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                      std::to_string(bound_port);
  if (o.json) {
    nlohmann::json j = {{"listen", where},
                        {"port", bound_port},
                        {"unit", o.unit},
                        {"any_unit", o.any_unit},
                        {"points", kPoints}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("plcsim listening on %s (unit %s, %d coils/inputs/registers each)\n", where.c_str(),
                o.any_unit ? "any" : std::to_string(o.unit).c_str(), kPoints);
  }
  std::fflush(stdout);

  auto start = std::chrono::steady_clock::now();
  int64_t ticked = -1;
  uint16_t speed = 0;
  map->tab_registers[10] = 1200;  // initial setpoint, rpm
  std::vector<Client> clients;
  sigset_t unblocked;
  sigprocmask(SIG_SETMASK, nullptr, &unblocked);
  sigdelset(&unblocked, SIGTERM);
  sigdelset(&unblocked, SIGINT);

  while (!g_stop) {
    auto now = std::chrono::steady_clock::now();
    int64_t t = std::chrono::duration_cast<std::chrono::seconds>(now - start).count();
    if (t != ticked) {
      Tick(map, t, speed);
      ticked = t;
    }
    auto next = start + std::chrono::seconds(t + 1);
    auto wait_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next - now).count();
    timespec ts{static_cast<time_t>(wait_ns / 1000000000), static_cast<long>(wait_ns % 1000000000)};

    std::vector<pollfd> fds;
    fds.push_back({server, POLLIN, 0});
    for (const Client& c : clients) fds.push_back({c.fd, POLLIN, 0});
    int n = ppoll(fds.data(), fds.size(), &ts, &unblocked);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("plcsim: ppoll");
      break;
    }
    // Clients first (their indices match fds[1..]), then new connections.
    std::vector<Client> keep;
    for (size_t i = 0; i < clients.size(); ++i) {
      short ev = fds[i + 1].revents;
      bool open = true;
      if (ev & (POLLIN | POLLHUP | POLLERR)) open = Serve(ctx, map, o, clients[i]);
      if (open) {
        keep.push_back(clients[i]);
      } else {
        ::close(clients[i].fd);
        std::fprintf(stderr, "plcsim: %s disconnected\n", clients[i].peer.c_str());
      }
    }
    clients.swap(keep);
    if (fds[0].revents & POLLIN) {
      sockaddr_storage peer{};
      socklen_t pl = sizeof peer;
      int fd =
          ::accept4(server, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        char addr[INET6_ADDRSTRLEN] = "?";
        int pport = 0;
        if (peer.ss_family == AF_INET) {
          auto* a = reinterpret_cast<sockaddr_in*>(&peer);
          inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr);
          pport = ntohs(a->sin_port);
        } else if (peer.ss_family == AF_INET6) {
          auto* a = reinterpret_cast<sockaddr_in6*>(&peer);
          inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr);
          pport = ntohs(a->sin6_port);
        }
        std::string name = std::string(addr) + ":" + std::to_string(pport);
        if (clients.size() >= kMaxClients) {
          std::fprintf(stderr, "plcsim: %s refused (too many clients)\n", name.c_str());
          ::close(fd);
        } else {
          std::fprintf(stderr, "plcsim: %s connected\n", name.c_str());
          clients.push_back({fd, name, {}});
        }
      }
    }
  }
  for (const Client& c : clients) ::close(c.fd);
  ::close(server);
  modbus_mapping_free(map);
  modbus_free(ctx);
  std::fprintf(stderr, "plcsim: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "plcsim: a simulated PLC on Modbus/TCP (100 coils, discrete inputs, holding and input\n"
      "registers). Holding registers 0..9 change every second: 0 uptime counter (s),\n"
      "1 temperature (°C x10), 2 pressure (hPa), 3 motor speed (rpm, follows the setpoint in\n"
      "holding register 10), 4 status (bit 0 running, bit 1 over-temperature), 5 level (per\n"
      "mille), 6 flow (l/min), 7 voltage (V x10), 8 current (A x100), 9 noise. Input registers\n"
      "0..9 mirror them; discrete inputs 0..7 are the counter's bits, 8..9 the status bits.\n"
      "Writes to coils and holding registers 10..99 are kept. Every request is logged to stderr.\n"
      "Example: mbpoll -m tcp -a 1 -r 1 -c 4 -t 4 -p 1502 -1 127.0.0.1"};
  app.add_option("--listen", o.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--unit", o.unit, "unit id to answer (0 and 255 are always answered)")
      ->check(CLI::Range(0, 255))
      ->capture_default_str();
  app.add_flag("--any-unit", o.any_unit, "answer every unit id");
  app.add_flag("--json", o.json, "print the listening address and the request log as JSON");
  CLI11_PARSE(app, argc, argv);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Signals stay blocked except inside ppoll, so a stop request is never lost between checks.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, nullptr);
  return Run(o);
}
