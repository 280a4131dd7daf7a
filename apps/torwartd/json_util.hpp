// Strict helpers for JSON request bodies: unknown fields and wrong types are errors.
// Header-only; no state.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "torwart/core/error.hpp"

namespace torwart::server {

inline Expected<nlohmann::json> ParseBody(const std::string& body,
                                          std::initializer_list<const char*> allowed) {
  if (body.empty()) return nlohmann::json::object();
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return MakeError(Errc::kInvalidArgument, "request body is not valid JSON");
  if (!j.is_object()) return MakeError(Errc::kInvalidArgument, "request body must be a JSON object");
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!ok.count(it.key())) {
      return MakeError(Errc::kInvalidArgument, "unknown field '" + it.key() + "'");
    }
  }
  return j;
}

inline Expected<std::string> StringField(const nlohmann::json& j, const char* key, bool required,
                                         std::string def = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return MakeError(Errc::kInvalidArgument, std::string("field '") + key + "' is required");
    return def;
  }
  if (!it->is_string()) return MakeError(Errc::kInvalidArgument, std::string("field '") + key + "' must be a string");
  return it->get<std::string>();
}

inline Expected<bool> BoolField(const nlohmann::json& j, const char* key, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) return MakeError(Errc::kInvalidArgument, std::string("field '") + key + "' must be true or false");
  return it->get<bool>();
}

inline Expected<std::vector<std::string>> StringListField(const nlohmann::json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) return MakeError(Errc::kInvalidArgument, std::string("field '") + key + "' must be a list of strings");
  for (auto& e : *it) {
    if (!e.is_string()) return MakeError(Errc::kInvalidArgument, std::string("field '") + key + "' must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace torwart::server
