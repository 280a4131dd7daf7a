// REST endpoints of the audit trail beyond GET /api/v1/audit (api.cpp): verify, export (JSON
// lines), legal holds, retention run, checkpoint; and GET /api/v1/health. Handlers are
// thread-safe (they only call the thread-safe AuditService and store).
#pragma once

#include "audit_service.hpp"
#include "context.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

void RegisterAuditApi(Context& ctx, AuditService& audit, http::Router& router);

}  // namespace torwart::server
