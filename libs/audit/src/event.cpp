#include "torwart/audit/event.hpp"

#include <nlohmann/json.hpp>
#include <utility>

namespace torwart::audit {
namespace {

using Json = nlohmann::ordered_json;

// Same semantics as the SQL of storage's AuditStore::Find; keep them in step.
bool Matches(const Query& q, const Event& e) {
  if (e.seq <= q.after_seq) return false;
  if (q.since && e.time < *q.since) return false;
  if (q.until && e.time >= *q.until) return false;
  if (!q.actor.empty() && e.actor != q.actor) return false;
  if (!q.target.empty() && e.target != q.target) return false;
  if (!q.category.empty() && e.category != q.category) return false;
  if (!q.type_prefix.empty() && !e.type.starts_with(q.type_prefix)) return false;
  return true;
}

}  // namespace

std::string_view ToString(ActorType t) {
  switch (t) {
    case ActorType::kUser:
      return "user";
    case ActorType::kDevice:
      return "device";
    case ActorType::kSystem:
      return "system";
    case ActorType::kAnonymous:
      return "anonymous";
  }
  return "unknown";
}

std::string_view ToString(Result r) {
  switch (r) {
    case Result::kSuccess:
      return "success";
    case Result::kFailure:
      return "failure";
    case Result::kDenied:
      return "denied";
  }
  return "unknown";
}

std::optional<ActorType> ActorTypeFromString(std::string_view s) {
  for (ActorType t :
       {ActorType::kUser, ActorType::kDevice, ActorType::kSystem, ActorType::kAnonymous}) {
    if (ToString(t) == s) return t;
  }
  return std::nullopt;
}

std::optional<Result> ResultFromString(std::string_view s) {
  for (Result r : {Result::kSuccess, Result::kFailure, Result::kDenied}) {
    if (ToString(r) == s) return r;
  }
  return std::nullopt;
}

std::string ToJson(const Event& e) {
  Json j;
  j["seq"] = e.seq;
  j["time"] = FormatRfc3339(e.time);
  j["actor_type"] = ToString(e.actor_type);
  j["actor"] = e.actor;
  j["organisation"] = e.organisation;
  j["source"] = e.source;
  j["category"] = e.category;
  j["type"] = e.type;
  j["target"] = e.target;
  j["result"] = ToString(e.result);
  j["reason"] = e.reason;
  if (e.details.empty()) {
    j["details"] = Json::object();
  } else {
    // Non-throwing parse: details come from many callers and must never break auditing.
    Json details = Json::parse(e.details, nullptr, /*allow_exceptions=*/false);
    if (!details.is_discarded() && details.is_object()) {
      j["details"] = std::move(details);
    } else {
      j["details"] = e.details;
    }
  }
  j["schema"] = e.schema;
  if (!e.hash.empty()) j["hash"] = e.hash;
  // Replace invalid UTF-8 (peer-supplied names, reasons) instead of throwing.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Expected<void> MemorySink::Append(Event e) {
  std::lock_guard lock(mu_);
  e.seq = static_cast<int64_t>(events_.size()) + 1;
  events_.push_back(std::move(e));
  return {};
}

Expected<std::vector<Event>> MemorySink::Find(const Query& q) {
  if (q.limit <= 0) return MakeError(Errc::kInvalidArgument, "audit query: limit must be > 0");
  std::lock_guard lock(mu_);
  std::vector<Event> out;
  for (const Event& e : events_) {
    if (static_cast<int>(out.size()) >= q.limit) break;
    if (Matches(q, e)) out.push_back(e);
  }
  return out;
}

std::vector<Event> MemorySink::events() const {
  std::lock_guard lock(mu_);
  return events_;
}

}  // namespace torwart::audit
