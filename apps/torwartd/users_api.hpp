// REST handlers for identity: login (password + TOTP), logout, password change, the own
// profile, MFA enrolment, and user administration (see api/openapi.yaml). Stateless; the
// handlers are thread-safe because AuthService and the Store are.
#pragma once

#include "context.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

void RegisterIdentityApi(Context& ctx, http::Router& router);

}  // namespace torwart::server
