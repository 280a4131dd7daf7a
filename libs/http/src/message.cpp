#include "torwart/http/message.hpp"

#include <nlohmann/json.hpp>

namespace torwart::http {

Response Response::Error(int status, std::string_view code, std::string_view message) {
  nlohmann::json j = {{"error", {{"code", code}, {"message", message}}}};
  // `replace` keeps invalid UTF-8 from a peer from turning into an exception here.
  return Json(status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Response Response::Json(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

}  // namespace torwart::http
