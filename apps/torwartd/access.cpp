#include "access.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "webhooks.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using storage::AccessRequest;

constexpr int kListLimit = 1000;

bool ValidName(const std::string& s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-_.@+:").find(c) !=
                                                              std::string_view::npos;
  });
}

bool IsMember(const ActivePolicy* p, const std::string& group, const std::string& user) {
  if (p == nullptr || group.empty()) return false;
  const auto* members = p->policy.GroupMembers(group);
  return members && std::find(members->begin(), members->end(), user) != members->end();
}

bool IsAdminish(const std::string& role) { return role == "admin" || role == "operator"; }

Error Denied(const std::string& why) { return Error(Errc::kPermissionDenied, why); }

}  // namespace

bool AccessService::SeesAll(const std::string& role) {
  return role == "admin" || role == "operator" || role == "auditor" || role == "approver";
}

Expected<void> AccessService::AuditStep(const Actor& a, const std::string& type,
                                        const AccessRequest& r, audit::Result result,
                                        const std::string& reason, json details) {
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = audit::ActorType::kUser;
  e.actor = a.name;
  e.source = a.source;
  e.category = "access";
  e.type = type;
  e.target = r.site + "/" + r.target;
  e.result = result;
  e.reason = reason;
  details["request"] = r.id;
  details["requester"] = r.requester;
  if (!r.rule_id.empty()) details["rule"] = r.rule_id;
  details["status"] = r.status;
  e.details = details.dump();
  if (auto ok = Audit(ctx_, std::move(e)); !ok) {
    return MakeError(Errc::kUnavailable, "audit store unavailable; " + type + " refused");
  }
  return {};
}

void AccessService::Notify(const std::string& event, const AccessRequest& r,
                           std::vector<std::string> recipients) {
  if (webhooks_ == nullptr) return;
  json data{{"request", r.id},
            {"requester", r.requester},
            {"site", r.site},
            {"target", r.target},
            {"scopes", r.scopes},
            {"reason", r.reason},
            {"duration", FormatDuration(r.duration)},
            {"status", State(r)},
            {"rule", r.rule_id},
            {"break_glass", r.break_glass},
            {"recipients", recipients}};
  if (r.ends) data["ends"] = FormatRfc3339(*r.ends);
  if (!r.decision_reason.empty()) data["decision_reason"] = r.decision_reason;
  if (!r.decided_by.empty()) data["decided_by"] = r.decided_by;
  if (auto ok = webhooks_->Publish(event, data); !ok) {
    log::error("could not queue webhook {} for {}: {}", event, r.id, ok.error().message());
  }
}

Expected<AccessRequest> AccessService::Load(const std::string& id) {
  if (!ValidName(id)) return MakeError(Errc::kInvalidArgument, "not a request id: " + id);
  return ctx_.store->access().Get(id);
}

std::string AccessService::State(const AccessRequest& r) {
  if (r.status != "active") return r.status;
  auto u = ctx_.store->users().GetByName(r.requester);
  if (!u || u->disabled) return "ended";
  if (!r.ends || ctx_.clock->Now() >= *r.ends) return "expired";
  return "active";
}

Expected<AccessRequest> AccessService::Request(const Actor& a, const NewRequest& n) {
  AccessRequest r;
  r.requester = a.name;
  r.site = n.site;
  r.target = n.target;
  r.scope = n.scope;
  r.reason = n.reason;
  r.break_glass = n.break_glass;
  r.created = ctx_.clock->Now();
  if (!ValidName(n.site) || !ValidName(n.target)) {
    return MakeError(Errc::kInvalidArgument, "give the target as SITE/TARGET");
  }
  if (n.duration && n.duration->count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "duration must be positive");
  }
  if (n.reason.size() > 2000) return MakeError(Errc::kInvalidArgument, "reason too long");

  PolicyService::Query q;
  q.user = a.name;
  q.target = n.target;
  q.scope = n.scope;
  q.at = r.created;
  q.break_glass = n.break_glass;
  q.duration = n.duration;
  q.reason = n.reason;  // always stated, so `reason_required` is enforced
  auto ev = policies_.Evaluate(q);
  const policy::Decision& d = ev.decision;
  const policy::Target* t = ev.active ? ev.active->policy.FindTarget(n.target) : nullptr;
  std::string deny_reason;
  if (t != nullptr && t->site != n.site) {
    deny_reason = "target '" + n.target + "' is at site '" + t->site + "', not '" + n.site + "'";
  } else if (!d.allow) {
    deny_reason = d.reason;
  }
  if (!deny_reason.empty()) {
    r.status = "denied";
    r.rule_id = d.rule_id;
    (void)AuditStep(a, n.break_glass ? "access.break_glass" : "access.request", r,
                    audit::Result::kDenied, deny_reason,
                    json{{"cause", ev.active ? policy::DenyCauseName(d.cause) : "no_policy"},
                         {"reason_given", n.reason},
                         {"policy_version", ev.active ? ev.active->version : 0}});
    return MakeError(Denied("access denied: " + deny_reason));
  }

  r.id = "ar-" + HexEncode(RandomBytes(6));
  r.scopes = d.scopes;
  r.rule_id = d.rule_id;
  r.policy_version = ev.active->version;
  r.duration = n.duration.value_or(d.requirements.max_duration);
  r.approvals_required = d.requirements.approvals;
  r.approver_group = d.requirements.approver_group;
  r.on_site_consent = d.requirements.on_site_consent;
  const TimePoint now = r.created;
  std::string type = "access.request";
  if (d.break_glass) {
    // Emergency: granted at once, alert now, review afterwards.
    r.status = "active";
    r.review_group = d.review_group;
    r.starts = now;
    r.ends = now + r.duration;
    type = "access.break_glass";
  } else if (r.approvals_required == 0) {
    r.status = "active";
    r.starts = now;
    r.ends = now + r.duration;
  }
  json details{{"duration", FormatDuration(r.duration)},
               {"scopes", r.scopes},
               {"approvals_required", r.approvals_required},
               {"approver_group", r.approver_group},
               {"on_site_consent", r.on_site_consent},
               {"policy_version", r.policy_version},
               {"decision", r.status == "active" ? "granted" : "pending approval"}};
  if (d.break_glass) {
    details["alert"] = true;
    details["review_group"] = r.review_group;
  }
  if (auto ok = AuditStep(a, type, r, audit::Result::kSuccess, n.reason, details); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = ctx_.store->access().Create(r); !ok) return MakeError(ok.error());

  if (d.break_glass) {
    const auto* members = ev.active->policy.GroupMembers(r.review_group);
    Notify("access.break_glass", r, members ? *members : std::vector<std::string>{});
  } else if (r.status == "active") {
    Notify("access.granted", r, {r.requester});
  } else {
    std::vector<std::string> approvers;
    if (const auto* m = ev.active->policy.GroupMembers(r.approver_group)) {
      for (const auto& u : *m) {
        if (u != r.requester) approvers.push_back(u);
      }
    }
    Notify("access.requested", r, approvers);
  }
  return r;
}

Expected<AccessRequest> AccessService::Approve(const Actor& a, const std::string& id,
                                               std::optional<std::chrono::seconds> shorten,
                                               const std::string& comment) {
  auto r = Load(id);
  if (!r) return r;
  auto refuse = [&](const std::string& why, Errc code) -> Unexpected {
    (void)AuditStep(a, "access.approve", *r, audit::Result::kDenied, why, json{{"comment", comment}});
    return MakeError(code, why);
  };
  if (r->status != "pending") {
    return refuse("request " + id + " is " + State(*r) + ", not pending",
                  Errc::kFailedPrecondition);
  }
  if (a.name == r->requester) {
    return refuse("four eyes: nobody approves their own request", Errc::kPermissionDenied);
  }
  if (shorten && (shorten->count() <= 0 || *shorten > r->duration)) {
    return MakeError(Errc::kInvalidArgument,
                     "--shorten must be positive and at most the requested " +
                         FormatDuration(r->duration));
  }
  // Re-check against the policy as it is now (it may have changed, or a window closed).
  PolicyService::Query q;
  q.user = r->requester;
  q.target = r->target;
  q.scope = r->scope;
  q.at = ctx_.clock->Now();
  q.duration = r->duration;
  q.reason = r->reason;
  auto ev = policies_.Evaluate(q);
  if (!ev.decision.allow) {
    return refuse("the policy no longer allows this request: " + ev.decision.reason,
                  Errc::kFailedPrecondition);
  }
  const policy::Requirements& req = ev.decision.requirements;
  if (req.approvals > 0 && !policy::MayApprove(ev.active->policy, req, a.name, r->requester)) {
    return refuse(a.name + " is not in approver group '" + req.approver_group +
                      "' of rule '" + ev.decision.rule_id + "'",
                  Errc::kPermissionDenied);
  }
  for (const auto& x : r->approvals) {
    if (x.approver == a.name) {
      return refuse(a.name + " has already approved " + id + " (four eyes need another person)",
                    Errc::kAlreadyExists);
    }
  }
  const TimePoint now = ctx_.clock->Now();
  r->approvals.push_back({a.name, now, shorten, comment});
  r->rule_id = ev.decision.rule_id;
  r->approvals_required = req.approvals;
  r->approver_group = req.approver_group;
  r->scopes = ev.decision.scopes;
  r->policy_version = ev.active->version;
  const bool granted = static_cast<int>(r->approvals.size()) >= req.approvals;
  if (granted) {
    // Validity starts at approval; any approver's --shorten limits it.
    std::chrono::seconds length = r->duration;
    for (const auto& x : r->approvals) {
      if (x.shorten) length = std::min(length, *x.shorten);
    }
    r->status = "active";
    r->starts = now;
    r->ends = now + length;
    r->decided_by = a.name;
    r->decided_at = now;
  }
  json details{{"approvals", r->approvals.size()},
               {"approvals_required", req.approvals},
               {"comment", comment},
               {"decision", granted ? "granted" : "approved, waiting for more approvals"}};
  if (shorten) details["shorten"] = FormatDuration(*shorten);
  if (r->ends) details["ends"] = FormatRfc3339(*r->ends);
  if (auto ok = AuditStep(a, "access.approve", *r, audit::Result::kSuccess, comment, details); !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = ctx_.store->access().Update(*r); !ok) return MakeError(ok.error());
  r->revision++;
  Notify(granted ? "access.granted" : "access.approved", *r, {r->requester});
  return r;
}

Expected<AccessRequest> AccessService::Deny(const Actor& a, const std::string& id,
                                            const std::string& reason) {
  auto r = Load(id);
  if (!r) return r;
  if (reason.find_first_not_of(" \t\r\n") == std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "a denial needs a reason");
  }
  if (r->status != "pending") {
    return MakeError(Errc::kFailedPrecondition, "request " + id + " is " + State(*r) +
                                                    ", not pending");
  }
  auto active = policies_.Active();
  bool approver = a.name != r->requester && IsMember(active.get(), r->approver_group, a.name);
  if (!approver && !IsAdminish(a.role)) {
    (void)AuditStep(a, "access.deny", *r, audit::Result::kDenied, "not an approver", json::object());
    return MakeError(Denied(a.name + " may not decide on " + id));
  }
  const TimePoint now = ctx_.clock->Now();
  r->status = "denied";
  r->decided_by = a.name;
  r->decided_at = now;
  r->decision_reason = reason;
  if (auto ok = AuditStep(a, "access.deny", *r, audit::Result::kSuccess, reason, json::object());
      !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = ctx_.store->access().Update(*r); !ok) return MakeError(ok.error());
  r->revision++;
  Notify("access.denied", *r, {r->requester});
  return r;
}

Expected<AccessRequest> AccessService::Revoke(const Actor& a, const std::string& id,
                                              const std::string& reason) {
  auto r = Load(id);
  if (!r) return r;
  std::string state = State(*r);
  if (state != "pending" && state != "active") {
    return MakeError(Errc::kFailedPrecondition, "request " + id + " is " + state +
                                                    "; nothing to revoke");
  }
  auto active = policies_.Active();
  bool entitled = a.name == r->requester || IsAdminish(a.role) ||
                  IsMember(active.get(), r->approver_group, a.name) ||
                  IsMember(active.get(), r->review_group, a.name);
  if (!entitled) {
    (void)AuditStep(a, "access.revoke", *r, audit::Result::kDenied, "not entitled", json::object());
    return MakeError(Denied(a.name + " may not revoke " + id));
  }
  const TimePoint now = ctx_.clock->Now();
  const bool was_active = state == "active";
  r->status = "revoked";
  if (was_active) r->ends = now;
  r->decided_by = a.name;
  r->decided_at = now;
  r->decision_reason = reason;
  if (auto ok = AuditStep(a, "access.revoke", *r, audit::Result::kSuccess, reason,
                          json{{"was", state}});
      !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = ctx_.store->access().Update(*r); !ok) return MakeError(ok.error());
  r->revision++;
  if (was_active && on_revoke_) on_revoke_(*r);
  Notify("access.revoked", *r, {r->requester});
  return r;
}

Expected<AccessRequest> AccessService::Review(const Actor& a, const std::string& id,
                                              const std::string& comment) {
  auto r = Load(id);
  if (!r) return r;
  if (!r->break_glass) {
    return MakeError(Errc::kFailedPrecondition, id + " is not a break-glass grant");
  }
  if (r->reviewed_at) {
    return MakeError(Errc::kFailedPrecondition, id + " was reviewed by " + r->reviewed_by);
  }
  if (comment.find_first_not_of(" \t\r\n") == std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "a review needs a comment");
  }
  auto active = policies_.Active();
  if (a.name == r->requester || !IsMember(active.get(), r->review_group, a.name)) {
    (void)AuditStep(a, "access.review", *r, audit::Result::kDenied,
                    "not in review group '" + r->review_group + "' or the requester",
                    json::object());
    return MakeError(Denied("break-glass grants are reviewed by group '" + r->review_group +
                            "', never by the requester"));
  }
  r->reviewed_by = a.name;
  r->reviewed_at = ctx_.clock->Now();
  r->review_comment = comment;
  if (auto ok = AuditStep(a, "access.review", *r, audit::Result::kSuccess, comment, json::object());
      !ok) {
    return MakeError(ok.error());
  }
  if (auto ok = ctx_.store->access().Update(*r); !ok) return MakeError(ok.error());
  r->revision++;
  return r;
}

Expected<AccessRequest> AccessService::Get(const Actor& a, const std::string& id) {
  auto r = Load(id);
  if (!r) return r;
  if (r->requester != a.name && !SeesAll(a.role)) {
    // Same answer as for an unknown id: ids of others' requests are not revealed.
    return MakeError(Errc::kNotFound, "no access request '" + id + "'");
  }
  return r;
}

Expected<std::vector<AccessRequest>> AccessService::List(const Actor& a,
                                                         const std::string& filter) {
  if (filter != "" && filter != "mine" && filter != "pending" && filter != "active" &&
      filter != "unreviewed") {
    return MakeError(Errc::kInvalidArgument,
                     "filter must be one of mine, pending, active, unreviewed");
  }
  std::string requester = (filter == "mine" || !SeesAll(a.role)) ? a.name : "";
  std::string status = filter == "pending" || filter == "active" ? filter : "";
  auto all = ctx_.store->access().List(requester, status, kListLimit);
  if (!all) return all;
  std::vector<AccessRequest> out;
  for (auto& r : *all) {
    if (filter == "active" && State(r) != "active") continue;
    if (filter == "unreviewed" && (!r.break_glass || r.reviewed_at)) continue;
    out.push_back(std::move(r));
  }
  return out;
}

Expected<pki::GrantClaims> AccessService::CertificateClaims(const Actor& a,
                                                            const std::string& id) {
  auto r = Get(a, id);
  if (!r) return MakeError(r.error());
  std::string state = State(*r);
  auto refuse = [&](Errc code, const std::string& why) -> Unexpected {
    (void)AuditStep(a, "access.certificate", *r, audit::Result::kDenied, why, json::object());
    return MakeError(code, why);
  };
  if (r->requester != a.name) {
    return refuse(Errc::kPermissionDenied, "only the requester obtains the grant certificate");
  }
  if (state == "expired") return refuse(Errc::kExpired, "grant " + id + " has expired");
  if (state == "revoked") return refuse(Errc::kRevoked, "grant " + id + " was revoked");
  if (state != "active") {
    return refuse(Errc::kFailedPrecondition, "grant " + id + " is " + state + ", not active");
  }
  pki::GrantClaims c;
  c.grant_id = r->id;
  c.user = r->requester;
  c.site = r->site;
  c.target = r->target;
  c.scopes = r->scopes;
  c.not_after = std::chrono::time_point_cast<std::chrono::seconds>(*r->ends);
  if (c.not_after <= ctx_.clock->Now()) {
    return refuse(Errc::kExpired, "grant " + id + " ends within the second");
  }
  return c;
}

json AccessJson(AccessService& svc, const AccessRequest& r) {
  json approvals = json::array();
  for (const auto& x : r.approvals) {
    json j{{"approver", x.approver}, {"at", FormatRfc3339(x.at)}, {"comment", x.comment}};
    if (x.shorten) j["shorten"] = FormatDuration(*x.shorten);
    approvals.push_back(std::move(j));
  }
  json j{{"id", r.id},
         {"requester", r.requester},
         {"site", r.site},
         {"target", r.target},
         {"scope", r.scope},
         {"scopes", r.scopes},
         {"reason", r.reason},
         {"duration", FormatDuration(r.duration)},
         {"duration_seconds", r.duration.count()},
         {"break_glass", r.break_glass},
         {"state", svc.State(r)},
         {"status", r.status},
         {"rule", r.rule_id},
         {"policy_version", r.policy_version},
         {"approvals_required", r.approvals_required},
         {"approver_group", r.approver_group},
         {"on_site_consent", r.on_site_consent},
         {"approvals", approvals},
         {"created", FormatRfc3339(r.created)}};
  if (r.starts) j["starts"] = FormatRfc3339(*r.starts);
  if (r.ends) j["ends"] = FormatRfc3339(*r.ends);
  if (!r.decided_by.empty()) j["decided_by"] = r.decided_by;
  if (!r.decision_reason.empty()) j["decision_reason"] = r.decision_reason;
  if (r.break_glass) {
    j["review_group"] = r.review_group;
    j["reviewed"] = r.reviewed_at.has_value();
    if (r.reviewed_at) {
      j["reviewed_by"] = r.reviewed_by;
      j["reviewed_at"] = FormatRfc3339(*r.reviewed_at);
      j["review_comment"] = r.review_comment;
    }
  }
  return j;
}

}  // namespace torwart::server
