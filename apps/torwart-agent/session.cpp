#include "session.hpp"

#include <chrono>

#include "inventory.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/log.hpp"
#include "torwart/mqtt/topics.hpp"

namespace torwart::agent {
namespace {
using nlohmann::json;
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

std::string StatusPayload(const char* state) {
  return Dump(
      json{{"v", 1}, {"state", state}, {"agent_version", kAgentVersion}, {"ts", UnixSeconds()}});
}

Expected<std::unique_ptr<Session>> Session::Create(SessionSettings s) {
  std::unique_ptr<Session> self(new Session());
  mqtt::ClientSettings cs;
  cs.url = s.mqtt_url;
  cs.client_id = s.device_id;
  cs.tls = s.tls;
  cs.keepalive = s.keepalive;
  cs.backoff_base = s.backoff_base;
  cs.backoff_cap = s.backoff_cap;
  cs.will = mqtt::Will{mqtt::topics::Status(s.device_id), StatusPayload("offline"), 1, true};
  auto c = mqtt::Client::Create(std::move(cs));
  if (!c) return MakeError(c.error());
  self->settings_ = std::move(s);
  self->client_ = std::move(*c);
  Session* raw = self.get();
  self->client_->OnConnection([raw](const mqtt::ConnectionEvent& e) { raw->OnConnection(e); });
  self->client_->OnMessage([raw](const mqtt::Message& m) { raw->OnMessage(m); });
  return self;
}

Session::~Session() { Stop(); }

Expected<void> Session::Start() {
  {
    std::lock_guard lock(mu_);
    if (running_) return {};
    running_ = true;
    stop_telemetry_ = false;
  }
  telemetry_ = std::thread([this] { TelemetryLoop(); });
  return client_->Start();
}

void Session::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!running_) return;
    running_ = false;
    stop_telemetry_ = true;
  }
  cv_.notify_all();
  if (telemetry_.joinable()) telemetry_.join();
  // Say goodbye explicitly: a clean DISCONNECT suppresses the will.
  if (client_->state() == mqtt::State::kConnected) PublishStatus("offline");
  client_->Stop();
}

void Session::Reconnect() { client_->Reconnect(); }

bool Session::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

json Session::Status() const {
  auto st = client_->stats();
  std::lock_guard lock(mu_);
  json j{{"state", running_ ? mqtt::StateName(st.state) : "disconnected"},
         {"mqtt_url", settings_.mqtt_url},
         {"connects", st.connects},
         {"connect_attempts", st.connect_attempts},
         {"commands_answered", commands_}};
  if (!st.last_error.empty()) j["last_error"] = st.last_error;
  if (!last_connected_at_.empty()) j["connected_since"] = last_connected_at_;
  if (st.state == mqtt::State::kWaiting) j["retry_in_ms"] = retry_in_.count();
  return j;
}

Expected<void> Session::Publish(const std::string& leaf, const std::string& payload, int qos) {
  if (client_->state() != mqtt::State::kConnected) {
    return MakeError(Errc::kUnavailable, "control channel not connected");
  }
  mqtt::PublishOptions o;
  o.qos = qos;
  return client_->Publish(mqtt::topics::Device(settings_.device_id, leaf), payload, o);
}

bool Session::connected() const { return client_->state() == mqtt::State::kConnected; }

void Session::OnConnection(const mqtt::ConnectionEvent& e) {
  if (e.state == mqtt::State::kConnected) {
    log::info("control channel connected to {}", settings_.mqtt_url);
    // Clean start: nothing survives a reconnect, so subscribe and announce again.
    if (auto r = client_->Subscribe(mqtt::topics::Command(settings_.device_id), 1); !r) {
      log::warn("subscribe: {}", r.error().message());
    }
    PublishStatus("online");
    if (settings_.on_connected) settings_.on_connected();
    std::lock_guard lock(mu_);
    last_connected_at_ = FormatRfc3339(SystemClock::Instance().Now());
    connected_event_ = true;
    last_inventory_.clear();  // republish inventory on every connect
    cv_.notify_all();
  } else if (e.state == mqtt::State::kWaiting) {
    if (e.retry_in.count() > 0 && e.retry_in != std::chrono::milliseconds::max()) {
      log::warn("control channel down ({}); retry {} in {} ms", e.reason, e.attempt,
                e.retry_in.count());
    }
    std::lock_guard lock(mu_);
    retry_in_ = e.retry_in;
    last_connected_at_.clear();
  }
}

void Session::PublishStatus(const char* state) {
  mqtt::PublishOptions o;
  o.qos = 1;
  o.retain = true;
  if (auto r = client_->Publish(mqtt::topics::Status(settings_.device_id), StatusPayload(state), o);
      !r) {
    log::warn("publishing status: {}", r.error().message());
  }
}

void Session::PublishInventory(bool force) {
  std::string inv = Dump(CollectInventory(settings_.inventory_dir));
  {
    std::lock_guard lock(mu_);
    if (!force && inv == last_inventory_) return;
  }
  mqtt::PublishOptions o;
  o.qos = 1;
  o.retain = true;
  if (auto r = client_->Publish(mqtt::topics::Inventory(settings_.device_id), inv, o); !r) {
    log::warn("publishing inventory: {}", r.error().message());
    return;
  }
  std::lock_guard lock(mu_);
  last_inventory_ = inv;
}

// One thread for the periodic work so the MQTT network thread never runs scripts or blocks.
void Session::TelemetryLoop() {
  using Clock = std::chrono::steady_clock;
  HealthSampler sampler;
  sampler.Sample(settings_.disk_path);  // prime the CPU counters
  auto next_health = Clock::now() + settings_.health_interval;
  auto next_inventory = Clock::now() + settings_.inventory_check_interval;
  std::unique_lock lock(mu_);
  while (!stop_telemetry_) {
    cv_.wait_until(lock, std::min(next_health, next_inventory),
                   [&] { return stop_telemetry_ || connected_event_; });
    if (stop_telemetry_) break;
    bool connected_now = connected_event_;
    connected_event_ = false;
    lock.unlock();
    bool up = client_->state() == mqtt::State::kConnected;
    auto now = Clock::now();
    if (up && (connected_now || now >= next_inventory)) {
      PublishInventory(connected_now);
      next_inventory = now + settings_.inventory_check_interval;
    }
    if (up && (connected_now || now >= next_health)) {
      auto h = sampler.Sample(settings_.disk_path);
      mqtt::PublishOptions o;
      o.qos = 0;
      if (auto r = client_->Publish(mqtt::topics::Health(settings_.device_id), Dump(h), o); !r) {
        log::debug("publishing health: {}", r.error().message());
      }
    }
    if (now >= next_health) next_health = now + settings_.health_interval;
    lock.lock();
  }
}

json Session::HandleCommand(const std::string& cmd, const json& args) {
  if (settings_.commands) {
    if (auto r = settings_.commands(cmd, args)) return *r;
  }
  if (cmd == "ping") {
    return json{{"v", 1}, {"ok", true}, {"result", {{"pong", true}, {"ts", UnixSeconds()}}}};
  }
  if (cmd == "info") {
    json r{{"device_id", settings_.device_id},
           {"agent_version", kAgentVersion},
           {"profile", settings_.profile},
           {"server", settings_.server},
           {"mqtt_url", settings_.mqtt_url}};
    std::lock_guard lock(mu_);
    r["connected_since"] = last_connected_at_;
    return json{{"v", 1}, {"ok", true}, {"result", r}};
  }
  if (cmd == "inventory") {
    // Re-collect and publish now (e.g. after the operator changed something on site).
    (void)args;
    return json{{"v", 1}, {"ok", true}, {"result", CollectInventory(settings_.inventory_dir)}};
  }
  return json{{"v", 1}, {"ok", false}, {"error", "unknown command \"" + cmd.substr(0, 64) + "\""}};
}

void Session::OnMessage(const mqtt::Message& m) {
  if (m.topic != mqtt::topics::Command(settings_.device_id)) return;
  const auto& props = m.properties;
  if (props.response_topic.empty()) {
    log::warn("command without a response topic ignored");
    return;
  }
  json resp;
  json req = json::parse(m.payload, nullptr, false);
  if (m.payload.size() > 256 * 1024) {
    resp = json{{"v", 1}, {"ok", false}, {"error", "command too large"}};
  } else if (req.is_discarded() || !req.is_object()) {
    resp = json{{"v", 1}, {"ok", false}, {"error", "command is not a JSON object"}};
  } else if (!req.contains("v") || req["v"] != 1) {
    resp = json{{"v", 1}, {"ok", false}, {"error", "unsupported command version"}};
  } else if (!req.contains("cmd") || !req["cmd"].is_string()) {
    resp = json{{"v", 1}, {"ok", false}, {"error", "\"cmd\" must be a string"}};
  } else if (req.contains("args") && !req["args"].is_object()) {
    resp = json{{"v", 1}, {"ok", false}, {"error", "\"args\" must be an object"}};
  } else {
    resp = HandleCommand(req["cmd"].get<std::string>(), req.value("args", json::object()));
  }
  // Responses go only to this device's own response topic (the broker ACL allows nothing else);
  // a foreign response topic is answered on ours so the requester can still match correlation.
  std::string topic = props.response_topic;
  if (topic != mqtt::topics::Response(settings_.device_id))
    topic = mqtt::topics::Response(settings_.device_id);
  mqtt::PublishOptions o;
  o.qos = 1;
  o.properties.correlation_data = props.correlation_data;
  if (auto r = client_->Publish(topic, Dump(resp), o); !r) {
    log::warn("answering command: {}", r.error().message());
    return;
  }
  std::lock_guard lock(mu_);
  ++commands_;
}

}  // namespace torwart::agent
