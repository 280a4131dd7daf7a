#include "tunnel_service.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "api.hpp"
#include "auth.hpp"
#include "json_util.hpp"
#include "pki_service.hpp"
#include "policy_api.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/grant_extension.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/wire.hpp"

namespace fs = std::filesystem;

namespace torwart::server {
namespace {

using nlohmann::json;

constexpr int kListLimit = 1000;
constexpr auto kSweepEvery = std::chrono::seconds(1);
constexpr auto kResyncEvery = std::chrono::seconds(30);
constexpr size_t kSenderThreads = 2;
constexpr size_t kMaxQueued = 10000;
constexpr size_t kMaxReason = 500;

std::string HostPort(const std::string& host, uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

bool SeesEveryStream(const std::string& role) { return role == "admin" || role == "operator"; }

// Gateway answers to stream.open (docs/design/control-channel.md) → what the technician gets.
Errc GatewayErrc(const std::string& code) {
  if (code == "consent" || code == "not_allowed" || code == "quarantined") {
    return Errc::kPermissionDenied;
  }
  if (code == "busy") return Errc::kUnavailable;
  return Errc::kFailedPrecondition;
}

std::string Clip(std::string s, size_t n = kMaxReason) {
  if (s.size() > n) s.resize(n);
  return s;
}

}  // namespace

TunnelService::TunnelService(Context& ctx, AccessService& access, PolicyService& policies)
    : ctx_(ctx), access_(access), policies_(policies) {}

TunnelService::~TunnelService() { Stop(); }

Expected<void> TunnelService::Start(PkiService& pki) {
  const RelayConfig& rc = ctx_.config->relay;
  if (!rc.enabled) {
    log::warn("tunnel relay disabled ([relay] enabled = false)");
    StartWith(nullptr, "", 0);
    return {};
  }
  std::string address;
  uint16_t port = 0;
  if (auto r = ParseListen(rc.listen, address, port); !r) {
    return MakeError(r.error().WithContext("relay.listen"));
  }
  const fs::path dir = fs::path(ctx_.config->data_dir) / "relay";
  std::error_code ec;
  fs::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  uint16_t remembered = 0;
  if (port == 0) {
    std::ifstream f(dir / "port.json");
    json j = f ? json::parse(f, nullptr, false) : json();
    if (j.is_object() && j.contains("port") && j["port"].is_number_unsigned() &&
        j["port"].get<unsigned>() < 65536) {
      remembered = static_cast<uint16_t>(j["port"].get<unsigned>());
    }
  }
  auto start = [&](uint16_t at) -> Expected<std::unique_ptr<tunnel::Relay>> {
    auto tls = tunnel::MakeRelayServerContext(pki.server_cert_file(), pki.server_key_file(),
                                              pki.ca_chain_file());
    if (!tls) return MakeError(tls.error().WithContext("relay TLS"));
    tunnel::RelaySettings s;
    s.listen = HostPort(address, at);
    s.tls = std::move(*tls);
    s.pair_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(rc.pair_timeout);
    tunnel::RelayHooks h;
    h.authorize = [this](const tunnel::Leg& leg) { return Authorize(leg); };
    h.notify_gateway = [this](const tunnel::StreamPlan& p) { return NotifyGateway(p); };
    h.accept_gateway = [this](const tunnel::StreamPlan& p, const tunnel::Leg& leg) {
      return AcceptGateway(p, leg);
    };
    h.on_end = [this](const tunnel::StreamEnd& e) { OnEnd(e); };
    return tunnel::Relay::Start(std::move(s), std::move(h));
  };
  Expected<std::unique_ptr<tunnel::Relay>> relay =
      MakeError(Errc::kUnavailable, "relay not started");
  if (port == 0 && remembered != 0) {
    relay = start(remembered);
    if (!relay) log::warn("relay: port {} of the last start is taken; picking another", remembered);
  }
  if (!relay) relay = start(port);
  if (!relay) return MakeError(relay.error().WithContext("starting the relay on " + rc.listen));
  const uint16_t bound = (*relay)->port();
  if (port == 0) {
    std::ofstream f(dir / "port.json", std::ios::trunc);
    f << json{{"port", bound}}.dump() << "\n";
  }
  std::string host = address;
  uint16_t public_port = bound;
  if (!rc.public_address.empty()) {
    if (auto r = ParseListen(rc.public_address, host, public_port); !r) {
      return MakeError(r.error().WithContext("relay.public_address"));
    }
  } else if (host == "0.0.0.0" || host == "::") {
    host = ctx_.config->public_names.empty() ? "localhost" : ctx_.config->public_names.front();
  }
  StartWith(std::move(*relay), host, public_port);
  log::info("tunnel relay listening on {} (told to clients as {})", HostPort(address, bound),
            ctx_.relay_url);
  return {};
}

void TunnelService::StartWith(std::unique_ptr<tunnel::Relay> relay, std::string relay_host,
                              uint16_t relay_port) {
  relay_ = std::move(relay);
  relay_host_ = std::move(relay_host);
  relay_port_ = relay_port;
  if (relay_) ctx_.relay_url = "tls://" + HostPort(relay_host_, relay_port_);
  // No stream survives a restart: whatever a previous run left open has ended.
  auto n = ctx_.store->tunnels().CloseAllOpen(ctx_.clock->Now(), "torwartd restarted");
  if (!n) {
    log::error("closing tunnel sessions of the previous run: {}", n.error().message());
  } else if (*n > 0) {
    log::warn("closed {} tunnel session(s) left open by the previous run", *n);
  }
  std::lock_guard lock(mu_);
  if (started_) return;
  started_ = true;
  for (size_t i = 0; i < kSenderThreads; ++i) senders_.emplace_back([this] { SenderLoop(); });
  reaper_ = std::thread([this] { ReaperLoop(); });
}

void TunnelService::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  idle_cv_.notify_all();
  reaper_cv_.notify_all();
  if (relay_) relay_->Stop();  // ends every stream (on_end still records them)
  for (auto& t : senders_) {
    if (t.joinable()) t.join();
  }
  if (reaper_.joinable()) reaper_.join();
}

// --- hooks ---

Expected<tunnel::StreamPlan> TunnelService::Decide(const tunnel::Leg& leg, json& details,
                                                   std::string& user, std::string& target) {
  auto denied = [](std::string why) { return MakeError(Errc::kPermissionDenied, std::move(why)); };
  auto cert = pki::CertFromDer(leg.cert_der);
  if (!cert) return denied("the client certificate cannot be read");
  auto claims = pki::GrantClaimsOf(cert->get());
  if (!claims) return denied("the certificate's grant extension is malformed");
  if (!claims->has_value()) {
    return denied("not a grant certificate (get one with `torwart access cert ID`)");
  }
  const pki::GrantClaims& c = **claims;
  user = c.user;
  target = c.site + "/" + c.target;
  details["grant"] = c.grant_id;

  auto r = ctx_.store->access().Get(c.grant_id);
  if (!r) {
    if (r.error().Is(Errc::kNotFound)) return denied("unknown grant " + c.grant_id);
    return MakeError(Errc::kUnavailable, "cannot read grant " + c.grant_id);
  }
  if (r->requester != c.user || r->site != c.site || r->target != c.target) {
    return denied("the certificate does not match grant " + c.grant_id);
  }
  const std::string state = access_.State(*r);
  if (state == "expired") return MakeError(Errc::kExpired, "grant " + c.grant_id + " has expired");
  if (state == "revoked") return denied("grant " + c.grant_id + " was revoked");
  if (state == "ended")
    return denied("grant " + c.grant_id + " ended: user " + c.user + " is disabled");
  if (state != "active") return denied("grant " + c.grant_id + " is " + state + ", not active");
  auto u = ctx_.store->users().GetByName(c.user);
  if (!u || u->disabled) return denied("user " + c.user + " is disabled");

  auto active = policies_.Active();
  const policy::Target* t = active ? active->policy.FindTarget(r->target) : nullptr;
  if (t == nullptr || t->site != r->site || t->gateway.empty()) {
    return MakeError(Errc::kNotFound, "target " + target + " is not in the active policy");
  }
  details["gateway"] = t->gateway;
  auto d = ctx_.store->devices().GetByName(t->gateway);
  if (!d) {
    if (d.error().Is(Errc::kNotFound)) {
      return MakeError(Errc::kUnavailable, "gateway " + t->gateway + " is not registered");
    }
    return MakeError(Errc::kUnavailable, "cannot read gateway " + t->gateway);
  }
  details["device_id"] = d->id;
  if (d->status == "revoked") return denied("gateway " + d->name + " is revoked");
  auto q = ctx_.store->tunnels().GetQuarantine(d->id);
  if (!q) return MakeError(Errc::kUnavailable, "cannot read the quarantine of " + d->name);
  if (q->has_value() && (*q)->on) {
    return denied("gateway " + d->name + " is quarantined" +
                  ((*q)->reason.empty() ? "" : ": " + (*q)->reason));
  }
  if (!Online(d->id)) return MakeError(Errc::kUnavailable, "gateway " + d->name + " is offline");

  tunnel::StreamPlan plan;
  plan.stream_id = tunnel::NewStreamId();
  plan.device_id = d->id;
  plan.grant_id = r->id;
  plan.user = r->requester;
  plan.target = r->target;
  plan.deadline = std::min<TimePoint>(*r->ends, c.not_after);
  return plan;
}

Expected<tunnel::StreamPlan> TunnelService::Authorize(const tunnel::Leg& leg) {
  json details = json::object();
  std::string user, target;
  auto plan = Decide(leg, details, user, target);
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = user.empty() ? audit::ActorType::kAnonymous : audit::ActorType::kUser;
  e.actor = user;
  if (!user.empty()) {
    if (auto u = ctx_.store->users().GetByName(user)) e.organisation = u->organisation;
  }
  e.source = leg.peer;
  e.category = "stream";
  e.target = target;
  details["client"] = leg.peer;
  if (!plan) {
    e.type = "tunnel.refused";
    e.result = audit::Result::kDenied;
    e.reason = plan.error().message();
    e.details = details.dump(-1, ' ', false, json::error_handler_t::replace);
    (void)Audit(ctx_, std::move(e));
    log::info("tunnel refused for {} from {}: {}", user.empty() ? "?" : user, leg.peer,
              plan.error().message());
    return plan;
  }
  storage::TunnelSession s;
  s.id = plan->stream_id;
  s.grant_id = plan->grant_id;
  s.user = plan->user;
  s.device_id = plan->device_id;
  s.site = target.substr(0, target.find('/'));
  s.target = plan->target;
  s.client = leg.peer;
  s.opened = e.time;
  if (auto ok = ctx_.store->tunnels().Open(s); !ok) {
    log::error("recording tunnel session {}: {}", s.id, ok.error().message());
    return MakeError(Errc::kUnavailable, "the session cannot be recorded (" +
                                             ok.error().message() + "); refused");
  }
  details["stream"] = plan->stream_id;
  details["deadline"] = FormatRfc3339(plan->deadline);
  e.type = "tunnel.open";
  e.result = audit::Result::kSuccess;
  e.details = details.dump(-1, ' ', false, json::error_handler_t::replace);
  if (auto ok = Audit(ctx_, std::move(e)); !ok) {
    // Fail closed: a stream nobody can account for is not opened.
    (void)ctx_.store->tunnels().Close(s.id, ctx_.clock->Now(), 0, 0,
                                      "refused: audit trail unavailable");
    return MakeError(Errc::kUnavailable, "audit trail unavailable; the stream is refused");
  }
  return plan;
}

Expected<void> TunnelService::NotifyGateway(const tunnel::StreamPlan& plan) {
  auto d = ctx_.store->devices().GetById(plan.device_id);
  const std::string name = d ? d->name : plan.device_id;
  if (!send_) return MakeError(Errc::kUnavailable, "the control channel is disabled");
  auto r = ctx_.store->access().Get(plan.grant_id);
  if (!r) return MakeError(Errc::kUnavailable, "cannot read grant " + plan.grant_id);
  json args{{"stream", plan.stream_id},
            {"relay", HostPort(relay_host_, relay_port_)},
            {"relay_name", relay_host_},
            {"grant", plan.grant_id},
            {"user", plan.user},
            {"site", r->site},
            {"target", plan.target},
            {"scopes", r->scopes},
            {"consent_required", r->on_site_consent},
            {"deadline", ToUnix(plan.deadline)}};
  auto res = send_(plan.device_id, "stream.open", args.dump(), kGatewayTimeout);
  if (!res) {
    if (res.error().Is(Errc::kTimeout)) {
      return MakeError(Errc::kUnavailable, "gateway " + name + " did not answer within " +
                                               std::to_string(kGatewayTimeout.count() / 1000) +
                                               " s");
    }
    return MakeError(Errc::kUnavailable, "gateway " + name + ": " + res.error().message());
  }
  if (res->ok) return {};
  // The gateway refused (consent off, target not on its allowlist, quarantined, ...).
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = audit::ActorType::kDevice;
  e.actor = plan.device_id;
  e.source = "agent";
  e.category = "stream";
  e.type = "tunnel.refused";
  e.target = r->site + "/" + plan.target;
  e.result = audit::Result::kDenied;
  e.reason = Clip(res->error);
  e.details = json{
      {"stream", plan.stream_id},
      {"grant", plan.grant_id},
      {"user", plan.user},
      {"gateway", name},
      {"code",
       res->code}}.dump(-1, ' ', false, json::error_handler_t::replace);
  (void)Audit(ctx_, std::move(e));
  std::string text = res->error.empty() ? "refused" : res->error;
  return MakeError(GatewayErrc(res->code), "gateway " + name + ": " + Clip(text));
}

Expected<void> TunnelService::AcceptGateway(const tunnel::StreamPlan& plan,
                                            const tunnel::Leg& leg) {
  auto d = ctx_.store->devices().GetById(plan.device_id);
  if (!d) return MakeError(Errc::kPermissionDenied, "unknown device");
  if (d->status == "revoked") return MakeError(Errc::kPermissionDenied, "device is revoked");
  auto q = ctx_.store->tunnels().GetQuarantine(d->id);
  if (!q) return MakeError(Errc::kUnavailable, "cannot read the quarantine state");
  if (q->has_value() && (*q)->on)
    return MakeError(Errc::kPermissionDenied, "device is quarantined");
  if (auto cert = pki::CertFromDer(leg.cert_der)) {
    auto c = ctx_.store->certificates().GetBySerial(pki::SerialHex(cert->get()));
    if (c && (c->status == "revoked" || c->device_id != d->id)) {
      return MakeError(Errc::kPermissionDenied, "device certificate is revoked");
    }
  }
  return {};
}

void TunnelService::OnEnd(const tunnel::StreamEnd& end) {
  const TimePoint now = ctx_.clock->Now();
  const auto& p = end.plan;
  auto row = ctx_.store->tunnels().Get(p.stream_id);
  auto closed = ctx_.store->tunnels().Close(p.stream_id, now, static_cast<int64_t>(end.bytes_up),
                                            static_cast<int64_t>(end.bytes_down), Clip(end.reason));
  if (!closed) log::error("closing tunnel session {}: {}", p.stream_id, closed.error().message());
  audit::Event e;
  e.time = now;
  e.actor_type = audit::ActorType::kUser;
  e.actor = p.user;
  if (auto u = ctx_.store->users().GetByName(p.user)) e.organisation = u->organisation;
  e.source = row ? row->client : "relay";
  e.category = "stream";
  e.type = "tunnel.close";
  e.target = row ? row->site + "/" + p.target : p.target;
  e.result = audit::Result::kSuccess;
  e.reason = Clip(end.reason);
  json details{{"stream", p.stream_id}, {"grant", p.grant_id},      {"device_id", p.device_id},
               {"paired", end.paired},  {"bytes_up", end.bytes_up}, {"bytes_down", end.bytes_down}};
  if (row) {
    details["seconds"] =
        std::chrono::duration_cast<std::chrono::seconds>(now - row->opened).count();
  }
  e.details = details.dump(-1, ' ', false, json::error_handler_t::replace);
  (void)Audit(ctx_, std::move(e));
}

// --- kill paths ---

Expected<size_t> TunnelService::Kill(const Actor& who, const std::string& stream_id,
                                     const std::string& reason) {
  if (!tunnel::IsStreamId(stream_id)) {
    return MakeError(Errc::kNotFound, "no tunnel '" + Clip(stream_id, 64) + "'");
  }
  auto row = ctx_.store->tunnels().Get(stream_id);
  if (!row) return MakeError(row.error());
  if (!SeesEveryStream(who.role) && row->user != who.name) {
    // Same answer as for an unknown id: others' streams are not revealed.
    return MakeError(Errc::kNotFound, "no tunnel session '" + stream_id + "'");
  }
  const std::string why = "by " + who.name + (reason.empty() ? "" : ": " + Clip(reason));
  // Ending access is never refused, not even when the audit trail is down (logged loudly).
  size_t n = relay_ ? relay_->Kill(stream_id, why) : 0;
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = audit::ActorType::kUser;
  e.actor = who.name;
  e.source = who.source;
  e.category = "stream";
  e.type = "tunnel.kill";
  e.target = row->site + "/" + row->target;
  e.result = audit::Result::kSuccess;
  e.reason = Clip(reason);
  e.details = json{{"stream", stream_id},
                   {"user", row->user},
                   {"device_id", row->device_id},
                   {"killed", n},
                   {"was", row->closed ? "ended" : "live"}}
                  .dump(-1, ' ', false, json::error_handler_t::replace);
  (void)Audit(ctx_, std::move(e));
  if (!row->closed || n > 0) {
    SendToDevice(row->device_id, "stream.kill",
                 json{{"stream", stream_id}, {"reason", "killed " + why}});
  }
  return n;
}

void TunnelService::OnGrantRevoked(const storage::AccessRequest& r) {
  std::set<std::string> devices;
  if (relay_) {
    for (const auto& s : relay_->List()) {
      if (s.plan.grant_id == r.id) devices.insert(s.plan.device_id);
    }
  }
  size_t n = relay_ ? relay_->KillGrant(r.id, "grant revoked") : 0;
  // The agent may carry streams of this grant the relay no longer knows (a restart): tell the
  // gateway of the grant's target too.
  if (auto active = policies_.Active()) {
    if (const auto* t = active->policy.FindTarget(r.target); t && !t->gateway.empty()) {
      if (auto d = ctx_.store->devices().GetByName(t->gateway)) devices.insert(d->id);
    }
  }
  for (const auto& d : devices) {
    SendToDevice(d, "stream.kill", json{{"grant", r.id}, {"reason", "grant revoked"}});
  }
  if (n > 0) log::info("grant {} revoked: killed {} stream(s)", r.id, n);
}

Expected<json> TunnelService::Quarantine(const Actor& who, const std::string& device_name, bool on,
                                         const std::string& reason) {
  if (auto ok = AuditAvailable(ctx_); !ok) return MakeError(ok.error());
  if (reason.size() > kMaxReason) {
    return MakeError(Errc::kInvalidArgument, "reason is longer than 500 characters");
  }
  auto d = ctx_.store->devices().GetByName(device_name);
  if (!d) return MakeError(d.error().WithContext("device " + Clip(device_name, 64)));
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = audit::ActorType::kUser;
  e.actor = who.name;
  e.source = who.source;
  e.category = "device";
  e.type = on ? "device.quarantine" : "device.release";
  e.target = d->name;
  e.result = audit::Result::kSuccess;
  e.reason = reason;
  e.details = json{{"device_id", d->id}}.dump(-1, ' ', false, json::error_handler_t::replace);
  if (auto ok = Audit(ctx_, std::move(e)); !ok) return MakeError(ok.error());
  storage::DeviceQuarantine q{d->id, on, reason, who.name, ctx_.clock->Now(), false};
  if (auto ok = ctx_.store->tunnels().SetQuarantine(q); !ok) return MakeError(ok.error());
  size_t killed = 0;
  if (on && relay_) {
    killed =
        relay_->KillDevice(d->id, "device quarantined" + (reason.empty() ? "" : ": " + reason));
  }
  SyncQuarantine(d->id);  // now if online, else when it comes online
  json j = DeviceJsonFor(ctx_, *d, false);
  j["streams_killed"] = killed;
  return j;
}

void TunnelService::OnDeviceOnline(const std::string& device_id) { SyncQuarantine(device_id); }

void TunnelService::SyncQuarantine(const std::string& device_id) {
  Enqueue("quarantine sync", [this, device_id] {
    auto q = ctx_.store->tunnels().GetQuarantine(device_id);
    if (!q) {
      log::error("reading quarantine of {}: {}", device_id, q.error().message());
      return;
    }
    // A device that was never quarantined has nothing to learn; one that confirmed a release
    // neither. A quarantine is repeated at every reconnect (the agent may have been reset).
    if (!q->has_value() || (!(*q)->on && (*q)->synced)) return;
    const bool on = (*q)->on;
    if (!send_ || !Online(device_id)) return;  // sent when it comes online
    auto res = send_(device_id, "quarantine", json{{"on", on}, {"reason", (*q)->reason}}.dump(),
                     kGatewayTimeout);
    if (!res || !res->ok) {
      log::warn("device {} did not confirm quarantine {}: {}", device_id, on ? "on" : "off",
                res ? res->error : res.error().message());
      return;
    }
    if (auto ok = ctx_.store->tunnels().MarkQuarantineSynced(device_id, on); !ok) {
      log::error("marking quarantine of {} synced: {}", device_id, ok.error().message());
    }
  });
}

size_t TunnelService::Sweep() {
  if (!relay_) return 0;
  size_t killed = 0;
  std::map<std::string, std::string> grant_end;   // grant -> why it no longer holds ("" = ok)
  std::map<std::string, std::string> device_end;  // device -> why it may not carry streams
  for (const auto& s : relay_->List()) {
    const auto& p = s.plan;
    if (!grant_end.count(p.grant_id)) {
      std::string why;
      auto r = ctx_.store->access().Get(p.grant_id);
      if (r) {
        std::string state = access_.State(*r);
        if (state == "ended")
          why = "grant ended: user disabled";
        else if (state != "active")
          why = "grant " + state;
      } else if (r.error().Is(Errc::kNotFound)) {
        why = "grant gone";
      }
      grant_end[p.grant_id] = why;
      if (!why.empty()) {
        killed += relay_->KillGrant(p.grant_id, why);
        SendToDevice(p.device_id, "stream.kill", json{{"grant", p.grant_id}, {"reason", why}});
      }
    }
    if (!device_end.count(p.device_id)) {
      std::string why;
      auto d = ctx_.store->devices().GetById(p.device_id);
      if (d && d->status == "revoked") why = "device revoked";
      auto q = ctx_.store->tunnels().GetQuarantine(p.device_id);
      if (q && q->has_value() && (*q)->on) why = "device quarantined";
      device_end[p.device_id] = why;
      if (!why.empty()) killed += relay_->KillDevice(p.device_id, why);
    }
  }
  return killed;
}

Expected<json> TunnelService::List(const Actor& who, bool live_only) {
  const bool all = AccessService::SeesAll(who.role);
  auto rows = ctx_.store->tunnels().List(all ? "" : who.name, live_only, kListLimit);
  if (!rows) return MakeError(rows.error());
  std::map<std::string, tunnel::LiveStream> live;
  if (relay_) {
    for (auto& s : relay_->List()) live[s.plan.stream_id] = s;
  }
  std::map<std::string, std::string> names;
  json out = json::array();
  for (const auto& r : *rows) {
    if (!names.count(r.device_id)) {
      auto d = ctx_.store->devices().GetById(r.device_id);
      names[r.device_id] = d ? d->name : "";
    }
    json j{{"id", r.id},
           {"grant", r.grant_id},
           {"user", r.user},
           {"device", names[r.device_id]},
           {"device_id", r.device_id},
           {"site", r.site},
           {"target", r.target},
           {"client", r.client},
           {"opened", FormatRfc3339(r.opened)},
           {"closed", r.closed ? json(FormatRfc3339(*r.closed)) : json(nullptr)},
           {"bytes_up", r.bytes_up},
           {"bytes_down", r.bytes_down},
           {"state", r.closed ? "ended" : "live"},
           {"end_reason", r.end_reason}};
    if (auto it = live.find(r.id); it != live.end() && !r.closed) {
      j["bytes_up"] = it->second.bytes_up;
      j["bytes_down"] = it->second.bytes_down;
      j["paired"] = it->second.paired;
    }
    out.push_back(std::move(j));
  }
  return json{{"tunnels", out}};
}

// --- background work ---

bool TunnelService::Online(const std::string& device_id) {
  auto s = ctx_.store->device_state().Get(device_id);
  return s && s->online;
}

void TunnelService::Enqueue(std::string what, std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (queue_.size() >= kMaxQueued) {
      log::error("agent command queue full: dropped {}", what);
      return;
    }
    queue_.emplace_back(std::move(what), std::move(task));
  }
  cv_.notify_one();
}

void TunnelService::SendToDevice(const std::string& device_id, const std::string& cmd, json args,
                                 std::function<void(const PingResult&)> on_ok) {
  Enqueue(cmd, [this, device_id, cmd, args = std::move(args), on_ok = std::move(on_ok)] {
    if (!send_ || !Online(device_id)) return;  // an offline agent has no streams to end
    auto res = send_(device_id, cmd, args.dump(), kGatewayTimeout);
    if (!res) {
      log::warn("{} to device {}: {}", cmd, device_id, res.error().message());
    } else if (!res->ok) {
      log::warn("{} refused by device {}: {}", cmd, device_id, res->error);
    } else if (on_ok) {
      on_ok(*res);
    }
  });
}

void TunnelService::SenderLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    auto [what, task] = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    lock.unlock();
    try {
      task();
    } catch (const std::exception& e) {
      log::error("agent command {}: {}", what, e.what());
    }
    lock.lock();
    --busy_;
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void TunnelService::Flush() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return stopping_ || (queue_.empty() && busy_ == 0); });
}

void TunnelService::ReaperLoop() {
  auto next_resync = std::chrono::steady_clock::now() + kResyncEvery;
  std::unique_lock lock(mu_);
  while (!reaper_cv_.wait_for(lock, kSweepEvery, [this] { return stopping_; })) {
    lock.unlock();
    try {
      if (size_t n = Sweep(); n > 0) log::info("reaper: killed {} stream(s)", n);
      if (std::chrono::steady_clock::now() >= next_resync) {
        next_resync = std::chrono::steady_clock::now() + kResyncEvery;
        if (auto all = ctx_.store->tunnels().ListQuarantines()) {
          for (const auto& q : *all) {
            if (!q.synced) SyncQuarantine(q.device_id);
          }
        }
      }
    } catch (const std::exception& e) {
      log::error("tunnel reaper: {}", e.what());
    }
    lock.lock();
  }
}

// --- REST ---

void AddQuarantineState(Context& ctx, const std::string& device_id, json& j) {
  auto q = ctx.store->tunnels().GetQuarantine(device_id);
  bool on = q && q->has_value() && (*q)->on;
  j["quarantined"] = on;
  if (on) {
    j["quarantine"] = {{"reason", (*q)->reason},
                       {"since", FormatRfc3339((*q)->since)},
                       {"by", (*q)->by},
                       {"confirmed", (*q)->synced}};
  }
}

void RegisterTunnelApi(Context& ctx, TunnelService& tunnels, http::Router& router) {
  auto actor = [](const http::Request& req, const Principal& who) {
    return Actor{who.name, who.role, req.peer};
  };
  router.Add("GET", "/api/v1/tunnels",
             RequireRole(ctx, {"admin", "operator", "approver", "technician", "auditor", "vendor"},
                         [&tunnels, actor](const http::Request& req, const Principal& who) {
                           std::string state = "live";
                           if (auto it = req.query.find("state"); it != req.query.end()) {
                             state = it->second;
                           }
                           if (state != "live" && state != "all") {
                             return http::Response::Error(400, "invalid_argument",
                                                          "state must be live or all");
                           }
                           auto out = tunnels.List(actor(req, who), state == "live");
                           if (!out) return ErrorResponse(out.error());
                           return http::Response::Json(200, out->dump());
                         }));
  router.Add("POST", "/api/v1/tunnels/{id}/kill",
             RequireRole(ctx, {"admin", "operator", "approver", "technician"},
                         [&tunnels, actor](const http::Request& req, const Principal& who) {
                           auto body = ParseBody(req.body, {"reason"});
                           if (!body) return ErrorResponse(body.error());
                           auto reason = StringField(*body, "reason", false);
                           if (!reason) return ErrorResponse(reason.error());
                           auto n = tunnels.Kill(actor(req, who), req.params.at("id"), *reason);
                           if (!n) return ErrorResponse(n.error());
                           return http::Response::Json(200, json{{"killed", *n}}.dump());
                         }));
  router.Add("POST", "/api/v1/devices/{name}/quarantine",
             RequireRole(ctx, {"admin", "operator"},
                         [&tunnels, actor](const http::Request& req, const Principal& who) {
                           auto body = ParseBody(req.body, {"on", "reason"});
                           if (!body) return ErrorResponse(body.error());
                           if (!body->contains("on") || !(*body)["on"].is_boolean()) {
                             return http::Response::Error(400, "invalid_argument",
                                                          "field 'on' (true or false) is required");
                           }
                           auto reason = StringField(*body, "reason", false);
                           if (!reason) return ErrorResponse(reason.error());
                           auto out = tunnels.Quarantine(actor(req, who), req.params.at("name"),
                                                         (*body)["on"].get<bool>(), *reason);
                           if (!out) return ErrorResponse(out.error());
                           return http::Response::Json(200, out->dump());
                         }));
}

}  // namespace torwart::server
