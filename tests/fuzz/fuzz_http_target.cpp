// Fuzzes request-target parsing (percent-decoding, query strings) and route matching.
#include <cstddef>
#include <cstdint>
#include <string>

#include "torwart/http/server.hpp"
#include "uri.hpp"

using namespace torwart::http;

static Router& TheRouter() {
  static Router* r = [] {
    auto* router = new Router();
    auto ok = [](const Request& req) {
      Response resp;
      resp.body = req.path;
      for (auto& [k, v] : req.params) resp.body += k + v;
      return resp;
    };
    router->Add("GET", "/api/v1/devices", ok);
    router->Add("GET", "/api/v1/devices/{name}", ok);
    router->Add("POST", "/api/v1/devices/{name}/revoke", ok);
    router->Add("POST", "/.well-known/est/simpleenroll", ok);
    return router;
  }();
  return *r;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string target(reinterpret_cast<const char*>(data), size);
  auto split = internal::SplitOriginForm(target);
  if (!split) return 0;
  auto query = internal::ParseQuery(split->raw_query);
  Request req;
  req.method = (size % 2) ? "GET" : "POST";
  req.target = target;
  req.path = split->path;
  if (query) req.query = *query;
  (void)TheRouter().Dispatch(req);
  return 0;
}
