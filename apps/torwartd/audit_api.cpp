#include "audit_api.hpp"

#include <charconv>
#include <nlohmann/json.hpp>

#include "auth.hpp"
#include "json_util.hpp"

namespace torwart::server {
namespace {

using http::Request;
using http::Response;
using nlohmann::json;

std::string QueryValue(const Request& req, const char* key) {
  auto it = req.query.find(key);
  return it == req.query.end() ? std::string() : it->second;
}

Expected<std::optional<TimePoint>> OptionalTime(const std::string& text, const char* what) {
  if (text.empty()) return std::optional<TimePoint>();
  TimePoint t;
  if (!ParseRfc3339(text, t)) {
    return MakeError(Errc::kInvalidArgument, std::string(what) + " must be an RFC 3339 time");
  }
  return std::optional<TimePoint>(t);
}

json HoldJson(const storage::AuditHold& h) {
  json j{{"id", h.id},
         {"category", h.category},
         {"target", h.target},
         {"reason", h.reason},
         {"created_by", h.created_by},
         {"created", FormatRfc3339(h.created)}};
  if (h.since) j["since"] = FormatRfc3339(*h.since);
  if (h.until) j["until"] = FormatRfc3339(*h.until);
  return j;
}

json CheckpointJson(const audit::Checkpoint& c) {
  return {{"seq", c.seq},
          {"hash", c.hash},
          {"time", FormatRfc3339(c.time)},
          {"key_id", c.key_id},
          {"signature", c.signature}};
}

}  // namespace

void RegisterAuditApi(Context& ctx, AuditService& audit, http::Router& router) {
  // Unauthenticated liveness for load balancers and monitoring: flags only, no details.
  router.Add("GET", "/api/v1/health", [&audit](const Request&) -> Response {
    AuditHealth h = audit.Health();
    bool ok = h.writable;
    json j{{"status", ok ? "ok" : "degraded"},
           {"audit",
            {{"writable", h.writable},
             {"capacity_warning", h.capacity_warning},
             {"forwarding", h.forwarding},
             {"forwarder_connected", h.forwarder_connected}}}};
    return Response::Json(ok ? 200 : 503, j.dump());
  });

  router.Add("GET", "/api/v1/audit/status",
             RequireRole(ctx, {"admin", "auditor"}, [&audit](const Request&, const Principal&) {
               AuditHealth h = audit.Health();
               json j{{"writable", h.writable},
                      {"error", h.error},
                      {"refused_events", h.refused_events},
                      {"capacity_warning", h.capacity_warning},
                      {"used_bytes", h.used_bytes},
                      {"capacity_bytes", h.capacity_bytes},
                      {"head_seq", h.head_seq},
                      {"forwarding", h.forwarding},
                      {"forwarder_connected", h.forwarder_connected},
                      {"forwarded_seq", h.forwarded_seq},
                      {"forwarder_error", h.forwarder_error},
                      {"key_id", audit.signer().key_id()}};
               if (h.failing_since) j["failing_since"] = FormatRfc3339(*h.failing_since);
               return Response::Json(200, j.dump());
             }));

  router.Add("GET", "/api/v1/audit/verify",
             RequireRole(ctx, {"admin", "auditor"},
                         [&ctx, &audit](const Request& req, const Principal& who) {
                           auto report = audit.Verify();
                           if (!report) return ErrorResponse(report.error());
                           audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.verify");
                           e.result = report->ok() ? audit::Result::kSuccess
                                                   : audit::Result::kFailure;
                           e.details = json{{"records", report->records},
                                            {"problems", report->problems.size()},
                                            {"anchored_through", report->anchored_through}}
                                           .dump();
                           if (!report->ok()) e.reason = report->problems[0].message;
                           if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
                           return Response::Json(200, audit::ToJson(*report));
                         }));

  router.Add(
      "GET", "/api/v1/audit/export",
      RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request& req, const Principal& who) {
        audit::Query q;
        q.actor = QueryValue(req, "actor");
        q.target = QueryValue(req, "target");
        q.type_prefix = QueryValue(req, "type");
        q.category = QueryValue(req, "category");
        auto since = OptionalTime(QueryValue(req, "since"), "since");
        auto until = OptionalTime(QueryValue(req, "until"), "until");
        if (!since) return ErrorResponse(since.error());
        if (!until) return ErrorResponse(until.error());
        q.since = *since;
        q.until = *until;
        q.limit = 5000;
        // Reading the audit trail is itself audited, before the data leaves.
        audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.export");
        e.details = json{{"query", req.target}}.dump();
        if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
        std::string out;
        while (true) {
          auto page = ctx.store->audit().Find(q);
          if (!page) return ErrorResponse(page.error());
          for (const audit::Event& ev : *page) {
            out += audit::ToJson(ev);
            out += '\n';
          }
          if (static_cast<int>(page->size()) < q.limit) break;
          q.after_seq = page->back().seq;
        }
        Response r;
        r.status = 200;
        r.content_type = "application/x-ndjson";
        r.body = std::move(out);
        return r;
      }));

  router.Add("POST", "/api/v1/audit/checkpoint",
             RequireRole(ctx, {"admin"}, [&audit](const Request&, const Principal&) {
               auto cp = audit.CheckpointNow();
               if (!cp) return ErrorResponse(cp.error());
               return Response::Json(200, CheckpointJson(*cp).dump());
             }));

  router.Add("POST", "/api/v1/audit/retention",
             RequireRole(ctx, {"admin"}, [&ctx, &audit](const Request& req, const Principal& who) {
               if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());
               audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.retention_run");
               if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
               auto results = audit.RunRetention();
               if (!results) return ErrorResponse(results.error());
               int64_t purged = 0, held = 0;
               for (const auto& r : *results) {
                 purged += r.count;
                 held += r.held;
               }
               return Response::Json(200, json{{"purged", purged}, {"held", held}}.dump());
             }));

  router.Add("GET", "/api/v1/audit/holds",
             RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request&, const Principal&) {
               auto holds = ctx.store->audit().ListHolds();
               if (!holds) return ErrorResponse(holds.error());
               json list = json::array();
               for (const auto& h : *holds) list.push_back(HoldJson(h));
               return Response::Json(200, json{{"holds", list}}.dump());
             }));

  router.Add(
      "POST", "/api/v1/audit/holds",
      RequireRole(ctx, {"admin", "auditor"}, [&ctx](const Request& req, const Principal& who) {
        auto body = ParseBody(req.body, {"category", "target", "since", "until", "reason"});
        if (!body) return ErrorResponse(body.error());
        auto category = StringField(*body, "category", false);
        auto target = StringField(*body, "target", false);
        auto since_text = StringField(*body, "since", false);
        auto until_text = StringField(*body, "until", false);
        auto reason = StringField(*body, "reason", true);
        for (const auto* f : {&category, &target, &since_text, &until_text, &reason}) {
          if (!*f) return ErrorResponse(f->error());
        }
        auto since = OptionalTime(*since_text, "since");
        auto until = OptionalTime(*until_text, "until");
        if (!since) return ErrorResponse(since.error());
        if (!until) return ErrorResponse(until.error());
        if (reason->empty()) {
          return Response::Error(400, "invalid_argument", "a legal hold needs a reason");
        }
        if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());
        storage::AuditHold h;
        h.category = *category;
        h.target = *target;
        h.since = *since;
        h.until = *until;
        h.reason = *reason;
        h.created_by = who.name;
        h.created = ctx.clock->Now();
        auto id = ctx.store->audit().AddHold(h);
        if (!id) return ErrorResponse(id.error());
        h.id = *id;
        audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.hold.add");
        e.target = h.target.empty() ? h.category : h.target;
        e.reason = h.reason;
        e.details = HoldJson(h).dump();
        if (auto r = Audit(ctx, e); !r) {
          (void)ctx.store->audit().RemoveHold(*id);
          return ErrorResponse(r.error());
        }
        return Response::Json(201, HoldJson(h).dump());
      }));

  router.Add("DELETE", "/api/v1/audit/holds/{id}",
             RequireRole(ctx, {"admin", "auditor"},
                         [&ctx](const Request& req, const Principal& who) {
                           const std::string& text = req.params.at("id");
                           int64_t id = 0;
                           auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
                           if (ec != std::errc() || end != text.data() + text.size()) {
                             return Response::Error(400, "invalid_argument", "hold id must be a number");
                           }
                           if (auto ok = AuditAvailable(ctx); !ok) return ErrorResponse(ok.error());
                           // Audit first: a hold must never disappear without a record.
                           audit::Event e = MakeUserEvent(ctx, req, who, "audit", "audit.hold.remove");
                           e.target = text;
                           e.details = json{{"id", id}}.dump();
                           if (auto r = Audit(ctx, e); !r) return ErrorResponse(r.error());
                           if (auto r = ctx.store->audit().RemoveHold(id); !r) return ErrorResponse(r.error());
                           return Response::Json(200, json{{"removed", id}}.dump());
                         }));
}

}  // namespace torwart::server
