// REST handlers for devices and the audit table (see api/openapi.yaml); sessions and users are
// in users_api.hpp.
#pragma once

#include "context.hpp"
#include "pki_service.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

void RegisterApi(Context& ctx, PkiService& pki, http::Router& router);

}  // namespace torwart::server
