#include <algorithm>
#include <set>

#include "torwart/http/server.hpp"
#include "uri.hpp"

namespace torwart::http {
namespace {

bool IsParam(const std::string& seg) {
  return seg.size() >= 2 && seg.front() == '{' && seg.back() == '}';
}

std::vector<std::string> SplitPattern(const std::string& pattern) {
  std::vector<std::string> out;
  size_t pos = pattern.empty() || pattern.front() != '/' ? 0 : 1;
  while (pos <= pattern.size()) {
    size_t slash = pattern.find('/', pos);
    out.push_back(
        pattern.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos));
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  if (out.size() == 1 && out[0].empty()) out.clear();
  return out;
}

// Literal segments beat parameters, decided at the first segment where two routes differ:
// "/devices/search" wins over "/devices/{name}".
bool MoreSpecific(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    bool la = !IsParam(a[i]);
    bool lb = !IsParam(b[i]);
    if (la != lb) return la;
  }
  return false;
}

}  // namespace

void Router::Add(std::string method, std::string pattern, Handler h) {
  routes_.push_back(Route{std::move(method), SplitPattern(pattern), std::move(h)});
}

Response Router::Dispatch(Request& req) const {
  std::vector<std::string> segments;
  if (!req.target.empty()) {
    auto split = internal::SplitOriginForm(req.target);
    if (!split) return Response::Error(400, "bad_request", "malformed request target");
    segments = std::move(split->segments);
  } else {
    segments = SplitPattern(req.path);  // already decoded: split only
  }

  const Route* best = nullptr;
  std::set<std::string> allowed;
  for (const Route& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    bool match = true;
    for (size_t i = 0; i < segments.size() && match; ++i) {
      match = IsParam(r.segments[i]) || r.segments[i] == segments[i];
    }
    if (!match) continue;
    if (r.method != req.method) {
      allowed.insert(r.method);
      continue;
    }
    if (best == nullptr || MoreSpecific(r.segments, best->segments)) best = &r;
  }

  if (best == nullptr) {
    if (allowed.empty()) return Response::Error(404, "not_found", "no such resource");
    std::string allow;
    for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    Response resp = Response::Error(405, "method_not_allowed",
                                    "method " + req.method + " not allowed; allowed: " + allow);
    resp.headers["Allow"] = allow;
    return resp;
  }
  req.params.clear();
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& p = best->segments[i];
    if (IsParam(p)) req.params[p.substr(1, p.size() - 2)] = segments[i];
  }
  return best->handler(req);
}

}  // namespace torwart::http
