#include "policy_api.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "auth.hpp"
#include "json_util.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using http::Request;
using http::Response;

// Who may do what (see docs/design/access.md, "Roles").
const std::vector<std::string> kPolicyWriters = {"admin", "operator"};
const std::vector<std::string> kPolicyReaders = {"admin", "operator", "auditor", "approver"};
// May explain decisions for other users; everyone else only for themselves.
const std::vector<std::string> kExplainOthers = {"admin", "operator", "auditor", "approver"};

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

json DiagnosticsJson(const std::vector<policy::Diagnostic>& errors) {
  json list = json::array();
  for (const auto& d : errors) {
    list.push_back({{"line", d.pos.line}, {"column", d.pos.column}, {"message", d.message},
                    {"text", d.String()}});
  }
  return list;
}

Response InvalidPolicy(const Error& e, const std::vector<policy::Diagnostic>& errors) {
  if (errors.empty()) return ErrorResponse(e);
  json body{{"error", {{"code", "invalid_policy"}, {"message", e.message()}}},
            {"errors", DiagnosticsJson(errors)}};
  return Response::Json(400, body.dump());
}

json VersionJson(const storage::PolicyVersion& v, bool with_text) {
  json j{{"version", v.version},
         {"author", v.author},
         {"created", FormatRfc3339(v.created)},
         {"active", v.active},
         {"comment", v.comment}};
  if (with_text) j["text"] = v.text;
  return j;
}

// The policy text of a check/apply request: either the document itself (any content type), or
// JSON {"text": "...", "comment": "..."} (a policy never has a top-level "text" key).
struct PolicyBody {
  std::string text, comment;
};
PolicyBody ReadPolicyBody(const Request& req) {
  PolicyBody out{req.body, ""};
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_object() && j.contains("text") && j["text"].is_string()) {
    bool only_known = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "text" && it.key() != "comment") only_known = false;
    }
    if (only_known) {
      out.text = j["text"].get<std::string>();
      if (j.contains("comment") && j["comment"].is_string()) out.comment = j["comment"];
    }
  }
  if (auto it = req.query.find("comment"); it != req.query.end()) out.comment = it->second;
  return out;
}

}  // namespace

void RegisterPolicyApi(Context& ctx, PolicyService& policies, http::Router& router) {
  router.Add("POST", "/api/v1/policy/check",
             RequireRole(ctx, {"admin", "operator", "auditor"},
                         [](const Request& req, const Principal&) {
                           auto checked = PolicyService::Check(ReadPolicyBody(req).text);
                           json out{{"valid", checked.errors.empty()},
                                    {"errors", DiagnosticsJson(checked.errors)},
                                    {"tests", checked.tests}};
                           if (checked.policy) {
                             out["rules"] = checked.policy->rule_count();
                             out["targets"] = checked.policy->target_count();
                           }
                           return Response::Json(200, out.dump());
                         }));
  router.Add("PUT", "/api/v1/policy",
             RequireRole(ctx, kPolicyWriters, [&policies](const Request& req, const Principal& who) {
               std::vector<policy::Diagnostic> errors;
               PolicyBody body = ReadPolicyBody(req);
               auto r = policies.Apply(body.text, who, body.comment, req, &errors);
               if (!r) return InvalidPolicy(r.error(), errors);
               return Response::Json(200, json{{"version", r->version},
                                               {"rules", r->rules},
                                               {"targets", r->targets},
                                               {"tests", r->tests}}
                                              .dump());
             }));
  router.Add("GET", "/api/v1/policy",
             RequireRole(ctx, kPolicyReaders, [&ctx](const Request&, const Principal&) {
               auto v = ctx.store->policies().Active();
               if (!v) return ErrorResponse(v.error());
               if (!v->has_value()) {
                 return Response::Error(404, "not_found",
                                        "no access policy applied: everything is denied");
               }
               return Response::Json(200, VersionJson(**v, true).dump());
             }));
  router.Add("GET", "/api/v1/policy/versions",
             RequireRole(ctx, kPolicyReaders, [&ctx](const Request&, const Principal&) {
               auto list = ctx.store->policies().List();
               if (!list) return ErrorResponse(list.error());
               json out = json::array();
               for (const auto& v : *list) out.push_back(VersionJson(v, false));
               return Response::Json(200, json{{"versions", out}}.dump());
             }));
  router.Add("POST", "/api/v1/policy/versions/{n}/restore",
             RequireRole(ctx, kPolicyWriters, [&policies](const Request& req, const Principal& who) {
               int64_t n = 0;
               const std::string& s = req.params.at("n");
               if (s.empty() || s.size() > 12 ||
                   !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                 return Response::Error(400, "invalid_argument", "version must be a number");
               }
               n = std::stoll(s);
               std::vector<policy::Diagnostic> errors;
               auto r = policies.Restore(n, who, req, &errors);
               if (!r) return InvalidPolicy(r.error(), errors);
               return Response::Json(200, json{{"version", r->version},
                                               {"restored_from", n},
                                               {"rules", r->rules},
                                               {"tests", r->tests}}
                                              .dump());
             }));
  router.Add(
      "POST", "/api/v1/policy/explain",
      RequireRole(ctx, {}, [&ctx, &policies](const Request& req, const Principal& who) {
        auto body = ParseBody(req.body, {"user", "target", "at", "scope", "port", "break_glass",
                                         "duration", "reason", "roles"});
        if (!body) return ErrorResponse(body.error());
        auto user = StringField(*body, "user", false, who.name);
        auto target = StringField(*body, "target", true);
        auto at = StringField(*body, "at", false);
        auto scope = StringField(*body, "scope", false);
        auto bg = BoolField(*body, "break_glass", false);
        auto duration = StringField(*body, "duration", false);
        auto roles = StringListField(*body, "roles");
        for (const Error* e : {user ? nullptr : &user.error(), target ? nullptr : &target.error(),
                               at ? nullptr : &at.error(), scope ? nullptr : &scope.error(),
                               bg ? nullptr : &bg.error(), duration ? nullptr : &duration.error(),
                               roles ? nullptr : &roles.error()}) {
          if (e) return ErrorResponse(*e);
        }
        if (*user != who.name && !Has(kExplainOthers, who.role)) {
          return Response::Error(403, "permission_denied",
                                 "role '" + who.role + "' may explain decisions only for itself");
        }
        PolicyService::Query q;
        q.user = *user;
        q.target = *target;
        q.scope = *scope;
        q.break_glass = *bg;
        q.extra_roles = *roles;
        q.at = ctx.clock->Now();
        if (!at->empty() && !ParseRfc3339(*at, q.at)) {
          return Response::Error(400, "invalid_argument",
                                 "at must be RFC 3339, e.g. 2026-05-04T21:00:00+02:00");
        }
        if (!duration->empty()) {
          auto d = ParseDuration(*duration);
          if (!d || d->count() <= 0) {
            return Response::Error(400, "invalid_argument", "duration is not like 2h or 30m");
          }
          q.duration = *d;
        }
        if (auto it = body->find("reason"); it != body->end() && it->is_string()) {
          q.reason = it->get<std::string>();
        }
        if (auto it = body->find("port"); it != body->end() && !it->is_null()) {
          if (!it->is_number_integer() || *it < 0 || *it > 65535) {
            return Response::Error(400, "invalid_argument", "port must be 0-65535");
          }
          q.port = static_cast<uint16_t>(it->get<int>());
        }
        auto ev = policies.Evaluate(q);
        return Response::Json(200, DecisionJson(ev).dump());
      }));
}

}  // namespace torwart::server
