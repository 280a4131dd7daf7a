#include "context.hpp"

#include "torwart/core/log.hpp"

namespace torwart::server {

audit::Event MakeEvent(const Context& ctx, const http::Request& req, std::string category,
                       std::string type) {
  audit::Event e;
  e.time = ctx.clock->Now();
  e.actor_type = audit::ActorType::kAnonymous;
  e.source = req.peer;
  e.category = std::move(category);
  e.type = std::move(type);
  e.details = "{}";
  return e;
}

audit::Event MakeSystemEvent(const Context& ctx, std::string category, std::string type) {
  audit::Event e;
  e.time = ctx.clock->Now();
  e.actor_type = audit::ActorType::kSystem;
  e.actor = "torwartd";
  e.source = "local";
  e.category = std::move(category);
  e.type = std::move(type);
  e.details = "{}";
  return e;
}

Expected<void> AuditSystem(const Context& ctx, std::string category, std::string type,
                           std::string details) {
  audit::Event e = MakeSystemEvent(ctx, std::move(category), std::move(type));
  e.details = std::move(details);
  return Audit(ctx, std::move(e));
}

audit::Event MakeUserEvent(const Context& ctx, const http::Request& req, const Principal& who,
                           std::string category, std::string type) {
  audit::Event e = MakeEvent(ctx, req, std::move(category), std::move(type));
  e.actor_type = audit::ActorType::kUser;
  e.actor = who.name;
  e.organisation = who.organisation;
  return e;
}

Expected<void> Audit(const Context& ctx, audit::Event e) {
  std::string type = e.type;
  auto r = ctx.audit ? ctx.audit->Append(std::move(e)) : ctx.store->audit().Append(std::move(e));
  if (!r) {
    log::error("AUDIT FAILURE: could not record {}: {}", type, r.error().message());
    // One clear error for every caller: the action is refused because it cannot be recorded.
    return MakeError(Errc::kUnavailable, "audit trail unavailable (" + r.error().message() +
                                             "); refused: the action cannot be recorded");
  }
  return r;
}

Expected<void> AuditAvailable(const Context& ctx) {
  if (!ctx.audit_available) return {};
  return ctx.audit_available();
}

http::Response ErrorResponse(const Error& e) {
  int status = 500;
  std::string code = "internal";
  auto c = e.code();
  auto is = [&](Errc x) { return c == make_error_code(x); };
  if (is(Errc::kInvalidArgument) || is(Errc::kParse)) { status = 400; code = "invalid_argument"; }
  else if (is(Errc::kNotFound)) { status = 404; code = "not_found"; }
  else if (is(Errc::kAlreadyExists)) { status = 409; code = "already_exists"; }
  else if (is(Errc::kUnauthenticated)) { status = 401; code = "unauthenticated"; }
  else if (is(Errc::kPermissionDenied)) { status = 403; code = "permission_denied"; }
  else if (is(Errc::kFailedPrecondition)) { status = 409; code = "failed_precondition"; }
  else if (is(Errc::kExpired)) { status = 403; code = "expired"; }
  else if (is(Errc::kRevoked)) { status = 403; code = "revoked"; }
  else if (is(Errc::kResourceExhausted)) { status = 413; code = "resource_exhausted"; }
  else if (is(Errc::kUnavailable)) { status = 503; code = "unavailable"; }
  if (status == 500) log::error("internal error: {}", e.message());
  return http::Response::Error(status, code, e.message());
}

}  // namespace torwart::server
