// The access policy in torwartd: versions in the database, the active compiled policy in memory,
// and the REST endpoints /api/v1/policy* (check, apply, show, versions, restore, explain).
// Deny by default: with no policy applied every decision is a deny. Thread-safe: the active
// policy is an immutable snapshot swapped under a mutex.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "context.hpp"
#include "torwart/http/server.hpp"
#include "torwart/policy/decision.hpp"
#include "torwart/policy/policy.hpp"

namespace torwart::server {

struct ActivePolicy {
  int64_t version = 0;
  std::string author;
  TimePoint created;
  policy::Policy policy;
};

class PolicyService {
 public:
  explicit PolicyService(Context& ctx) : ctx_(ctx) {}

  // Compiles the active version from the database. A stored policy that no longer compiles
  // (e.g. a time zone vanished) leaves no active policy: everything is denied, loudly logged.
  Expected<void> Load();
  // nullptr: no policy applied (deny everything).
  std::shared_ptr<const ActivePolicy> Active() const;

  struct CheckResult {
    std::optional<policy::Policy> policy;
    std::vector<policy::Diagnostic> errors;  // every error, sorted by position
    size_t tests = 0;                        // tests run (all passed when errors is empty)
  };
  static CheckResult Check(std::string_view text);

  // Validates, runs the tests, audits (fail closed) and activates a new version.
  // kInvalidArgument (listing every error) when invalid; the previous version stays active.
  struct Applied {
    int64_t version = 0;
    size_t rules = 0, targets = 0, tests = 0;
  };
  Expected<Applied> Apply(const std::string& text, const Principal& who, const std::string& comment,
                          const http::Request& req, std::vector<policy::Diagnostic>* errors);
  // Stores version `n`'s text again as a new active version (it must still compile).
  Expected<Applied> Restore(int64_t n, const Principal& who, const http::Request& req,
                            std::vector<policy::Diagnostic>* errors);

  // The decision for `user` (roles from the database when the user exists, plus `extra_roles`).
  // Without an active policy: a deny with cause "no policy".
  struct Query {
    std::string user;
    std::string target;
    std::string scope;
    uint16_t port = 0;
    TimePoint at;
    bool break_glass = false;
    std::optional<std::chrono::seconds> duration;
    std::optional<std::string> reason;
    std::vector<std::string> extra_roles;
  };
  struct Evaluated {
    std::shared_ptr<const ActivePolicy> active;  // nullptr: no policy
    policy::AccessQuery query;
    policy::Decision decision;
  };
  Evaluated Evaluate(const Query& q) const;

 private:
  Expected<Applied> Activate(const std::string& text, const Principal& who,
                             const std::string& comment, const http::Request& req,
                             std::vector<policy::Diagnostic>* errors, const char* type);

  Context& ctx_;
  mutable std::mutex mu_;
  std::shared_ptr<const ActivePolicy> active_;
};

// Decision as JSON: allow, rule, rule_pos, cause, missing, requirements, scopes, break_glass,
// review_group, trace; `text` is policy::Explain's output.
nlohmann::json DecisionJson(const PolicyService::Evaluated& e);

void RegisterPolicyApi(Context& ctx, PolicyService& policies, http::Router& router);

}  // namespace torwart::server
