// Access decisions: may this user reach this target now, under which rule and requirements?
// Deny by default; an explicit deny rule always wins. Decide and Explain are pure functions of
// the (immutable) Policy and the query: thread-safe, no I/O, microseconds per call.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/policy/policy.hpp"

namespace torwart::policy {

struct AccessQuery {
  std::string user;
  std::vector<std::string> user_groups;  // directory groups, in addition to the policy's lists
  std::vector<std::string> user_roles;
  std::string target;
  uint16_t port = 0;  // 0: the target's port
  std::string scope;  // e.g. "modbus:read"; empty: whatever the matching rule grants
  TimePoint at;
  bool break_glass = false;  // the user invokes emergency access
  // Checked only when given: the requested grant length and the stated reason.
  std::optional<std::chrono::seconds> duration;
  std::optional<std::string> reason;
  // Policy tests without `at` only: maintenance windows count as open.
  bool any_time = false;
};

struct Requirements {
  int approvals = 0;           // distinct approvers needed, never the requester (four eyes)
  std::string approver_group;  // who may approve
  std::chrono::seconds max_duration{0};
  bool reason_required = false;
  bool on_site_consent = false;
};

// Why a request was denied, from "nothing fits" to "almost": the furthest any rule got.
enum class DenyCause : uint8_t {
  kNone = 0,
  kUnknownTarget,
  kPortMismatch,        // the query names a port the target does not serve
  kScopeInvalid,        // the scope does not exist for the target's protocol
  kNoRule,              // no rule's dst covers the target
  kSource,              // rules cover the target, but not this user
  kPort,                // the rule's ports exclude the port
  kScope,               // the rule grants other scopes
  kWindow,              // outside the rule's maintenance window
  kBreakGlassOnly,      // only a break-glass rule fits and break-glass was not invoked
  kNoEligibleApprover,  // the approver group has too few members besides the requester
  kDuration,            // the requested duration exceeds max_duration
  kReason,              // a reason is required and none was given
  kExplicitDeny,        // a deny rule matched
};
const char* DenyCauseName(DenyCause cause);

struct TraceStep {
  std::string rule_id;
  SourcePos pos;
  bool is_deny_rule = false;
  bool matched = false;
  DenyCause failed = DenyCause::kNone;  // first check that failed when !matched
};

struct Decision {
  bool allow = false;
  std::string rule_id;  // deciding rule: the allow rule used, or the deny rule that matched
  SourcePos rule_pos;
  Requirements requirements;
  std::vector<std::string> scopes;  // granted scopes; empty means the whole protocol
  bool break_glass = false;         // raise an alert now; review afterwards by review_group
  std::string review_group;
  DenyCause cause = DenyCause::kNone;
  std::string reason;            // for a deny: what is missing, in words
  std::vector<TraceStep> trace;  // every rule whose dst covers the target, in document order
};

Decision Decide(const Policy& policy, const AccessQuery& query);

// Multi-line human text: the decision, the deciding rule or the missing requirement, the trace.
std::string Explain(const Policy& policy, const AccessQuery& query);
std::string Explain(const Policy& policy, const AccessQuery& query, const Decision& decision);

// Four eyes: may `approver` approve a request by `requester` that needs `req`? Only members the
// policy lists for req.approver_group, and never the requester.
bool MayApprove(const Policy& policy, const Requirements& req, std::string_view approver,
                std::string_view requester);

}  // namespace torwart::policy
