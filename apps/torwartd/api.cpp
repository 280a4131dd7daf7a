#include "api.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "auth.hpp"
#include "device_registry.hpp"
#include "json_util.hpp"
#include "tunnel_service.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using http::Request;
using http::Response;

json DeviceJson(Context& ctx, const storage::Device& d, bool with_certs) {
  json j{{"id", d.id},         {"name", d.name},
         {"site", d.site},     {"tags", d.tags},
         {"status", d.status}, {"bind_machine", d.bind_machine},
         {"created", FormatRfc3339(d.created)}};
  if (!d.machine_fingerprint.empty()) j["machine_fingerprint"] = d.machine_fingerprint;
  auto certs = ctx.store->certificates().ListForDevice(d.id);
  if (certs) {
    json list = json::array();
    const storage::Certificate* current = nullptr;
    for (auto& c : *certs) {
      if (c.status == "valid" && c.not_after > ctx.clock->Now() &&
          (!current || c.not_after > current->not_after)) {
        current = &c;
      }
      if (with_certs) {
        json cj{{"serial", c.serial},
                {"not_before", FormatRfc3339(c.not_before)},
                {"not_after", FormatRfc3339(c.not_after)},
                {"status", c.status}};
        if (c.revoked_at) cj["revoked_at"] = FormatRfc3339(*c.revoked_at);
        list.push_back(cj);
      }
    }
    if (current) {
      j["certificate"] = {{"serial", current->serial},
                          {"not_after", FormatRfc3339(current->not_after)}};
    }
    if (with_certs) j["certificates"] = list;
  }
  AddDeviceState(ctx, d.id, with_certs, j);  // control channel: online, last seen, telemetry
  AddQuarantineState(ctx, d.id, j);          // tunnels: quarantined (tunnel_service.cpp)
  return j;
}

bool ValidName(const std::string& s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
         });
}

Expected<storage::Enrollment> NewEnrollment(Context& ctx, const storage::Device& d,
                                            std::chrono::seconds ttl) {
  storage::Enrollment e;
  e.reference = "ref-" + HexEncode(RandomBytes(6));
  e.secret = RandomToken(18);
  e.device_id = d.id;
  e.created = ctx.clock->Now();
  e.expires = e.created + ttl;
  if (auto r = ctx.store->enrollments().Create(e); !r) return MakeError(r.error());
  return e;
}

json EnrollmentJson(const storage::Enrollment& e) {
  return {{"reference", e.reference}, {"secret", e.secret}, {"expires", FormatRfc3339(e.expires)}};
}

}  // namespace

json DeviceJsonFor(Context& ctx, const storage::Device& d, bool with_certs) {
  return DeviceJson(ctx, d, with_certs);
}

void RegisterApi(Context& ctx, PkiService& pki, http::Router& router) {
  // Sessions and users: users_api.cpp (RegisterIdentityApi).

  // --- devices ---
  router.Add("GET", "/api/v1/devices",
             RequireRole(ctx, {"admin", "operator", "auditor", "approver"},
                         [&ctx](const Request&, const Principal&) {
                           auto devices = ctx.store->devices().List();
                           if (!devices) return ErrorResponse(devices.error());
                           json list = json::array();
                           for (auto& d : *devices) list.push_back(DeviceJson(ctx, d, false));
                           return Response::Json(200, json{{"devices", list}}.dump());
                         }));
  router.Add("GET", "/api/v1/devices/{name}",
             RequireRole(ctx, {"admin", "operator", "auditor", "approver"},
                         [&ctx](const Request& req, const Principal&) {
                           auto d = ctx.store->devices().GetByName(req.params.at("name"));
                           if (!d) return ErrorResponse(d.error().WithContext("device " + req.params.at("name")));
                           return Response::Json(200, DeviceJson(ctx, *d, true).dump());
                         }));
  router.Add(
      "POST", "/api/v1/devices",
      RequireRole(ctx, {"admin", "operator"}, [&ctx](const Request& req, const Principal& who) {
        if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());  // fail closed
        auto body = ParseBody(req.body, {"name", "site", "tags", "bind_machine", "enrollment_ttl"});
        if (!body) return ErrorResponse(body.error());
        auto name = StringField(*body, "name", true);
        auto site = StringField(*body, "site", true);
        auto tags = StringListField(*body, "tags");
        auto bind = BoolField(*body, "bind_machine", false);
        auto ttl_text = StringField(*body, "enrollment_ttl", false);
        for (const Error* e : {name ? nullptr : &name.error(), site ? nullptr : &site.error(),
                               tags ? nullptr : &tags.error(), bind ? nullptr : &bind.error(),
                               ttl_text ? nullptr : &ttl_text.error()}) {
          if (e) return ErrorResponse(*e);
        }
        if (!ValidName(*name)) {
          return Response::Error(400, "invalid_argument",
                                 "device name must be 1-64 characters of letters, digits, . - _");
        }
        if (!ValidName(*site)) {
          return Response::Error(400, "invalid_argument",
                                 "site must be 1-64 characters of letters, digits, . - _");
        }
        for (auto& t : *tags) {
          if (!ValidName(t)) {
            return Response::Error(400, "invalid_argument", "tag '" + t + "' is not a valid name");
          }
        }
        std::chrono::seconds ttl = ctx.config->enrollment_ttl;
        if (!ttl_text->empty()) {
          auto d = ParseDuration(*ttl_text);
          if (!d || d->count() < 1) return Response::Error(400, "invalid_argument", "enrollment_ttl is not a duration like 24h");
          ttl = *d;
        }
        storage::Device d;
        d.id = NewUuid();
        d.name = *name;
        d.site = *site;
        d.tags = *tags;
        d.bind_machine = *bind;
        d.created = ctx.clock->Now();
        if (auto r = ctx.store->devices().Create(d); !r) {
          return ErrorResponse(r.error().Is(Errc::kAlreadyExists)
                                   ? Error(Errc::kAlreadyExists, "device '" + *name + "' exists")
                                   : r.error());
        }
        auto enr = NewEnrollment(ctx, d, ttl);
        if (!enr) return ErrorResponse(enr.error());
        audit::Event e = MakeUserEvent(ctx, req, who, "device", "device.add");
        e.target = d.name;
        e.details = json{{"device_id", d.id}, {"site", d.site}, {"tags", d.tags},
                         {"reference", enr->reference}, {"bind_machine", d.bind_machine}}.dump();
        if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
        json out = DeviceJson(ctx, d, false);
        out["enrollment"] = EnrollmentJson(*enr);
        return Response::Json(201, out.dump());
      }));
  router.Add(
      "POST", "/api/v1/devices/{name}/enrollment",
      RequireRole(ctx, {"admin", "operator"}, [&ctx](const Request& req, const Principal& who) {
        if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());  // fail closed
        auto body = ParseBody(req.body, {"enrollment_ttl"});
        if (!body) return ErrorResponse(body.error());
        auto d = ctx.store->devices().GetByName(req.params.at("name"));
        if (!d) return ErrorResponse(d.error().WithContext("device " + req.params.at("name")));
        if (d->status == "revoked") {
          return Response::Error(409, "failed_precondition",
                                 "device '" + d->name + "' is revoked; add it again under a new name");
        }
        auto enr = NewEnrollment(ctx, *d, ctx.config->enrollment_ttl);
        if (!enr) return ErrorResponse(enr.error());
        audit::Event e = MakeUserEvent(ctx, req, who, "device", "device.enrollment_secret");
        e.target = d->name;
        e.details = json{{"device_id", d->id}, {"reference", enr->reference}}.dump();
        if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
        return Response::Json(201, json{{"enrollment", EnrollmentJson(*enr)}}.dump());
      }));
  router.Add(
      "POST", "/api/v1/devices/{name}/revoke",
      RequireRole(ctx, {"admin", "operator"},
                  [&ctx, &pki](const Request& req, const Principal& who) {
                    if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());  // fail closed
                    auto body = ParseBody(req.body, {"reason"});
                    if (!body) return ErrorResponse(body.error());
                    auto reason = StringField(*body, "reason", true);
                    if (!reason) return ErrorResponse(reason.error());
                    auto d = ctx.store->devices().GetByName(req.params.at("name"));
                    if (!d) return ErrorResponse(d.error().WithContext("device " + req.params.at("name")));
                    int code = RevocationReasonCode(*reason);
                    auto n = pki.RevokeDevice(*d, code < 0 ? 0 : code);
                    audit::Event e = MakeUserEvent(ctx, req, who, "device", "device.revoke");
                    e.target = d->name;
                    e.reason = *reason;
                    e.result = n ? audit::Result::kSuccess : audit::Result::kFailure;
                    e.details = json{{"device_id", d->id},
                                     {"certificates_revoked", n ? *n : 0},
                                     {"crl_reason", code < 0 ? 0 : code}}.dump();
                    auto a = Audit(ctx, e);
                    if (!n) return ErrorResponse(n.error());
                    if (!a) return ErrorResponse(a.error());
                    return Response::Json(200, json{{"device", d->name},
                                                    {"status", "revoked"},
                                                    {"certificates_revoked", *n}}.dump());
                  }));

  // --- audit ---
  router.Add("GET", "/api/v1/audit",
             RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request& req, const Principal& who) {
               audit::Query q;
               auto get = [&](const char* k) {
                 auto it = req.query.find(k);
                 return it == req.query.end() ? std::string() : it->second;
               };
               q.actor = get("actor");
               q.target = get("target");
               q.type_prefix = get("type");
               q.category = get("category");
               if (auto s = get("since"); !s.empty()) {
                 TimePoint t;
                 if (!ParseRfc3339(s, t)) return Response::Error(400, "invalid_argument", "since must be RFC 3339");
                 q.since = t;
               }
               if (auto s = get("until"); !s.empty()) {
                 TimePoint t;
                 if (!ParseRfc3339(s, t)) return Response::Error(400, "invalid_argument", "until must be RFC 3339");
                 q.until = t;
               }
               if (auto s = get("limit"); !s.empty()) {
                 try { q.limit = std::clamp(std::stoi(s), 1, 10000); } catch (...) {
                   return Response::Error(400, "invalid_argument", "limit must be a number");
                 }
               }
               auto events = ctx.store->audit().Find(q);
               if (!events) return ErrorResponse(events.error());
               // Reading the audit trail is itself audited.
               audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.read");
               e.details = json{{"query", req.target}, {"returned", events->size()}}.dump();
               if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
               std::string out = "{\"events\":[";
               for (size_t i = 0; i < events->size(); ++i) {
                 if (i) out += ",";
                 out += audit::ToJson((*events)[i]);
               }
               out += "]}";
               return Response::Json(200, out);
             }));
}

}  // namespace torwart::server
