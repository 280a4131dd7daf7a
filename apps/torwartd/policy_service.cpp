#include "policy_api.hpp"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;

constexpr size_t kMaxPolicyBytes = 16 * 1024 * 1024;

std::string Sha256Hex(const std::string& s) {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  return HexEncode(std::string_view(reinterpret_cast<char*>(out), sizeof out));
}

std::string JoinDiagnostics(const std::vector<policy::Diagnostic>& errors) {
  std::string out;
  for (const auto& d : errors) out += (out.empty() ? "" : "\n") + d.String();
  return out;
}

}  // namespace

PolicyService::CheckResult PolicyService::Check(std::string_view text) {
  CheckResult out;
  if (text.size() > kMaxPolicyBytes) {
    out.errors.push_back({{1, 1}, "policy larger than 16 MiB"});
    return out;
  }
  auto compiled = policy::CompileDetailed(text);
  out.errors = std::move(compiled.errors);
  if (compiled.policy) {
    out.tests = policy::RunTests(*compiled.policy).size();
    out.policy = std::move(compiled.policy);
  }
  return out;
}

Expected<void> PolicyService::Load() {
  auto v = ctx_.store->policies().Active();
  if (!v) return MakeError(v.error().WithContext("reading the active policy"));
  if (!v->has_value()) {
    log::warn("no access policy applied: every access request is denied (torwart policy apply)");
    return {};
  }
  const storage::PolicyVersion& pv = **v;
  auto checked = Check(pv.text);
  if (!checked.policy) {
    log::error("active policy version {} no longer compiles; denying all access: {}", pv.version,
               JoinDiagnostics(checked.errors));
    return {};
  }
  auto active = std::make_shared<ActivePolicy>(
      ActivePolicy{pv.version, pv.author, pv.created, std::move(*checked.policy)});
  std::lock_guard lock(mu_);
  active_ = std::move(active);
  return {};
}

std::shared_ptr<const ActivePolicy> PolicyService::Active() const {
  std::lock_guard lock(mu_);
  return active_;
}

Expected<PolicyService::Applied> PolicyService::Activate(const std::string& text,
                                                         const Principal& who,
                                                         const std::string& comment,
                                                         const http::Request& req,
                                                         std::vector<policy::Diagnostic>* errors,
                                                         const char* type) {
  CheckResult checked = Check(text);
  audit::Event e = MakeUserEvent(ctx_, req, who, "policy", type);
  e.target = "policy";
  e.reason = comment;
  if (!checked.policy) {
    if (errors) *errors = checked.errors;
    e.result = audit::Result::kDenied;
    e.details = json{{"sha256", Sha256Hex(text)},
                     {"errors", checked.errors.size()},
                     {"first_error", checked.errors.empty() ? "" : checked.errors[0].String()}}
                    .dump();
    (void)Audit(ctx_, e);
    return MakeError(Errc::kInvalidArgument,
                     "policy refused (" + std::to_string(checked.errors.size()) +
                         " error(s)); the active policy is unchanged:\n" +
                         JoinDiagnostics(checked.errors));
  }
  Applied out;
  out.rules = checked.policy->rule_count();
  out.targets = checked.policy->target_count();
  out.tests = checked.tests;
  // Fail closed: without an audit record the policy does not change.
  e.details = json{{"sha256", Sha256Hex(text)}, {"rules", out.rules}, {"tests", out.tests}}.dump();
  if (auto r = Audit(ctx_, e); !r) {
    return MakeError(Errc::kUnavailable, "audit store unavailable; policy not applied");
  }
  storage::PolicyVersion v;
  v.text = text;
  v.author = who.name;
  v.created = ctx_.clock->Now();
  v.comment = comment;
  auto n = ctx_.store->policies().Add(v, true);
  if (!n) return MakeError(n.error().WithContext("storing the policy"));
  out.version = *n;
  auto active = std::make_shared<ActivePolicy>(
      ActivePolicy{*n, who.name, v.created, std::move(*checked.policy)});
  {
    std::lock_guard lock(mu_);
    active_ = std::move(active);
  }
  log::info("access policy version {} applied by {}", *n, who.name);
  return out;
}

Expected<PolicyService::Applied> PolicyService::Apply(const std::string& text,
                                                      const Principal& who,
                                                      const std::string& comment,
                                                      const http::Request& req,
                                                      std::vector<policy::Diagnostic>* errors) {
  return Activate(text, who, comment, req, errors, "policy.apply");
}

Expected<PolicyService::Applied> PolicyService::Restore(int64_t n, const Principal& who,
                                                        const http::Request& req,
                                                        std::vector<policy::Diagnostic>* errors) {
  auto v = ctx_.store->policies().Get(n);
  if (!v) return MakeError(v.error());
  return Activate(v->text, who, "restored from version " + std::to_string(n), req, errors,
                  "policy.restore");
}

PolicyService::Evaluated PolicyService::Evaluate(const Query& q) const {
  Evaluated out;
  out.active = Active();
  policy::AccessQuery& aq = out.query;
  aq.user = q.user;
  aq.target = q.target;
  aq.scope = q.scope;
  aq.port = q.port;
  aq.at = q.at;
  aq.break_glass = q.break_glass;
  aq.duration = q.duration;
  aq.reason = q.reason;
  // Roles come from the directory (the user's role in the database); groups from the policy.
  if (auto u = ctx_.store->users().GetByName(q.user); u && !u->disabled) {
    aq.user_roles.push_back(u->role);
  }
  for (const auto& r : q.extra_roles) aq.user_roles.push_back(r);
  if (!out.active) {
    out.decision.allow = false;
    out.decision.cause = policy::DenyCause::kNoRule;
    out.decision.reason = "no access policy has been applied (deny by default)";
    return out;
  }
  out.decision = policy::Decide(out.active->policy, aq);
  return out;
}

json DecisionJson(const PolicyService::Evaluated& e) {
  const policy::Decision& d = e.decision;
  json trace = json::array();
  for (const auto& t : d.trace) {
    trace.push_back({{"rule", t.rule_id},
                     {"pos", t.pos.String()},
                     {"deny_rule", t.is_deny_rule},
                     {"matched", t.matched},
                     {"failed", t.matched ? "" : policy::DenyCauseName(t.failed)}});
  }
  json j{{"allow", d.allow},
         {"decision", d.allow ? "allow" : "deny"},
         {"user", e.query.user},
         {"target", e.query.target},
         {"at", FormatRfc3339(e.query.at)},
         {"roles", e.query.user_roles},
         {"rule", d.rule_id},
         {"rule_pos", d.rule_id.empty() ? "" : d.rule_pos.String()},
         {"scopes", d.scopes},
         {"break_glass", d.break_glass},
         {"trace", trace},
         {"policy_version", e.active ? e.active->version : 0}};
  if (d.allow) {
    j["requirements"] = {{"approvals", d.requirements.approvals},
                         {"approver_group", d.requirements.approver_group},
                         {"max_duration", d.requirements.max_duration.count()},
                         {"reason_required", d.requirements.reason_required},
                         {"on_site_consent", d.requirements.on_site_consent}};
    if (d.break_glass) j["review_group"] = d.review_group;
  } else {
    j["cause"] = e.active ? policy::DenyCauseName(d.cause) : "no_policy";
    j["missing"] = d.reason;
  }
  j["text"] = e.active ? policy::Explain(e.active->policy, e.query, d)
                       : "DENY  " + e.query.user + " -> " + e.query.target + "\n  missing: " +
                             d.reason + "\n";
  return j;
}

}  // namespace torwart::server
