#include "users_api.hpp"

#include <nlohmann/json.hpp>

#include "auth.hpp"
#include "json_util.hpp"

namespace torwart::server {
namespace {

using http::Request;
using http::Response;
using nlohmann::json;

json UserJson(Context& ctx, const storage::User& u) {
  json j{{"id", u.id},
         {"name", u.name},
         {"role", u.role},
         {"organisation", u.organisation},
         {"must_change_password", u.must_change_password},
         {"disabled", u.disabled},
         {"created", FormatRfc3339(u.created)}};
  if (u.locked_until && *u.locked_until > ctx.clock->Now()) {
    j["locked_until"] = FormatRfc3339(*u.locked_until);
  }
  auto mfa = ctx.auth->MfaState(u.id);
  j["mfa"] = mfa ? *mfa : "unknown";
  return j;
}

const std::string& NameParam(const Request& req) { return req.params.at("name"); }

}  // namespace

void RegisterIdentityApi(Context& ctx, http::Router& router) {
  // --- sessions ---
  router.Add("POST", "/api/v1/auth/login", [&ctx](const Request& req) -> Response {
    auto body = ParseBody(req.body, {"user", "password", "totp"});
    if (!body) return ErrorResponse(body.error());
    auto user = StringField(*body, "user", true);
    auto password = StringField(*body, "password", true);
    auto totp = StringField(*body, "totp", false);
    if (!user) return ErrorResponse(user.error());
    if (!password) return ErrorResponse(password.error());
    if (!totp) return ErrorResponse(totp.error());
    auto r = ctx.auth->Login(*user, *password, *totp, req);
    if (!r) return ErrorResponse(r.error());
    if (r->totp_required) {
      return Response::Error(401, "totp_required",
                             "this account needs the one-time code from its authenticator app "
                             "(field 'totp'; CLI: --totp CODE)");
    }
    return Response::Json(200, json{{"token", r->token},
                                    {"expires", FormatRfc3339(r->expires)},
                                    {"user", r->who.name},
                                    {"role", r->who.role},
                                    {"mfa", r->who.mfa},
                                    {"must_change_password", r->who.must_change_password}}
                                   .dump());
  });
  router.Add("POST", "/api/v1/auth/logout",
             RequireRole(
                 ctx, {},
                 [&ctx](const Request& req, const Principal&) {
                   auto r = ctx.auth->Logout(req);
                   if (!r) return ErrorResponse(r.error());
                   return Response::Json(200, "{}");
                 },
                 true));
  router.Add("POST", "/api/v1/auth/password",
             RequireRole(
                 ctx, {},
                 [&ctx](const Request& req, const Principal& who) {
                   auto body = ParseBody(req.body, {"old_password", "new_password"});
                   if (!body) return ErrorResponse(body.error());
                   auto o = StringField(*body, "old_password", true);
                   auto n = StringField(*body, "new_password", true);
                   if (!o) return ErrorResponse(o.error());
                   if (!n) return ErrorResponse(n.error());
                   auto r = ctx.auth->ChangePassword(who, *o, *n, req);
                   if (!r) return ErrorResponse(r.error());
                   return Response::Json(200, json{{"changed", true}}.dump());
                 },
                 true));
  router.Add("GET", "/api/v1/me",
             RequireRole(
                 ctx, {},
                 [&ctx](const Request&, const Principal& who) {
                   auto state = ctx.auth->MfaState(who.user_id);
                   if (!state) return ErrorResponse(state.error());
                   return Response::Json(200,
                                         json{{"user", who.name},
                                              {"role", who.role},
                                              {"organisation", who.organisation},
                                              {"mfa", who.mfa},
                                              {"mfa_state", *state},
                                              {"must_change_password", who.must_change_password}}
                                             .dump());
                 },
                 true));

  // --- second factor (own account) ---
  router.Add("POST", "/api/v1/auth/mfa/enroll",
             RequireRole(ctx, {}, [&ctx](const Request& req, const Principal& who) {
               if (auto body = ParseBody(req.body, {}); !body) return ErrorResponse(body.error());
               auto r = ctx.auth->EnrollMfa(who, req);
               if (!r) return ErrorResponse(r.error());
               return Response::Json(
                   201, json{{"secret", r->secret}, {"uri", r->uri}, {"state", "pending"}}.dump());
             }));
  router.Add("POST", "/api/v1/auth/mfa/confirm",
             RequireRole(ctx, {}, [&ctx](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"code"});
               if (!body) return ErrorResponse(body.error());
               auto code = StringField(*body, "code", true);
               if (!code) return ErrorResponse(code.error());
               auto r = ctx.auth->ConfirmMfa(who, *code, req);
               if (!r) return ErrorResponse(r.error());
               return Response::Json(200, json{{"state", "active"}, {"mfa", true}}.dump());
             }));

  // --- users ---
  router.Add("GET", "/api/v1/users",
             RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request&, const Principal&) {
               auto users = ctx.store->users().List();
               if (!users) return ErrorResponse(users.error());
               json list = json::array();
               for (auto& u : *users) list.push_back(UserJson(ctx, u));
               return Response::Json(200, json{{"users", list}}.dump());
             }));
  router.Add("POST", "/api/v1/users",
             RequireRole(ctx, {"admin"}, [&ctx](const Request& req, const Principal& who) {
               auto body = ParseBody(req.body, {"name", "role", "organisation"});
               if (!body) return ErrorResponse(body.error());
               auto name = StringField(*body, "name", true);
               auto role = StringField(*body, "role", true);
               auto org = StringField(*body, "organisation", false);
               if (!name) return ErrorResponse(name.error());
               if (!role) return ErrorResponse(role.error());
               if (!org) return ErrorResponse(org.error());
               auto pw = ctx.auth->CreateUser(who, *name, *role, *org, req);
               if (!pw) return ErrorResponse(pw.error());
               return Response::Json(201, json{{"name", *name},
                                               {"role", *role},
                                               {"organisation", *org},
                                               {"one_time_password", *pw}}
                                              .dump());
             }));
  router.Add("GET", "/api/v1/users/{name}",
             RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request& req, const Principal&) {
               auto u = ctx.store->users().GetByName(NameParam(req));
               if (!u) return ErrorResponse(u.error());
               return Response::Json(200, UserJson(ctx, *u).dump());
             }));
  for (bool disable : {true, false}) {
    router.Add(
        "POST", disable ? "/api/v1/users/{name}/disable" : "/api/v1/users/{name}/enable",
        RequireRole(ctx, {"admin"}, [&ctx, disable](const Request& req, const Principal& who) {
          if (auto b = ParseBody(req.body, {}); !b) {
            return ErrorResponse(b.error());
          }
          auto r = ctx.auth->SetDisabled(who, NameParam(req), disable, req);
          if (!r) return ErrorResponse(r.error());
          return Response::Json(200, json{{"name", NameParam(req)}, {"disabled", disable}}.dump());
        }));
  }
  router.Add("POST", "/api/v1/users/{name}/password-reset",
             RequireRole(ctx, {"admin"}, [&ctx](const Request& req, const Principal& who) {
               if (auto b = ParseBody(req.body, {}); !b) return ErrorResponse(b.error());
               auto pw = ctx.auth->ResetPassword(who, NameParam(req), req);
               if (!pw) return ErrorResponse(pw.error());
               return Response::Json(
                   200, json{{"name", NameParam(req)}, {"one_time_password", *pw}}.dump());
             }));
  router.Add("POST", "/api/v1/users/{name}/mfa-reset",
             RequireRole(ctx, {"admin"}, [&ctx](const Request& req, const Principal& who) {
               if (auto b = ParseBody(req.body, {}); !b) return ErrorResponse(b.error());
               auto r = ctx.auth->ResetMfa(who, NameParam(req), req);
               if (!r) return ErrorResponse(r.error());
               return Response::Json(200, json{{"name", NameParam(req)}, {"mfa", "none"}}.dump());
             }));
}

}  // namespace torwart::server
