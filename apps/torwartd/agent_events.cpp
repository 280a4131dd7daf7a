#include "agent_events.hpp"

#include <nlohmann/json.hpp>

#include "torwart/core/log.hpp"

namespace torwart::server {

using nlohmann::json;

audit::Event MakeAgentAuditEvent(const storage::Device& d, const DeviceMessage& m, TimePoint now,
                                 int64_t suppressed_before) {
  const AgentEvent& ev = m.event;
  audit::Event e;
  e.time = now;
  e.actor_type = audit::ActorType::kDevice;
  e.actor = d.id;
  e.source = "agent";
  e.category = ev.type.rfind("tunnel.", 0) == 0 ? "stream" : "device";
  e.type = "agent." + ev.type;
  e.target = !ev.stream.empty() ? ev.stream : !ev.target.empty() ? ev.target : d.name;
  const bool refused = ev.type.size() > 8 && ev.type.ends_with("_refused");
  e.result = refused ? audit::Result::kFailure : audit::Result::kSuccess;
  json detail = json::parse(ev.detail, nullptr, false);
  if (detail.is_discarded() || !detail.is_object()) detail = json::object();
  if (auto r = detail.find("reason"); r != detail.end() && r->is_string()) {
    e.reason = r->get<std::string>().substr(0, 256);
  }
  json details{{"device", d.name}, {"site", d.site}, {"detail", detail}};
  if (m.ts) details["device_ts"] = *m.ts;
  for (auto [k, v] : {std::pair<const char*, const std::string*>{"stream", &ev.stream},
                      {"grant", &ev.grant},
                      {"user", &ev.user},
                      {"target", &ev.target}}) {
    if (!v->empty()) details[k] = *v;
  }
  if (suppressed_before > 0) details["suppressed_before"] = suppressed_before;
  e.details = details.dump(-1, ' ', false, json::error_handler_t::replace);
  return e;
}

Expected<bool> AgentEventAuditor::Record(const storage::Device& d, const DeviceMessage& m) {
  const TimePoint now = ctx_.clock->Now();
  int64_t suppressed = 0;
  {
    std::lock_guard lock(mu_);
    Window& w = windows_[d.id];
    if (now - w.start > std::chrono::minutes(1)) {
      w.start = now;
      w.count = 0;
    }
    if (++w.count > kPerDevicePerMinute) {
      if (w.suppressed++ == 0) {
        log::warn("device {} sends more than {} events a minute; counting the rest", d.name,
                  kPerDevicePerMinute);
      }
      return false;
    }
    suppressed = w.suppressed;
    w.suppressed = 0;
  }
  if (auto r = Audit(ctx_, MakeAgentAuditEvent(d, m, now, suppressed)); !r) {
    std::lock_guard lock(mu_);
    windows_[d.id].suppressed += suppressed + 1;  // not recorded: count it into the next one
    return MakeError(r.error());
  }
  return true;
}

}  // namespace torwart::server
