// torwart-mqtt-swarm: test-only program for the reconnect-spread scenario (issue 3, acceptance 6).
// Runs N lightweight MQTT clients with the production reconnect code (mqtt::Client: exponential
// backoff with full jitter) against one broker, all sharing one client certificate and one
// SSL_CTX, and prints one JSON line per event so a test can measure how reconnects spread out:
//   {"event":"connected","client":i,"n":k,"t":seconds since start}   (k = connect count)
// It exits after --duration seconds with a summary line {"event":"summary",...}.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <openssl/pem.h>

#include "torwart/core/log.hpp"
#include "torwart/mqtt/client.hpp"
#include "torwart/pki/x509.hpp"

using namespace torwart;

int main(int argc, char** argv) {
  CLI::App app{"torwart-mqtt-swarm: many MQTT clients with the agent's reconnect policy (tests)"};
  std::string url, ca, cert, key, verify_host = "127.0.0.1", prefix = "swarm";
  int n = 200, duration = 30, base_ms = 500, cap_ms = 4000, keepalive = 10;
  app.add_option("--url", url, "mqtts://host:port")->required();
  app.add_option("--ca", ca, "CA file")->required();
  app.add_option("--cert", cert, "client certificate (PEM)")->required();
  app.add_option("--key", key, "client key (PEM)")->required();
  app.add_option("--verify-host", verify_host, "name/IP in the broker certificate");
  app.add_option("--clients", n, "number of clients")->check(CLI::Range(1, 20000));
  app.add_option("--duration", duration, "seconds to run")->check(CLI::Range(1, 3600));
  app.add_option("--backoff-base-ms", base_ms, "backoff base")->check(CLI::Range(1, 60000));
  app.add_option("--backoff-cap-ms", cap_ms, "backoff cap")->check(CLI::Range(1, 600000));
  app.add_option("--keepalive", keepalive, "keepalive seconds")->check(CLI::Range(5, 3600));
  app.add_option("--prefix", prefix, "client id prefix");
  CLI11_PARSE(app, argc, argv);
  log::Init("error");

  auto key_pem = pki::ReadFile(key);
  auto cert_pem = pki::ReadFile(cert);
  if (!key_pem || !cert_pem) {
    std::cerr << "cannot read --cert/--key\n";
    return 2;
  }
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (!pkey) {
    std::cerr << "bad key\n";
    return 2;
  }
  auto ctx = mqtt::MakeMqttTlsContext(ca, verify_host, *cert_pem, pkey.get());
  if (!ctx) {
    std::cerr << ctx.error().message() << "\n";
    return 2;
  }
  // One SSL_CTX for all clients: each provider call hands out another reference to it.
  SSL_CTX* shared = ctx->get();
  auto start = std::chrono::steady_clock::now();
  std::mutex out_mu;
  std::vector<std::unique_ptr<mqtt::Client>> clients;
  std::atomic<int> connected{0};
  for (int i = 0; i < n; ++i) {
    mqtt::ClientSettings s;
    s.url = url;
    s.client_id = prefix + "-" + std::to_string(i);
    s.keepalive = std::chrono::seconds(keepalive);
    s.backoff_base = std::chrono::milliseconds(base_ms);
    s.backoff_cap = std::chrono::milliseconds(cap_ms);
    s.tls = [shared]() -> Expected<net::SslCtxPtr> {
      SSL_CTX_up_ref(shared);
      return net::SslCtxPtr(shared);
    };
    auto c = mqtt::Client::Create(std::move(s));
    if (!c) {
      std::cerr << c.error().message() << "\n";
      return 2;
    }
    mqtt::Client* raw = c->get();
    (*c)->OnConnection([&, i, raw](const mqtt::ConnectionEvent& e) {
      double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::lock_guard lock(out_mu);
      if (e.state == mqtt::State::kConnected) {
        ++connected;
        std::printf("{\"event\":\"connected\",\"client\":%d,\"n\":%llu,\"t\":%.3f}\n", i,
                    static_cast<unsigned long long>(raw->stats().connects), t);
      } else if (e.state == mqtt::State::kWaiting && e.attempt == 1) {
        --connected;
        std::printf("{\"event\":\"lost\",\"client\":%d,\"t\":%.3f}\n", i, t);
      }
      std::fflush(stdout);
    });
    clients.push_back(std::move(*c));
  }
  for (auto& c : clients) (void)c->Start();
  std::this_thread::sleep_for(std::chrono::seconds(duration));
  uint64_t attempts = 0, connects = 0;
  for (auto& c : clients) {
    auto st = c->stats();
    attempts += st.connect_attempts;
    connects += st.connects;
  }
  for (auto& c : clients) c->Stop();
  std::printf("{\"event\":\"summary\",\"clients\":%d,\"connects\":%llu,\"attempts\":%llu}\n", n,
              static_cast<unsigned long long>(connects), static_cast<unsigned long long>(attempts));
  return 0;
}
