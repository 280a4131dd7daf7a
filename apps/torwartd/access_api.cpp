// REST endpoints of just-in-time access (/api/v1/access*); the logic is in access.cpp.
#include <nlohmann/json.hpp>

#include "access.hpp"
#include "auth.hpp"
#include "json_util.hpp"
#include "pki_service.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using http::Request;
using http::Response;

// Roles per endpoint (docs/design/access.md, "Roles"); the policy then decides per request.
const std::vector<std::string> kRequesters = {"admin", "operator", "approver", "technician"};
const std::vector<std::string> kDeciders = {"admin", "operator", "approver"};
const std::vector<std::string> kRevokers = {"admin", "operator", "approver", "technician"};

// Every remote-access path needs the second factor: requests, decisions, grant certificates.
http::Handler Sensitive(Context& ctx, std::vector<std::string> roles, AuthedHandler h) {
  return RequireMfa(ctx, std::move(roles), std::move(h));
}

Actor ActorOf(const Request& req, const Principal& who) { return Actor{who.name, who.role, req.peer}; }

Expected<std::optional<std::chrono::seconds>> DurationField(const json& body, const char* key) {
  auto text = StringField(body, key, false);
  if (!text) return MakeError(text.error());
  if (text->empty()) return std::optional<std::chrono::seconds>();
  auto d = ParseDuration(*text);
  if (!d || d->count() <= 0) {
    return MakeError(Errc::kInvalidArgument,
                     std::string(key) + " must be a duration like 2h, 30m or 1h30m");
  }
  return std::optional<std::chrono::seconds>(*d);
}

Response Reply(AccessService& svc, const Expected<storage::AccessRequest>& r, int status = 200) {
  if (!r) return ErrorResponse(r.error());
  return Response::Json(status, AccessJson(svc, *r).dump());
}

}  // namespace

void RegisterAccessApi(Context& ctx, AccessService& access, PkiService& pki,
                       http::Router& router) {
  router.Add("POST", "/api/v1/access",
             Sensitive(ctx, kRequesters, [&access](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"target", "site", "reason", "duration", "scope",
                                                "break_glass"});
               if (!body) return ErrorResponse(body.error());
               auto target = StringField(*body, "target", true);
               auto site = StringField(*body, "site", false);
               auto reason = StringField(*body, "reason", false);
               auto scope = StringField(*body, "scope", false);
               auto bg = BoolField(*body, "break_glass", false);
               auto duration = DurationField(*body, "duration");
               for (const Error* e :
                    {target ? nullptr : &target.error(), site ? nullptr : &site.error(),
                     reason ? nullptr : &reason.error(), scope ? nullptr : &scope.error(),
                     bg ? nullptr : &bg.error(), duration ? nullptr : &duration.error()}) {
                 if (e) return ErrorResponse(*e);
               }
               AccessService::NewRequest n;
               n.site = *site;
               n.target = *target;
               if (size_t slash = target->find('/'); slash != std::string::npos) {
                 n.site = target->substr(0, slash);
                 n.target = target->substr(slash + 1);
               }
               n.reason = *reason;
               n.scope = *scope;
               n.break_glass = *bg;
               n.duration = *duration;
               return Reply(access, access.Request(ActorOf(req, who), n), 201);
             }));
  router.Add("GET", "/api/v1/access",
             RequireRole(ctx, {}, [&access](const Request& req, const Principal& who) {
               auto it = req.query.find("filter");
               std::string filter = it == req.query.end() ? "" : it->second;
               auto list = access.List(ActorOf(req, who), filter);
               if (!list) return ErrorResponse(list.error());
               json out = json::array();
               for (const auto& r : *list) out.push_back(AccessJson(access, r));
               return Response::Json(200, json{{"requests", out}}.dump());
             }));
  router.Add("GET", "/api/v1/access/{id}",
             RequireRole(ctx, {}, [&access](const Request& req, const Principal& who) {
               return Reply(access, access.Get(ActorOf(req, who), req.params.at("id")));
             }));
  router.Add("POST", "/api/v1/access/{id}/approve",
             Sensitive(ctx, kDeciders, [&access](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"shorten", "comment"});
               if (!body) return ErrorResponse(body.error());
               auto shorten = DurationField(*body, "shorten");
               auto comment = StringField(*body, "comment", false);
               if (!shorten) return ErrorResponse(shorten.error());
               if (!comment) return ErrorResponse(comment.error());
               return Reply(access, access.Approve(ActorOf(req, who), req.params.at("id"),
                                                   *shorten, *comment));
             }));
  router.Add("POST", "/api/v1/access/{id}/deny",
             Sensitive(ctx, kDeciders, [&access](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"reason"});
               if (!body) return ErrorResponse(body.error());
               auto reason = StringField(*body, "reason", true);
               if (!reason) return ErrorResponse(reason.error());
               return Reply(access, access.Deny(ActorOf(req, who), req.params.at("id"), *reason));
             }));
  // Ending access must always be possible: no second factor required.
  router.Add("POST", "/api/v1/access/{id}/revoke",
             RequireRole(ctx, kRevokers, [&access](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"reason"});
               if (!body) return ErrorResponse(body.error());
               auto reason = StringField(*body, "reason", false);
               if (!reason) return ErrorResponse(reason.error());
               return Reply(access,
                            access.Revoke(ActorOf(req, who), req.params.at("id"), *reason));
             }));
  router.Add("POST", "/api/v1/access/{id}/review",
             RequireRole(ctx, kDeciders, [&access](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"comment"});
               if (!body) return ErrorResponse(body.error());
               auto comment = StringField(*body, "comment", true);
               if (!comment) return ErrorResponse(comment.error());
               return Reply(access,
                            access.Review(ActorOf(req, who), req.params.at("id"), *comment));
             }));
  router.Add(
      "POST", "/api/v1/access/{id}/certificate",
      Sensitive(ctx, kRequesters, [&ctx, &access, &pki](const Request& req, const Principal& who) {
        auto body = ParseBody(req.body, {"csr"});
        if (!body) return ErrorResponse(body.error());
        auto csr = StringField(*body, "csr", true);
        if (!csr) return ErrorResponse(csr.error());
        Actor actor = ActorOf(req, who);
        auto claims = access.CertificateClaims(actor, req.params.at("id"));
        if (!claims) return ErrorResponse(claims.error());
        auto pem = pki.IssueGrantCertificate(*csr, *claims);
        audit::Event e = MakeUserEvent(ctx, req, who, "access", "access.certificate");
        e.target = claims->site + "/" + claims->target;
        e.result = pem ? audit::Result::kSuccess : audit::Result::kFailure;
        e.reason = pem ? "" : pem.error().message();
        e.details = json{{"request", claims->grant_id},
                         {"not_after", FormatRfc3339(claims->not_after)},
                         {"scopes", claims->scopes}}
                        .dump();
        auto audited = Audit(ctx, e);
        if (!pem) return ErrorResponse(pem.error());
        if (!audited) return ErrorResponse(Error(Errc::kUnavailable, "audit store unavailable"));
        return Response::Json(200, json{{"certificate", *pem},
                                         {"not_after", FormatRfc3339(claims->not_after)},
                                         {"grant", claims->grant_id}}
                                        .dump());
      }));
}

}  // namespace torwart::server
