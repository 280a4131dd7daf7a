#include "control_channel.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker.hpp"
#include "device_registry.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/x509.hpp"

namespace fs = std::filesystem;

namespace torwart::server {
namespace {

constexpr auto kClientLifetime = std::chrono::hours(24 * 90);
constexpr auto kClientRenewBefore = std::chrono::hours(24 * 30);
// Belt and braces next to the change hook: expired certificates leave the state file, and a
// state file someone removed comes back.
constexpr auto kStateRefresh = std::chrono::seconds(10);

bool PortOpen(const std::string& address, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  bool ok = inet_pton(AF_INET, address.c_str(), &sa.sin_addr) == 1 &&
            ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}


// torwartd's client certificate for the broker, kept in <data>/broker/client.{pem,key} and
// reissued when less than 30 days are left (so an external broker can be configured for it).
Expected<PkiService::ServiceCredentials> ClientCredentials(Context& ctx, PkiService& pki,
                                                           const std::string& dir) {
  const fs::path cert_path = fs::path(dir) / "client.pem", key_path = fs::path(dir) / "client.key";
  auto chain = pki::ReadFile(cert_path);
  auto key = pki::ReadFile(key_path);
  if (chain && key) {
    auto leaf = pki::CertFromPem(*chain);
    if (leaf && pki::NotAfter(leaf->get()) - ctx.clock->Now() > kClientRenewBefore) {
      PkiService::ServiceCredentials c;
      c.cert_chain_pem = *chain;
      c.key_pem = *key;
      c.sha256_hex = pki::CertSha256Hex(leaf->get());
      c.serial = pki::SerialHex(leaf->get());
      c.not_after = pki::NotAfter(leaf->get());
      return c;
    }
  }
  auto c = pki.IssueServiceCertificate(kClientLifetime);
  if (!c) return MakeError(c.error());
  if (auto r = pki::WriteFileAtomic(key_path, c->key_pem, fs::perms(0600)); !r)
    return MakeError(r.error());
  if (auto r = pki::WriteFileAtomic(cert_path, c->cert_chain_pem, fs::perms(0644)); !r) {
    return MakeError(r.error());
  }
  return c;
}

class ControlChannelImpl final : public ControlChannel {
 public:
  ~ControlChannelImpl() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (refresher_.joinable()) refresher_.join();
    if (registry_) registry_->Stop();
    if (supervisor_) supervisor_->Stop();
  }
  std::string agent_url() const override { return agent_url_; }
  DeviceRegistry* registry() const override { return registry_.get(); }

  std::string agent_url_;
  std::unique_ptr<BrokerStateWriter> writer_;
  std::unique_ptr<MosquittoSupervisor> supervisor_;
  std::unique_ptr<DeviceRegistry> registry_;
  std::thread refresher_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace

Expected<std::unique_ptr<ControlChannel>> StartControlChannel(Context& ctx, PkiService& pki,
                                                              http::Router& router) {
  auto ch = std::make_unique<ControlChannelImpl>();
  const BrokerConfig& bc = ctx.config->broker;
  if (!bc.enabled) {
    RegisterControlApi(ctx, nullptr, "", router);
    log::warn("control channel disabled ([broker] enabled = false)");
    return std::unique_ptr<ControlChannel>(std::move(ch));
  }
  const std::string dir = ctx.config->data_dir + "/broker";
  std::error_code ec;
  fs::create_directories(dir, ec);
  auto creds = ClientCredentials(ctx, pki, dir);
  if (!creds) return MakeError(creds.error().WithContext("broker client certificate"));

  std::string url;
  if (bc.external.empty()) {
    auto plan =
        PlanBroker(*ctx.config, pki.server_cert_file(), pki.server_key_file(), pki.ca_chain_file());
    if (!plan) return MakeError(plan.error().WithContext("planning the broker"));
    ch->writer_ = std::make_unique<BrokerStateWriter>(ctx, plan->state_file);
    ch->writer_->AddServerFingerprint(creds->sha256_hex);
    if (auto r = ch->writer_->Write(); !r) return MakeError(r.error().WithContext("broker state"));
    BrokerStateWriter* writer = ch->writer_.get();
    pki.OnCertificatesChanged([writer] {
      if (auto r = writer->Write(); !r) log::error("broker state: {}", r.error().message());
    });
    ch->supervisor_ = std::make_unique<MosquittoSupervisor>(
        *plan, [&ctx](const std::string& type, const std::string& details) {
          (void)AuditSystem(ctx, "server", type, details);
        });
    if (auto r = ch->supervisor_->Start(); !r) return MakeError(r.error().WithContext("broker"));
    ControlChannelImpl* raw = ch.get();
    ch->refresher_ = std::thread([raw, writer] {
      std::unique_lock lock(raw->mu_);
      while (!raw->cv_.wait_for(lock, kStateRefresh, [raw] { return raw->stopping_; })) {
        lock.unlock();
        if (auto r = writer->Write(); !r) log::error("broker state: {}", r.error().message());
        lock.lock();
      }
    });
    url = plan->server_url;
    ch->agent_url_ = plan->agent_url;
    // Connect once the broker listens (an attempt against a port that is not open yet costs a
    // whole connect timeout in libmosquitto 2.0.11).
    for (int i = 0; i < 50 && !PortOpen(plan->server_address, plan->server_port); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } else {
    url = bc.external;
    ch->agent_url_ = bc.public_url.empty() ? bc.external : bc.public_url;
  }

  RegistrySettings rs;
  rs.url = url;
  rs.ca_file = pki.ca_chain_file();
  rs.cert_chain_pem = creds->cert_chain_pem;
  rs.key_pem = creds->key_pem;
  rs.client_id = "torwartd-" + HexEncode(RandomBytes(4));
  rs.agent_url = ch->agent_url_;
  auto reg = DeviceRegistry::Create(ctx, rs);
  if (!reg) return MakeError(reg.error());
  ch->registry_ = std::move(*reg);
  if (auto r = ch->registry_->Start(); !r) return MakeError(r.error());
  RegisterControlApi(ctx, ch->registry_.get(), ch->agent_url_, router);
  log::info("control channel: agents connect to {}", ch->agent_url_);
  return std::unique_ptr<ControlChannel>(std::move(ch));
}

}  // namespace torwart::server
