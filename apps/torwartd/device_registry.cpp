#include "device_registry.hpp"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "agent_events.hpp"
#include "auth.hpp"
#include "device_message.hpp"
#include "json_util.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/mqtt/client.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr size_t kMaxQueue = 10000;
constexpr int kBadMessagesPerMinute = 120;
constexpr const char* kShareGroup = "$share/torwartd/";
constexpr const char* kLeaves[] = {"status", "inventory", "health", "res", "event"};
// After (re)connecting, a plain subscription to the retained status topics for this long
// (shared subscriptions get no retained messages), so the registry learns who is online.
constexpr auto kCatchUp = std::chrono::seconds(5);

// Logs and audits bad device input, at most kBadMessagesPerMinute audit events a minute so a
// misbehaving fleet cannot flood the audit store; the rest are counted into the next event.
class BadMessageAuditor {
 public:
  explicit BadMessageAuditor(Context& ctx) : ctx_(ctx) {}
  void operator()(const std::string& topic, const std::string& device, size_t size,
                  const std::string& why) {
    std::lock_guard lock(mu_);
    log::warn("bad message from device {} on {} ({} bytes): {}", device.empty() ? "?" : device,
              topic.substr(0, 200), size, why);
    TimePoint now = ctx_.clock->Now();
    if (now - window_start_ > std::chrono::minutes(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (++in_window_ > kBadMessagesPerMinute) {
      ++suppressed_;
      return;
    }
    audit::Event e;
    e.time = now;
    e.actor_type = device.empty() ? audit::ActorType::kAnonymous : audit::ActorType::kDevice;
    e.actor = device;
    e.source = "mqtt";
    e.category = "device";
    e.type = "device.bad_message";
    e.target = topic.substr(0, 200);
    e.result = audit::Result::kFailure;
    e.reason = why;
    e.details = json{{"bytes", size}, {"suppressed_before", suppressed_}}.dump(
        -1, ' ', false, json::error_handler_t::replace);
    suppressed_ = 0;
    (void)Audit(ctx_, e);
  }

 private:
  Context& ctx_;
  std::mutex mu_;
  TimePoint window_start_{};
  int in_window_ = 0;
  int64_t suppressed_ = 0;
};

struct Incoming {
  enum Kind { kMessage, kConnected } kind = kMessage;
  std::string topic, payload, correlation;
  bool retained = false;
};

struct PendingCall {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Steady::time_point answered;
  DeviceMessage response;
};

class DeviceRegistryImpl final : public DeviceRegistry {
 public:
  DeviceRegistryImpl(Context& ctx, RegistrySettings s)
      : ctx_(ctx), settings_(std::move(s)), bad_(ctx), agent_events_(ctx) {}
  ~DeviceRegistryImpl() override { Stop(); }

  Expected<void> Init() {
    mqtt::ClientSettings cs;
    cs.url = settings_.url;
    cs.client_id = settings_.client_id;
    cs.keepalive = std::chrono::seconds(5);  // also the connect timeout: loopback, be quick
    cs.backoff_base = std::chrono::milliseconds(200);
    cs.backoff_cap = std::chrono::seconds(5);
    auto url = mqtt::ParseUrl(settings_.url);
    if (!url) return MakeError(url.error().WithContext("broker URL"));
    std::string ca = settings_.ca_file, chain = settings_.cert_chain_pem, key = settings_.key_pem;
    std::string host = url->host;
    cs.tls = [ca, host, chain, key]() -> Expected<net::SslCtxPtr> {
      auto k = pki::PrivateKeyFromPem(key);
      if (!k) return MakeError(k.error());
      return mqtt::MakeMqttTlsContext(ca, host, chain, k->get());
    };
    auto c = mqtt::Client::Create(std::move(cs));
    if (!c) return MakeError(c.error().WithContext("broker client"));
    client_ = std::move(*c);
    client_->OnConnection([this](const mqtt::ConnectionEvent& ev) { OnConnection(ev); });
    client_->OnMessage([this](const mqtt::Message& m) {
      Incoming in;
      in.topic = m.topic;
      in.payload = m.payload;
      in.correlation = m.properties.correlation_data;
      in.retained = m.retain;
      Enqueue(std::move(in));
    });
    return {};
  }

  Expected<void> Start() override {
    worker_ = std::thread([this] { Work(); });
    if (auto r = client_->Start(); !r) return MakeError(r.error().WithContext("broker client"));
    return {};
  }

  void Stop() override {
    if (client_) client_->Stop();
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  bool connected() const override { return client_ && client_->state() == mqtt::State::kConnected; }

  Expected<PingResult> Ping(const std::string& device_id,
                            std::chrono::milliseconds timeout) override {
    return Command(device_id, "ping", "{}", timeout);
  }

  void OnDeviceOnline(std::function<void(const std::string&)> hook) override {
    std::lock_guard lock(mu_);
    on_online_ = std::move(hook);
  }

  Expected<PingResult> Command(const std::string& device_id, const std::string& cmd,
                               const std::string& args_json,
                               std::chrono::milliseconds timeout) override {
    json args = json::parse(args_json, nullptr, false);
    if (!args.is_object()) {
      return MakeError(Errc::kInvalidArgument, "command arguments must be a JSON object");
    }
    if (!connected())
      return MakeError(Errc::kUnavailable, "torwartd is not connected to the broker");
    auto call = std::make_shared<PendingCall>();
    std::string corr = RandomBytes(16);
    {
      std::lock_guard lock(calls_mu_);
      calls_[corr] = call;
    }
    mqtt::PublishOptions po;
    po.qos = 1;
    po.properties.response_topic = "torwart/d/" + device_id + "/res";
    po.properties.correlation_data = corr;
    po.properties.content_type = "application/json";
    po.properties.message_expiry = static_cast<uint32_t>(
        std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
    auto sent_at = Steady::now();
    auto r = client_->Publish("torwart/d/" + device_id + "/cmd",
                              json{{"v", 1}, {"cmd", cmd}, {"args", args}}.dump(), po);
    Expected<PingResult> out = MakeError(Errc::kTimeout, "device did not answer in time");
    if (!r) {
      out = MakeError(r.error().WithContext("sending " + cmd));
    } else {
      std::unique_lock lock(call->mu);
      if (call->cv.wait_for(lock, timeout, [&] { return call->done; })) {
        PingResult p;
        p.rtt = std::chrono::duration_cast<std::chrono::microseconds>(call->answered - sent_at);
        p.ok = call->response.ok;
        p.result_json = call->response.result;
        p.error = call->response.error;
        p.code = call->response.code;
        out = p;
      }
    }
    std::lock_guard lock(calls_mu_);
    calls_.erase(corr);
    return out;
  }

 private:
  void OnConnection(const mqtt::ConnectionEvent& ev) {
    if (ev.state == mqtt::State::kConnected) {
      log::info("torwartd connected to the broker at {}", settings_.url);
      // Ordered before the messages the subscriptions bring: all offline, then the retained
      // status of every device that is really connected sets it online again.
      Incoming in;
      in.kind = Incoming::kConnected;
      Enqueue(std::move(in));
      for (const char* leaf : kLeaves) {
        auto r = client_->Subscribe(std::string(kShareGroup) + "torwart/d/+/" + leaf, 1);
        if (!r) log::error("subscribing to device {} topics: {}", leaf, r.error().message());
      }
      if (auto r = client_->Subscribe("torwart/d/+/status", 1); !r) {
        log::error("subscribing to retained device status: {}", r.error().message());
      }
      std::lock_guard lock(mu_);
      catch_up_until_ = Steady::now() + kCatchUp;
    } else if (ev.state == mqtt::State::kWaiting) {
      log::warn("torwartd lost the broker connection ({}); retrying in {} ms", ev.reason,
                ev.retry_in.count());
    }
  }

  void Enqueue(Incoming in) {
    {
      std::lock_guard lock(mu_);
      if (queue_.size() >= kMaxQueue && in.kind == Incoming::kMessage) {
        ++dropped_;
        return;
      }
      queue_.push_back(std::move(in));
    }
    cv_.notify_one();
  }

  void Work() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait_for(lock, std::chrono::milliseconds(500),
                   [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      if (catch_up_until_ && Steady::now() > *catch_up_until_) {
        catch_up_until_.reset();
        lock.unlock();
        if (client_) (void)client_->Unsubscribe("torwart/d/+/status");
        lock.lock();
      }
      if (dropped_ > 0) {
        log::error("device message queue full: dropped {} message(s)", dropped_);
        dropped_ = 0;
      }
      while (!queue_.empty()) {
        Incoming in = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        Process(in);
        lock.lock();
        if (stopping_) return;
      }
    }
  }

  void Process(const Incoming& in) {
    try {
      ProcessOrThrow(in);
    } catch (const std::exception& e) {
      // Nothing a device sends may stop the registry.
      log::error("processing device message on {}: {}", in.topic.substr(0, 200), e.what());
    }
  }

  void ProcessOrThrow(const Incoming& in) {
    const TimePoint now = ctx_.clock->Now();
    if (in.kind == Incoming::kConnected) {
      auto n = ctx_.store->device_state().MarkAllOffline(now);
      if (!n) log::error("device registry: {}", n.error().message());
      return;
    }
    auto topic = ParseDeviceTopic(in.topic);
    std::string device = topic ? topic->first : "";
    auto m = ParseDeviceMessage(in.topic, in.payload);
    if (!m) {
      bad_(in.topic, device, in.payload.size(), m.error().message());
      return;
    }
    auto d = ctx_.store->devices().GetById(m->device_id);
    if (!d) {
      bad_(in.topic, device, in.payload.size(), "message for a device torwartd does not know");
      return;
    }
    const bool live = !in.retained;
    auto& repo = ctx_.store->device_state();
    switch (m->kind) {
      case DeviceTopic::kStatus: {
        auto changed = repo.SetStatus(m->device_id, m->online, m->agent_version, now, live);
        if (!changed) {
          log::error("device registry: {}", changed.error().message());
        } else if (*changed && live) {
          audit::Event e;
          e.time = now;
          e.actor_type = audit::ActorType::kDevice;
          e.actor = m->device_id;
          e.source = "mqtt";
          e.category = "device";
          e.type = m->online ? "device.online" : "device.offline";
          e.target = d->name;
          e.details = json{{"agent_version", m->agent_version}}.dump();
          (void)Audit(ctx_, e);
          log::info("device {} is {}", d->name, m->online ? "online" : "offline");
        }
        if (changed && *changed && m->online) {
          std::function<void(const std::string&)> hook;
          {
            std::lock_guard lock(mu_);
            hook = on_online_;
          }
          if (hook) hook(m->device_id);
        }
        break;
      }
      case DeviceTopic::kInventory:
        if (auto r = repo.SetInventory(m->device_id, m->json, now, live); !r) {
          log::error("device registry: {}", r.error().message());
        }
        break;
      case DeviceTopic::kHealth:
        if (auto r = repo.SetHealth(m->device_id, m->json, now, live); !r) {
          log::error("device registry: {}", r.error().message());
        }
        break;
      case DeviceTopic::kEvent: {
        if (live) (void)repo.Touch(m->device_id, now);
        // QoS 1: a failed audit is logged by Audit(); the agent keeps its own journal.
        (void)agent_events_.Record(*d, *m);
        break;
      }
      case DeviceTopic::kResponse: {
        if (live) (void)repo.Touch(m->device_id, now);
        std::shared_ptr<PendingCall> call;
        {
          std::lock_guard lock(calls_mu_);
          auto it = calls_.find(in.correlation);
          if (it != calls_.end()) call = it->second;
        }
        if (!call) {
          log::debug("response from {} without a waiting request (late or unknown)", d->name);
          break;
        }
        {
          std::lock_guard lock(call->mu);
          call->done = true;
          call->answered = Steady::now();
          call->response = *m;
        }
        call->cv.notify_all();
        break;
      }
    }
  }

  Context& ctx_;
  RegistrySettings settings_;
  BadMessageAuditor bad_;
  AgentEventAuditor agent_events_;  // torwart/d/<uuid>/event -> audit agent.<type>
  std::unique_ptr<mqtt::Client> client_;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Incoming> queue_;
  bool stopping_ = false;
  int64_t dropped_ = 0;
  std::optional<Steady::time_point> catch_up_until_;
  std::mutex calls_mu_;
  std::map<std::string, std::shared_ptr<PendingCall>> calls_;
  std::function<void(const std::string&)> on_online_;  // guarded by mu_
};

json StateJson(const storage::DeviceState& s, bool details) {
  json j{{"online", s.online}};
  if (s.last_seen) j["last_seen"] = FormatRfc3339(*s.last_seen);
  if (!s.agent_version.empty()) j["agent_version"] = s.agent_version;
  if (details) {
    if (!s.inventory.empty()) {
      json inv = json::parse(s.inventory, nullptr, false);
      if (!inv.is_discarded()) j["inventory"] = inv;
      if (s.inventory_time) j["inventory_time"] = FormatRfc3339(*s.inventory_time);
    }
    if (!s.health.empty()) {
      json h = json::parse(s.health, nullptr, false);
      if (!h.is_discarded()) j["health"] = h;
      if (s.health_time) j["health_time"] = FormatRfc3339(*s.health_time);
    }
  }
  return j;
}

}  // namespace

Expected<std::unique_ptr<DeviceRegistry>> DeviceRegistry::Create(Context& ctx, RegistrySettings s) {
  auto r = std::make_unique<DeviceRegistryImpl>(ctx, std::move(s));
  if (auto ok = r->Init(); !ok) return MakeError(ok.error());
  return std::unique_ptr<DeviceRegistry>(std::move(r));
}

void AddDeviceState(Context& ctx, const std::string& device_id, bool details, json& j) {
  auto s = ctx.store->device_state().Get(device_id);
  if (!s) {
    j["online"] = false;
    return;
  }
  json state = StateJson(*s, details);
  for (auto& [k, v] : state.items()) j[k] = v;
}

void RegisterControlApi(Context& ctx, DeviceRegistry* registry, const std::string& agent_url,
                        http::Router& router) {
  router.Add("GET", "/.well-known/torwart/agent.json", [&ctx, agent_url](const http::Request&) {
    json j{{"v", 1}};
    if (!agent_url.empty()) j["mqtt_url"] = agent_url;
    if (!ctx.relay_url.empty()) j["relay_url"] = ctx.relay_url;  // tunnels (tunnel_service.*)
    return http::Response::Json(200, j.dump());
  });
  router.Add(
      "POST", "/api/v1/devices/{name}/ping",
      RequireRole(
          ctx, {"admin", "operator"},
          [&ctx, registry](const http::Request& req, const Principal& who) {
            auto body = ParseBody(req.body, {"timeout_ms"});
            if (!body) return ErrorResponse(body.error());
            int64_t timeout_ms = 5000;
            if (auto t = body->find("timeout_ms"); t != body->end()) {
              if (!t->is_number_integer() || t->get<int64_t>() < 100 || t->get<int64_t>() > 60000) {
                return http::Response::Error(400, "invalid_argument",
                                             "timeout_ms must be 100-60000");
              }
              timeout_ms = t->get<int64_t>();
            }
            auto d = ctx.store->devices().GetByName(req.params.at("name"));
            if (!d) {
              return ErrorResponse(d.error().WithContext("device " + req.params.at("name")));
            }
            if (!registry) {
              return http::Response::Error(503, "unavailable", "the control channel is disabled");
            }
            auto r = registry->Ping(d->id, std::chrono::milliseconds(timeout_ms));
            audit::Event e = MakeUserEvent(ctx, req, who, "device", "device.ping");
            e.target = d->name;
            e.result = r && r->ok ? audit::Result::kSuccess : audit::Result::kFailure;
            if (!r) e.reason = r.error().message();
            if (auto a = Audit(ctx, e); !a) return ErrorResponse(a.error());
            if (!r) {
              if (r.error().Is(Errc::kTimeout)) {
                return http::Response::Error(504, "timeout",
                                             "device '" + d->name + "' did not answer within " +
                                                 std::to_string(timeout_ms) + " ms");
              }
              return ErrorResponse(r.error());
            }
            json out{{"device", d->name},
                     {"ok", r->ok},
                     {"rtt_ms", static_cast<double>(r->rtt.count()) / 1000.0}};
            if (!r->result_json.empty()) {
              json res = json::parse(r->result_json, nullptr, false);
              if (!res.is_discarded()) out["result"] = res;
            }
            if (!r->ok) out["error"] = r->error;
            return http::Response::Json(200, out.dump());
          }));
}

}  // namespace torwart::server
