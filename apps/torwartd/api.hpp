// REST handlers for devices and the audit table (see api/openapi.yaml); sessions and users are
// in users_api.hpp.
#pragma once

#include <nlohmann/json.hpp>

#include "context.hpp"
#include "pki_service.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

void RegisterApi(Context& ctx, PkiService& pki, http::Router& router);

// A device as GET /api/v1/devices/{name} shows it (`with_certs`: the detailed form).
nlohmann::json DeviceJsonFor(Context& ctx, const storage::Device& d, bool with_certs);

}  // namespace torwart::server
