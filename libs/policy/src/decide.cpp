// The evaluator: indexes narrow the rules to those whose dst covers the target, then each is
// checked in a fixed order (src, port, scope, window, break-glass, approvers, duration, reason) so
// a deny can name how far the closest rule got.
#include <algorithm>
#include <exception>
#include <tuple>

#include "policy_impl.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::policy {

bool Window::IsOpen(TimePoint t) const {
  if (!tz) return false;
  try {
    auto local = tz->to_local(std::chrono::floor<std::chrono::seconds>(t));
    auto day = date::floor<date::days>(local);
    unsigned wd = date::weekday(day).c_encoding();
    unsigned prev = (wd + 6) % 7;
    auto minute = std::chrono::duration_cast<std::chrono::minutes>(local - day).count();
    for (const WindowSpan& s : spans) {
      bool today = (s.days >> wd) & 1u;
      if (s.from < s.to) {
        if (today && minute >= s.from && minute < s.to) return true;
      } else {
        // Crosses midnight: the evening part belongs to today, the morning part to yesterday.
        if (today && minute >= s.from) return true;
        if (((s.days >> prev) & 1u) && minute < s.to) return true;
      }
    }
  } catch (const std::exception&) {
    return false;  // out of the tz database's range: closed
  }
  return false;
}

std::string Window::LocalTime(TimePoint t) const {
  if (!tz) return "?";
  try {
    auto local = tz->to_local(std::chrono::floor<std::chrono::seconds>(t));
    return date::format("%a %Y-%m-%d %H:%M", local);
  } catch (const std::exception&) {
    return "?";
  }
}

void CandidateRules(const Policy::Impl& p, uint32_t t, std::vector<uint32_t>& out) {
  out.clear();
  const auto& by_target = p.rules_by_target[t];
  out.insert(out.end(), by_target.begin(), by_target.end());
  const auto& by_site = p.rules_by_site[p.target_site[t]];
  out.insert(out.end(), by_site.begin(), by_site.end());
  for (uint32_t tag : p.target_tags[t]) {
    const auto& by_tag = p.rules_by_tag[tag];
    out.insert(out.end(), by_tag.begin(), by_tag.end());
  }
  out.insert(out.end(), p.rules_any_dst.begin(), p.rules_any_dst.end());
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

bool RuleCoversProtocol(const Rule& r, std::string_view protocol) {
  if (r.scopes.empty()) return true;
  return std::find(r.scope_protocols.begin(), r.scope_protocols.end(), protocol) !=
         r.scope_protocols.end();
}

bool PortAllowed(const Rule& r, uint16_t port) {
  if (r.ports.empty()) return true;
  for (const PortRange& pr : r.ports) {
    if (port >= pr.lo && port <= pr.hi) return true;
  }
  return false;
}

const char* DenyCauseName(DenyCause cause) {
  switch (cause) {
    case DenyCause::kNone:
      return "none";
    case DenyCause::kUnknownTarget:
      return "unknown_target";
    case DenyCause::kPortMismatch:
      return "port_mismatch";
    case DenyCause::kScopeInvalid:
      return "scope_invalid";
    case DenyCause::kNoRule:
      return "no_rule";
    case DenyCause::kSource:
      return "source";
    case DenyCause::kPort:
      return "port";
    case DenyCause::kScope:
      return "scope";
    case DenyCause::kWindow:
      return "window";
    case DenyCause::kBreakGlassOnly:
      return "break_glass_only";
    case DenyCause::kNoEligibleApprover:
      return "no_eligible_approver";
    case DenyCause::kDuration:
      return "duration";
    case DenyCause::kReason:
      return "reason";
    case DenyCause::kExplicitDeny:
      return "explicit_deny";
  }
  return "?";
}

namespace {

std::string JoinStrings(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

bool Intersects(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() && j != b.end()) {
    if (*i == *j) return true;
    if (*i < *j) {
      ++i;
    } else {
      ++j;
    }
  }
  return false;
}

struct Subject {
  int64_t user = -1;
  std::vector<uint32_t> groups;
  std::vector<uint32_t> roles;
};

void BuildSubject(const Policy::Impl& p, const AccessQuery& q, Subject& s) {
  s.groups.clear();
  s.roles.clear();
  s.user = -1;
  if (const uint32_t* u = Lookup(p.user_index, q.user)) {
    s.user = *u;
    s.groups = p.user_groups[*u];
  }
  for (const std::string& g : q.user_groups) {
    if (const uint32_t* id = Lookup(p.group_index, g)) s.groups.push_back(*id);
  }
  for (const std::string& r : q.user_roles) {
    if (const uint32_t* id = Lookup(p.role_index, r)) s.roles.push_back(*id);
  }
  std::sort(s.groups.begin(), s.groups.end());
  std::sort(s.roles.begin(), s.roles.end());
}

bool SrcMatches(const Rule& r, const Subject& s) {
  if (r.any_src) return true;
  if (s.user >= 0 &&
      std::binary_search(r.users.begin(), r.users.end(), static_cast<uint32_t>(s.user))) {
    return true;
  }
  return Intersects(r.groups, s.groups) || Intersects(r.roles, s.roles);
}

bool ScopeMatches(const Rule& r, const Target& t, std::string_view scope) {
  if (!RuleCoversProtocol(r, t.protocol)) return false;
  if (scope.empty() || r.scopes.empty()) return true;
  for (const std::string& s : r.scopes) {
    if (s == scope) return true;
    if (s.size() == t.protocol.size() + 2 && s.starts_with(t.protocol) && s.ends_with(":*")) {
      return true;
    }
  }
  return false;
}

int EligibleApprovers(const Policy::Impl& p, const Rule& r, std::string_view requester) {
  const uint32_t* g = Lookup(p.group_index, r.req.approver_group);
  if (!g) return 0;
  const auto& members = p.group_members[*g];
  int n = static_cast<int>(members.size());
  if (std::find(members.begin(), members.end(), requester) != members.end()) --n;
  return n;
}

// Checks one rule; kNone when it matches.
DenyCause Check(const Policy::Impl& p, const Rule& r, const Target& t, uint16_t port,
                const Subject& s, const AccessQuery& q) {
  if (!SrcMatches(r, s)) return DenyCause::kSource;
  if (!PortAllowed(r, port)) return DenyCause::kPort;
  if (!ScopeMatches(r, t, q.scope)) return DenyCause::kScope;
  if (r.window >= 0 && !q.any_time && !p.windows[static_cast<size_t>(r.window)].IsOpen(q.at)) {
    return DenyCause::kWindow;
  }
  if (r.deny) return DenyCause::kNone;
  if (r.break_glass && !q.break_glass) return DenyCause::kBreakGlassOnly;
  if (r.req.approvals > 0 && EligibleApprovers(p, r, q.user) < r.req.approvals) {
    return DenyCause::kNoEligibleApprover;
  }
  if (q.duration && *q.duration > r.req.max_duration) return DenyCause::kDuration;
  if (r.req.reason_required && q.reason &&
      q.reason->find_first_not_of(" \t\r\n") == std::string::npos) {
    return DenyCause::kReason;
  }
  return DenyCause::kNone;
}

// Among several allow rules that match, the one asking least of the user wins (they are all
// grants the operator wrote); break-glass rules first only when break-glass was invoked.
auto Burden(const Rule& r, bool want_break_glass) {
  return std::make_tuple(want_break_glass ? !r.break_glass : r.break_glass, r.req.approvals,
                         r.req.on_site_consent, r.req.reason_required, !r.scopes.empty(),
                         -r.req.max_duration.count(), r.index);
}

std::string DenyText(const Policy::Impl& p, const Rule& r, const Target& t, uint16_t port,
                     DenyCause c, const AccessQuery& q) {
  std::string rule = "rule '" + r.id + "' (" + r.pos.String() + ")";
  switch (c) {
    case DenyCause::kSource:
      return "user '" + q.user + "' is not in the src of " + rule + ": " + JoinStrings(r.src_text);
    case DenyCause::kPort: {
      std::string ports;
      for (const PortRange& pr : r.ports) {
        if (!ports.empty()) ports += ", ";
        ports += pr.lo == pr.hi ? std::to_string(pr.lo)
                                : std::to_string(pr.lo) + "-" + std::to_string(pr.hi);
      }
      return rule + " allows ports " + ports + ", not " + std::to_string(port);
    }
    case DenyCause::kScope:
      if (!RuleCoversProtocol(r, t.protocol)) {
        return rule + " grants " + JoinStrings(r.scopes) + ", nothing for protocol " + t.protocol;
      }
      return rule + " grants " + JoinStrings(r.scopes) + ", not " + q.scope;
    case DenyCause::kWindow: {
      const Window& w = p.windows[static_cast<size_t>(r.window)];
      return "outside window '" + w.name + "' (" + w.text + ") of " + rule + "; local time " +
             w.LocalTime(q.at);
    }
    case DenyCause::kBreakGlassOnly:
      return "only break-glass " + rule +
             " applies: invoke break-glass (raises an alert; review by group '" + r.review_group +
             "' afterwards)";
    case DenyCause::kNoEligibleApprover:
      return rule + " needs " + std::to_string(r.req.approvals) + " approval(s) from group '" +
             r.req.approver_group + "', which has too few members besides the requester";
    case DenyCause::kDuration:
      return "requested duration " + FormatDuration(q.duration.value_or(std::chrono::seconds(0))) +
             " exceeds max_duration " + FormatDuration(r.req.max_duration) + " of " + rule;
    case DenyCause::kReason:
      return rule + " requires a reason";
    default:
      return rule;
  }
}

}  // namespace

Decision Decide(const Policy& policy, const AccessQuery& q) {
  const Policy::Impl& p = policy.impl();
  Decision d;
  const uint32_t* tid = Lookup(p.target_index, q.target);
  if (!tid) {
    d.cause = DenyCause::kUnknownTarget;
    d.reason = "no target named '" + q.target + "' in the policy";
    return d;
  }
  const Target& t = p.targets[*tid];
  uint16_t port = q.port != 0 ? q.port : t.port;
  if (port != t.port) {
    d.cause = DenyCause::kPortMismatch;
    d.reason = "target '" + t.name + "' is " + t.host + ":" + std::to_string(t.port) +
               ", not port " + std::to_string(port);
    return d;
  }
  if (!q.scope.empty()) {
    bool valid = q.scope.size() > t.protocol.size() + 1 && q.scope.starts_with(t.protocol) &&
                 q.scope[t.protocol.size()] == ':';
    bool known =
        q.scope.ends_with(":*") ||
        (t.protocol == "modbus" && (q.scope == "modbus:read" || q.scope == "modbus:write"));
    if (!valid || !known) {
      d.cause = DenyCause::kScopeInvalid;
      d.reason = "scope '" + q.scope + "' does not exist for target '" + t.name + "' (protocol " +
                 t.protocol + ")";
      return d;
    }
  }

  thread_local Subject subject;
  thread_local std::vector<uint32_t> cands;
  BuildSubject(p, q, subject);
  CandidateRules(p, *tid, cands);
  if (cands.empty()) {
    d.cause = DenyCause::kNoRule;
    d.reason = "no rule covers target '" + t.name + "' (deny by default)";
    return d;
  }

  d.trace.reserve(cands.size());
  const Rule* deny_rule = nullptr;
  const Rule* best = nullptr;
  const Rule* closest = nullptr;
  DenyCause closest_cause = DenyCause::kNone;
  for (uint32_t idx : cands) {
    const Rule& r = p.rules[idx];
    DenyCause c = Check(p, r, t, port, subject, q);
    TraceStep& step = d.trace.emplace_back();
    step.rule_id = r.id;
    step.pos = r.pos;
    step.is_deny_rule = r.deny;
    step.matched = c == DenyCause::kNone;
    step.failed = c;
    if (c == DenyCause::kNone) {
      if (r.deny) {
        if (!deny_rule) deny_rule = &r;
      } else if (!best || Burden(r, q.break_glass) < Burden(*best, q.break_glass)) {
        best = &r;
      }
    } else if (!r.deny && c > closest_cause) {
      closest_cause = c;
      closest = &r;
    }
  }

  if (deny_rule) {
    d.rule_id = deny_rule->id;
    d.rule_pos = deny_rule->pos;
    d.cause = DenyCause::kExplicitDeny;
    d.reason = "denied by rule '" + deny_rule->id + "' (" + deny_rule->pos.String() + ")";
    return d;
  }
  if (best) {
    d.allow = true;
    d.rule_id = best->id;
    d.rule_pos = best->pos;
    d.requirements = best->req;
    d.break_glass = best->break_glass;
    d.review_group = best->review_group;
    bool full = false;
    for (size_t i = 0; i < best->scopes.size(); ++i) {
      if (best->scope_protocols[i] != t.protocol) continue;
      if (best->scopes[i].ends_with(":*")) full = true;
      d.scopes.push_back(best->scopes[i]);
    }
    if (full) d.scopes.clear();
    return d;
  }
  d.cause = closest_cause;
  d.reason = closest ? DenyText(p, *closest, t, port, closest_cause, q)
                     : "only deny rules cover target '" + t.name + "'";
  if (!closest) d.cause = DenyCause::kNoRule;
  return d;
}

std::string Explain(const Policy& policy, const AccessQuery& q) {
  return Explain(policy, q, Decide(policy, q));
}

std::string Explain(const Policy& policy, const AccessQuery& q, const Decision& d) {
  std::string out = d.allow ? "ALLOW" : "DENY";
  out += "  " + q.user + " -> " + q.target;
  if (q.port) out += ":" + std::to_string(q.port);
  if (!q.scope.empty()) out += " [" + q.scope + "]";
  out += q.any_time ? " (any time)" : " at " + FormatRfc3339(q.at);
  if (q.break_glass) out += " (break-glass)";
  out += "\n";
  if (d.allow) {
    out += "  by rule '" + d.rule_id + "' (" + d.rule_pos.String() + ")\n";
    const Requirements& r = d.requirements;
    out += "  requires: ";
    std::vector<std::string> reqs;
    if (r.approvals > 0) {
      reqs.push_back(std::to_string(r.approvals) + " approval(s) from group '" + r.approver_group +
                     "' (never the requester)");
    }
    if (r.reason_required) reqs.push_back("a reason");
    if (r.on_site_consent) reqs.push_back("on-site consent");
    reqs.push_back("at most " + FormatDuration(r.max_duration));
    out += JoinStrings(reqs) + "\n";
    out += "  scopes: " + (d.scopes.empty() ? std::string("all") : JoinStrings(d.scopes)) + "\n";
    if (d.break_glass) {
      out += "  BREAK-GLASS: an alert is raised now; review by group '" + d.review_group +
             "' is mandatory\n";
    }
  } else {
    out += "  cause: " + std::string(DenyCauseName(d.cause)) + "\n";
    out += "  missing: " + d.reason + "\n";
  }
  if (!d.trace.empty()) {
    out += "  rules considered:\n";
    for (const TraceStep& s : d.trace) {
      out += "    " + s.pos.String() + " " + s.rule_id + (s.is_deny_rule ? " (deny)" : "") + ": " +
             (s.matched ? std::string("matches") : std::string("no: ") + DenyCauseName(s.failed)) +
             "\n";
    }
  }
  (void)policy;
  return out;
}

std::vector<TestResult> RunTests(const Policy& policy) {
  std::vector<TestResult> results;
  const auto& tests = policy.impl().tests;
  for (size_t i = 0; i < tests.size(); ++i) {
    const PolicyTest& t = tests[i];
    TestResult r;
    r.index = i;
    r.pos = t.pos;
    Decision d = Decide(policy, t.query);
    std::string who = t.query.user + " -> " + t.query.target;
    if (d.allow != t.expect_allow) {
      r.message = who + ": expected " + (t.expect_allow ? "allow" : "deny") + ", got " +
                  (d.allow ? "allow by rule '" + d.rule_id + "' (" + d.rule_pos.String() + ")"
                           : "deny: " + d.reason);
    } else if (!t.expect_rule.empty() && d.rule_id != t.expect_rule) {
      r.message = who + ": expected rule '" + t.expect_rule + "', got " +
                  (d.rule_id.empty() ? std::string("none") : "'" + d.rule_id + "'");
    } else {
      r.passed = true;
    }
    results.push_back(std::move(r));
  }
  return results;
}

bool MayApprove(const Policy& policy, const Requirements& req, std::string_view approver,
                std::string_view requester) {
  if (req.approvals <= 0 || approver.empty() || approver == requester) return false;
  const std::vector<std::string>* members = policy.GroupMembers(req.approver_group);
  return members && std::find(members->begin(), members->end(), approver) != members->end();
}

}  // namespace torwart::policy
