#include "reports.hpp"

#include <algorithm>

#include "access.hpp"
#include "auth.hpp"

namespace torwart::server {

namespace {
constexpr size_t kAuditPage = 5000;  // audit events read per query
}  // namespace

// --- gathering ---

ReportHeader ReportService::Header(const Principal& who, bool redact) const {
  ReportHeader h;
  h.generated = ctx_.clock->Now();
  h.generated_by = who.name;
  h.organisation = ctx_.config ? ctx_.config->organisation : std::string();
  h.redact = redact;
  return h;
}

ReportEvidence ReportService::Evidence() {
  ReportEvidence ev;
  if (verify_) {
    auto v = verify_();
    if (v) {
      ev.verify = std::move(*v);
    } else {
      ev.verify_error = v.error().message();
    }
  } else {
    ev.verify_error = "no verifier configured";
  }
  if (auto cps = ctx_.store->audit().Checkpoints(); cps && !cps->empty()) {
    ev.latest_checkpoint = *std::max_element(
        cps->begin(), cps->end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  }
  if (auto head = ctx_.store->audit().Head()) ev.head_seq = head->first;
  return ev;
}

namespace {

bool SeesEveryReport(const std::string& role) { return role == "admin" || role == "auditor"; }

bool ValidSiteName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

Expected<void> AuditReport(const Context& ctx, const http::Request& req, const Principal& who,
                           const std::string& target, nlohmann::json details) {
  audit::Event e = MakeUserEvent(ctx, req, who, "audit", "report.generated");
  e.target = target;
  e.details = details.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return Audit(ctx, std::move(e));
}

// Users' organisations and devices' names, loaded once per report.
struct Directory {
  std::map<std::string, std::string> organisations;  // user -> organisation
  std::map<std::string, std::string> device_names;   // id -> name
  std::map<std::string, std::string> device_sites;   // name -> site
};

Expected<Directory> LoadDirectory(storage::Store& store) {
  Directory d;
  auto users = store.users().List();
  if (!users) return MakeError(users.error());
  for (const auto& u : *users) d.organisations[u.name] = u.organisation;
  auto devices = store.devices().List();
  if (!devices) return MakeError(devices.error());
  for (const auto& x : *devices) {
    d.device_names[x.id] = x.name;
    d.device_sites[x.name] = x.site;
  }
  return d;
}

// Every session matching `range` (oldest first), at most kMaxReportSessions; `truncated` says
// whether more exist.
Expected<std::vector<storage::TunnelSession>> AllSessions(storage::Store& store,
                                                          storage::SessionRange range,
                                                          bool& truncated) {
  std::vector<storage::TunnelSession> out;
  truncated = false;
  constexpr int kPage = 5000;
  while (true) {
    range.limit = kPage;
    auto page = store.reports().Sessions(range);
    if (!page) return MakeError(page.error());
    for (auto& s : *page) {
      if (out.size() >= kMaxReportSessions) {
        truncated = true;
        return out;
      }
      out.push_back(std::move(s));
    }
    if (static_cast<int>(page->size()) < kPage) return out;
    range.after = std::make_pair(out.back().opened, out.back().id);
  }
}

Expected<void> AddRecordings(storage::Store& store,
                             const std::vector<storage::TunnelSession>& sessions,
                             std::map<std::string, storage::StoredRecording>& out) {
  for (const auto& s : sessions) {
    auto r = store.recordings().Get(s.id);
    if (r) {
      out[s.id] = std::move(*r);
    } else if (!r.error().Is(Errc::kNotFound)) {
      return MakeError(r.error());
    }
  }
  return {};
}

}  // namespace

Expected<ReportJson> ReportService::Monthly(const http::Request& req, const Principal& who,
                                            const std::string& site, const ReportMonth& month,
                                            bool redact) {
  if (!SeesEveryReport(who.role)) {
    return MakeError(Errc::kPermissionDenied, "monthly reports are for admins and auditors");
  }
  if (!ValidSiteName(site)) {
    return MakeError(Errc::kInvalidArgument, "site must be a site name (letters, digits, - _ .)");
  }
  // Reading the trail is itself recorded, before anything is read (fail closed).
  if (auto ok = AuditReport(
          ctx_, req, who, site,
          {{"kind", "monthly"}, {"site", site}, {"month", month.text}, {"redact", redact}});
      !ok) {
    return MakeError(ok.error());
  }
  storage::Store& store = *ctx_.store;
  MonthlyInput in;
  in.site = site;
  in.month = month;
  in.header = Header(who, redact);
  auto dir = LoadDirectory(store);
  if (!dir) return MakeError(dir.error());
  in.organisations = dir->organisations;
  in.device_names = dir->device_names;
  for (const auto& [name, s] : dir->device_sites) {
    if (s == site) in.site_devices.insert(name);
  }

  storage::SessionRange range;
  range.from = month.begin;
  range.until = month.end;
  range.site = site;
  auto sessions = AllSessions(store, range, in.sessions_truncated);
  if (!sessions) return MakeError(sessions.error());
  in.sessions = std::move(*sessions);
  // The site's gateways: registered at the site, or carried a session to it this month.
  for (const auto& s : in.sessions) {
    if (auto it = in.device_names.find(s.device_id); it != in.device_names.end()) {
      in.site_devices.insert(it->second);
    }
  }

  auto ids = store.reports().AccessRequestIds(site, month.begin, month.end,
                                              static_cast<int>(kMaxReportEvents) + 1);
  if (!ids) return MakeError(ids.error());
  if (ids->size() > kMaxReportEvents) {
    ids->resize(kMaxReportEvents);
    in.requests_truncated = true;
  }
  auto load_grant = [&](const std::string& id) -> Expected<void> {
    if (id.empty() || in.grants.count(id)) return {};
    auto r = store.access().Get(id);
    if (!r) return r.error().Is(Errc::kNotFound) ? Expected<void>{} : MakeError(r.error());
    in.grant_states[id] = access_.State(*r);
    in.grants.emplace(id, std::move(*r));
    return {};
  };
  for (const auto& id : *ids) {
    if (auto ok = load_grant(id); !ok) return MakeError(ok.error());
    if (auto it = in.grants.find(id); it != in.grants.end()) in.requests.push_back(it->second);
  }
  for (const auto& s : in.sessions) {
    if (auto ok = load_grant(s.grant_id); !ok) return MakeError(ok.error());
  }
  if (auto ok = AddRecordings(store, in.sessions, in.recordings); !ok) return MakeError(ok.error());

  // The month's stream, access and device events (each category has a time index); only those
  // about this site are kept, up to kMaxReportEvents per list.
  for (const char* category : {"access", "stream", "device"}) {
    audit::Query q;
    q.since = month.begin;
    q.until = month.end;
    q.category = category;
    q.limit = static_cast<int>(kAuditPage);
    while (true) {
      auto page = store.audit().Find(q);
      if (!page) return MakeError(page.error());
      for (auto& e : *page) {
        std::string kind = MonthlyEventKind(e, site, in.site_devices);
        if (kind.empty()) continue;
        if (++in.event_counts[kind] <= static_cast<int64_t>(kMaxReportEvents)) {
          in.events.push_back(std::move(e));
        }
      }
      if (page->size() < kAuditPage) break;
      q.after_seq = page->back().seq;
    }
  }
  std::sort(in.events.begin(), in.events.end(),
            [](const audit::Event& a, const audit::Event& b) { return a.seq < b.seq; });
  in.evidence = Evidence();
  return BuildMonthlyReport(in);
}

Expected<ReportJson> ReportService::Subject(const http::Request& req, const Principal& who,
                                            const std::string& user, bool redact) {
  if (!SeesEveryReport(who.role) && user != who.name) {
    return MakeError(Errc::kPermissionDenied,
                     "only admins and auditors see the report of another person");
  }
  storage::Store& store = *ctx_.store;
  auto u = store.users().GetByName(user);
  if (!u) {
    if (u.error().Is(Errc::kNotFound)) return MakeError(Errc::kNotFound, "no such user");
    return MakeError(u.error());
  }
  if (auto ok = AuditReport(ctx_, req, who, user,
                            {{"kind", "subject"}, {"subject", user}, {"redact", redact}});
      !ok) {
    return MakeError(ok.error());
  }
  SubjectInput in;
  in.user = *u;
  in.header = Header(who, redact);
  if (auto m = store.mfa().Get(u->id)) {
    in.mfa = m->active;
  } else if (!m.error().Is(Errc::kNotFound)) {
    return MakeError(m.error());
  }
  auto dir = LoadDirectory(store);
  if (!dir) return MakeError(dir.error());
  in.organisations = dir->organisations;
  in.device_names = dir->device_names;

  auto requests = store.access().List(user, "", static_cast<int>(kMaxReportEvents) + 1);
  if (!requests) return MakeError(requests.error());
  if (requests->size() > kMaxReportEvents) {
    requests->resize(kMaxReportEvents);
    in.requests_truncated = true;
  }
  std::reverse(requests->begin(), requests->end());  // oldest first
  for (auto& r : *requests) {
    if (r.requester != user) continue;
    in.grant_states[r.id] = access_.State(r);
    in.requests.push_back(std::move(r));
  }

  storage::SessionRange range;
  range.user = user;
  auto sessions = AllSessions(store, range, in.sessions_truncated);
  if (!sessions) return MakeError(sessions.error());
  in.sessions = std::move(*sessions);
  if (auto ok = AddRecordings(store, in.sessions, in.recordings); !ok) return MakeError(ok.error());

  // One pass over the whole trail: the person may be actor, target or named in the details.
  audit::Query q;
  q.limit = static_cast<int>(kAuditPage);
  while (true) {
    auto page = store.audit().Find(q);
    if (!page) return MakeError(page.error());
    for (auto& e : *page) {
      if (SubjectRelation(e, user).empty()) continue;
      ++in.event_counts[e.type];
      if (in.events.size() < kMaxReportEvents) {
        in.events.push_back(std::move(e));
      } else {
        in.events_truncated = true;
      }
    }
    if (page->size() < kAuditPage) break;
    q.after_seq = page->back().seq;
  }
  if (ctx_.config) {
    for (const auto& [category, keep] : ctx_.config->audit.retention) {
      in.retention.emplace_back(category, keep);
    }
    in.siem = ctx_.config->audit.syslog.address;
  }
  in.evidence = Evidence();
  return BuildSubjectReport(in);
}

// --- REST ---

namespace {

std::string QueryValue(const http::Request& req, const char* key) {
  auto it = req.query.find(key);
  return it == req.query.end() ? std::string() : it->second;
}

Expected<bool> RedactFlag(const http::Request& req) {
  const std::string v = QueryValue(req, "redact");
  if (v.empty() || v == "false" || v == "0") return false;
  if (v == "true" || v == "1") return true;
  return MakeError(Errc::kInvalidArgument, "redact must be true or false");
}

http::Response Respond(const http::Request& req, const Expected<ReportJson>& report) {
  if (!report) return ErrorResponse(report.error());
  if (QueryValue(req, "format") == "html") {
    http::Response r;
    r.status = 200;
    r.content_type = "text/html; charset=utf-8";
    r.body = RenderReportHtml(*report);
    // The page needs nothing but its inline style; no script may ever run in it.
    r.headers["content-security-policy"] =
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";
    r.headers["x-content-type-options"] = "nosniff";
    return r;
  }
  return http::Response::Json(200,
                              report->dump(-1, ' ', false, ReportJson::error_handler_t::replace));
}

Expected<void> CheckFormat(const http::Request& req) {
  const std::string f = QueryValue(req, "format");
  if (f.empty() || f == "json" || f == "html") return {};
  return MakeError(Errc::kInvalidArgument, "format must be json or html");
}

}  // namespace

void RegisterReportApi(Context& ctx, ReportService& reports, http::Router& router) {
  router.Add("GET", "/api/v1/reports/monthly",
             RequireRole(ctx, {"admin", "auditor"},
                         [&reports](const http::Request& req, const Principal& who) {
                           if (auto ok = CheckFormat(req); !ok) return ErrorResponse(ok.error());
                           auto redact = RedactFlag(req);
                           if (!redact) return ErrorResponse(redact.error());
                           const std::string site = QueryValue(req, "site");
                           if (site.empty()) {
                             return http::Response::Error(400, "invalid_argument",
                                                          "site is required (?site=S)");
                           }
                           auto month = ParseReportMonth(QueryValue(req, "month"));
                           if (!month) return ErrorResponse(month.error());
                           return Respond(req, reports.Monthly(req, who, site, *month, *redact));
                         }));
  // Everyone may ask for their own report; the service refuses others' to non-auditors.
  router.Add("GET", "/api/v1/reports/subject",
             RequireRole(ctx, {"admin", "operator", "approver", "technician", "auditor", "vendor"},
                         [&reports](const http::Request& req, const Principal& who) {
                           if (auto ok = CheckFormat(req); !ok) return ErrorResponse(ok.error());
                           auto redact = RedactFlag(req);
                           if (!redact) return ErrorResponse(redact.error());
                           std::string user = QueryValue(req, "user");
                           if (user.empty()) user = who.name;
                           return Respond(req, reports.Subject(req, who, user, *redact));
                         }));
}

}  // namespace torwart::server
