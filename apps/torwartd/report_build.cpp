#include "report_build.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "torwart/core/ids.hpp"

namespace torwart::server {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

constexpr char kMonthlySchema[] = "torwart.report.monthly/1";
constexpr char kSubjectSchema[] = "torwart.report.subject/1";

std::string Rfc(TimePoint t) { return FormatRfc3339(t); }

ReportJson OptTime(const std::optional<TimePoint>& t) {
  return t ? ReportJson(Rfc(*t)) : ReportJson(nullptr);
}

ReportJson DetailsOf(const audit::Event& e) {
  auto j = ReportJson::parse(e.details, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return ReportJson::object();
  return j;
}

std::string DetailString(const ReportJson& details, const char* key) {
  auto it = details.find(key);
  return it != details.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Replaces the names of persons by "person N" (stable within one report) when redacting;
// `keep` (the data subject) is never replaced.
class Namer {
 public:
  Namer(bool redact, std::string keep) : redact_(redact), keep_(std::move(keep)) {}
  std::string operator()(const std::string& name) {
    if (!redact_ || name.empty() || name == keep_) return name;
    auto [it, fresh] = names_.try_emplace(name);
    if (fresh) it->second = "person " + std::to_string(names_.size());
    return it->second;
  }
  bool redact() const { return redact_; }

 private:
  bool redact_;
  std::string keep_;
  std::map<std::string, std::string> names_;
};

std::string OrganisationOf(const std::map<std::string, std::string>& orgs,
                           const std::string& user) {
  auto it = orgs.find(user);
  return it == orgs.end() ? std::string() : it->second;
}

ReportJson HeaderJson(const ReportHeader& h, Namer& names) {
  return ReportJson{{"generated", Rfc(h.generated)},
                    {"generated_by", names(h.generated_by)},
                    {"organisation", h.organisation},
                    {"redacted", h.redact}};
}

ReportJson GrantJson(const storage::AccessRequest& r, const std::string& state,
                     const std::map<std::string, std::string>& orgs, Namer& names) {
  ReportJson approvals = ReportJson::array();
  for (const auto& a : r.approvals) {
    approvals.push_back({{"approver", names(a.approver)},
                         {"organisation", OrganisationOf(orgs, a.approver)},
                         {"at", Rfc(a.at)},
                         {"comment", a.comment}});
  }
  ReportJson j{{"id", r.id},
               {"requester", names(r.requester)},
               {"organisation", OrganisationOf(orgs, r.requester)},
               {"site", r.site},
               {"target", r.target},
               {"reason", r.reason},
               {"scopes", r.scopes},
               {"created", Rfc(r.created)},
               {"starts", OptTime(r.starts)},
               {"ends", OptTime(r.ends)},
               {"duration_seconds", r.duration.count()},
               {"state", state.empty() ? r.status : state},
               {"break_glass", r.break_glass},
               {"approvals_required", r.approvals_required},
               {"approvals", approvals},
               {"decided_by", names(r.decided_by)},
               {"decision_reason", r.decision_reason},
               {"decided_at", OptTime(r.decided_at)}};
  if (r.break_glass) {
    j["review"] = {{"group", r.review_group},
                   {"reviewed", r.reviewed_at.has_value()},
                   {"by", names(r.reviewed_by)},
                   {"at", OptTime(r.reviewed_at)},
                   {"comment", r.review_comment}};
  } else {
    j["review"] = nullptr;
  }
  return j;
}

ReportJson RecordingJson(const storage::StoredRecording& r) {
  return {{"id", r.id},
          {"status", r.status},
          {"verified", r.status == "verified"},
          {"problem", r.problem},
          {"size", r.size},
          {"sha256", r.sha256},
          {"uploaded", Rfc(r.uploaded)},
          {"started", OptTime(r.started)}};
}

struct SessionContext {
  const std::map<std::string, storage::AccessRequest>* grants = nullptr;  // may be null
  const std::map<std::string, std::string>* grant_states = nullptr;
  const std::map<std::string, storage::StoredRecording>* recordings = nullptr;
  const std::map<std::string, std::string>* device_names = nullptr;
  const std::map<std::string, std::string>* organisations = nullptr;
};

template <class Map>
const typename Map::mapped_type* Find(const Map* m, const typename Map::key_type& k) {
  if (m == nullptr) return nullptr;
  auto it = m->find(k);
  return it == m->end() ? nullptr : &it->second;
}

ReportJson SessionJson(const storage::TunnelSession& s, const SessionContext& c, Namer& names,
                       bool with_grant) {
  const std::string* device = Find(c.device_names, s.device_id);
  ReportJson j{{"id", s.id},
               {"user", names(s.user)},
               {"organisation", OrganisationOf(*c.organisations, s.user)},
               {"site", s.site},
               {"target", s.target},
               {"device", device ? *device : std::string()},
               {"device_id", s.device_id},
               {"client", names.redact() ? std::string() : s.client},
               {"opened", Rfc(s.opened)},
               {"closed", OptTime(s.closed)},
               {"duration_seconds",
                s.closed ? ReportJson(duration_cast<seconds>(*s.closed - s.opened).count())
                         : ReportJson(nullptr)},
               {"bytes_up", s.bytes_up},
               {"bytes_down", s.bytes_down},
               {"state", s.closed ? "ended" : "live"},
               {"end_reason", s.end_reason},
               {"grant_id", s.grant_id}};
  if (with_grant) {
    const storage::AccessRequest* g = Find(c.grants, s.grant_id);
    if (g != nullptr) {
      const std::string* state = Find(c.grant_states, s.grant_id);
      j["grant"] = GrantJson(*g, state ? *state : std::string(), *c.organisations, names);
    } else {
      j["grant"] = {{"id", s.grant_id}, {"missing", true}};
    }
  }
  const storage::StoredRecording* rec = Find(c.recordings, s.id);
  j["recording"] = rec ? RecordingJson(*rec) : ReportJson(nullptr);
  return j;
}

ReportJson EventJson(const audit::Event& e, Namer& names, bool person_targets,
                     const std::map<std::string, std::string>& device_names) {
  const bool person = e.actor_type == audit::ActorType::kUser;
  std::string device;
  if (e.actor_type == audit::ActorType::kDevice) {
    if (auto it = device_names.find(e.actor); it != device_names.end()) device = it->second;
  }
  ReportJson j{{"seq", e.seq},
               {"time", Rfc(e.time)},
               {"type", e.type},
               {"category", e.category},
               {"result", std::string(audit::ToString(e.result))},
               {"actor", person ? names(e.actor) : e.actor},
               {"actor_type", std::string(audit::ToString(e.actor_type))},
               {"actor_device", device},
               {"organisation", e.organisation},
               {"source", names.redact() && person ? std::string() : e.source},
               {"target", person_targets ? names(e.target) : e.target},
               {"reason", e.reason}};
  // Details may name anyone: left out of redacted reports.
  j["details"] = names.redact() ? ReportJson::object() : DetailsOf(e);
  return j;
}

ReportJson EvidenceJson(const ReportEvidence& ev) {
  ReportJson chain;
  if (ev.verify) {
    const audit::VerifyReport& v = *ev.verify;
    chain = {{"verified", true},
             {"ok", v.ok()},
             {"records", v.records},
             {"purged", v.purged},
             {"last_seq", v.last_seq},
             {"checkpoints", v.checkpoints},
             {"anchored_through", v.anchored_through},
             {"problems", v.problems.size()}};
    chain["first_problem"] = v.ok() ? ReportJson(nullptr)
                                    : ReportJson{{"seq", v.problems[0].seq},
                                                 {"kind", v.problems[0].kind},
                                                 {"message", v.problems[0].message}};
  } else {
    chain = {{"verified", false}, {"ok", false}, {"error", ev.verify_error}};
  }
  ReportJson j{{"audit_chain", chain}, {"head_seq", ev.head_seq}};
  if (ev.latest_checkpoint) {
    const audit::Checkpoint& c = *ev.latest_checkpoint;
    j["latest_checkpoint"] = {
        {"seq", c.seq}, {"time", Rfc(c.time)}, {"key_id", c.key_id}, {"hash", c.hash}};
  } else {
    j["latest_checkpoint"] = nullptr;
  }
  std::string statement;
  if (!ev.verify) {
    statement = "The audit trail could not be verified while this report was generated (" +
                ev.verify_error + "); treat its contents as unconfirmed.";
  } else if (!ev.verify->ok()) {
    statement = "THE AUDIT TRAIL FAILED VERIFICATION (" +
                std::to_string(ev.verify->problems.size()) + " problem(s), the first at seq " +
                std::to_string(ev.verify->problems[0].seq) +
                "): this report may rest on altered records.";
  } else {
    statement = "The audit trail verified intact: " + std::to_string(ev.verify->records) +
                " records through seq " + std::to_string(ev.verify->last_seq) + ", " +
                (ev.verify->anchored_through > 0
                     ? "anchored by signed checkpoints through seq " +
                           std::to_string(ev.verify->anchored_through) + "."
                     : std::string("not yet anchored by a signed checkpoint (one is signed "
                                   "every N events or T seconds, see [audit])."));
  }
  j["statement"] = statement;
  return j;
}

struct EventList {
  std::string key, title;
};
const EventList kMonthlyLists[] = {
    {"refused_requests", "Access requests refused by the policy"},
    {"refused_streams", "Refused stream attempts"},
    {"refused_modbus", "Refused Modbus requests"},
    {"kills", "Sessions killed"},
    {"quarantines", "Quarantine changes"},
};

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

Expected<ReportMonth> ParseReportMonth(std::string_view text) {
  auto bad = [&] {
    return MakeError(Errc::kInvalidArgument, "month must be YYYY-MM, e.g. 2026-03");
  };
  if (text.size() != 7 || text[4] != '-') return bad();
  for (size_t i = 0; i < text.size(); ++i) {
    if (i != 4 && (text[i] < '0' || text[i] > '9')) return bad();
  }
  const int year =
      (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 + (text[3] - '0');
  const unsigned month = static_cast<unsigned>((text[5] - '0') * 10 + (text[6] - '0'));
  if (year < 1970 || month < 1 || month > 12) return bad();
  using namespace std::chrono;
  const year_month first{std::chrono::year{year}, std::chrono::month{month}};
  const year_month next = first + months{1};
  ReportMonth m;
  m.text = std::string(text);
  m.begin = TimePoint(sys_days(first / 1));
  m.end = TimePoint(sys_days(next / 1));
  return m;
}

std::string MonthlyEventKind(const audit::Event& e, const std::string& site,
                             const std::set<std::string>& site_devices) {
  const std::string prefix = site + "/";
  const bool at_site = StartsWith(e.target, prefix);
  if ((e.type == "access.request" || e.type == "access.break_glass") &&
      e.result == audit::Result::kDenied) {
    return at_site ? "refused_requests" : "";
  }
  if (e.type == "tunnel.refused") return at_site ? "refused_streams" : "";
  if (e.type == "tunnel.kill") return at_site ? "kills" : "";
  if (e.type == "device.quarantine" || e.type == "device.release") {
    return site_devices.count(e.target) ? "quarantines" : "";
  }
  if (e.type == "agent.tunnel.stream_refused" || e.type == "agent.tunnel.request_refused") {
    if (DetailString(DetailsOf(e), "site") != site) return "";
    return e.type == "agent.tunnel.stream_refused" ? "refused_streams" : "refused_modbus";
  }
  return "";
}

std::string SubjectRelation(const audit::Event& e, const std::string& name) {
  if (name.empty()) return "";
  if (e.actor_type == audit::ActorType::kUser && e.actor == name) return "actor";
  if (e.target == name) return "target";
  if (e.details.find(name) == std::string::npos) return "";  // cheap test before parsing
  ReportJson d = DetailsOf(e);
  for (const char* key : {"user", "requester"}) {
    if (DetailString(d, key) == name) return "subject";
  }
  return "";
}

ReportJson BuildMonthlyReport(const MonthlyInput& in) {
  Namer names(in.header.redact, "");
  ReportJson j;
  j["schema"] = kMonthlySchema;
  j["kind"] = "monthly";
  j["site"] = in.site;
  j["month"] = in.month.text;
  j["period"] = {{"from", Rfc(in.month.begin)},
                 {"until", Rfc(in.month.end)},
                 {"time_zone", "UTC"},
                 {"rule",
                  "a session belongs to the calendar month (UTC) in which it was opened, also "
                  "when it ended in a later month"}};
  j["header"] = HeaderJson(in.header, names);
  j["evidence"] = EvidenceJson(in.evidence);
  j["totals"] = nullptr;  // filled below; placed here so it comes first

  SessionContext c{&in.grants, &in.grant_states, &in.recordings, &in.device_names,
                   &in.organisations};
  ReportJson sessions = ReportJson::array();
  std::set<std::string> users, targets;
  int64_t up = 0, down = 0, seconds_total = 0, live = 0, break_glass = 0, unreviewed = 0;
  int64_t recorded = 0, verified = 0;
  for (const auto& s : in.sessions) {
    users.insert(s.user);
    targets.insert(s.target);
    up += s.bytes_up;
    down += s.bytes_down;
    if (s.closed) {
      seconds_total += duration_cast<seconds>(*s.closed - s.opened).count();
    } else {
      ++live;
    }
    if (const auto* g = Find(&in.grants, s.grant_id); g && g->break_glass) {
      ++break_glass;
      if (!g->reviewed_at) ++unreviewed;
    }
    if (const auto* r = Find(&in.recordings, s.id)) {
      ++recorded;
      if (r->status == "verified") ++verified;
    }
    sessions.push_back(SessionJson(s, c, names, true));
  }
  j["sessions"] = std::move(sessions);

  ReportJson requests = ReportJson::array();
  int64_t issued = 0, denied = 0, pending = 0;
  for (const auto& r : in.requests) {
    const std::string* state = Find(&in.grant_states, r.id);
    if (r.starts) ++issued;
    if (r.status == "denied") ++denied;
    if (r.status == "pending") ++pending;
    requests.push_back(GrantJson(r, state ? *state : std::string(), in.organisations, names));
  }
  j["access_requests"] = std::move(requests);

  std::map<std::string, ReportJson> lists;
  for (const auto& l : kMonthlyLists) lists[l.key] = ReportJson::array();
  for (const auto& e : in.events) {
    std::string kind = MonthlyEventKind(e, in.site, in.site_devices);
    if (kind.empty()) continue;
    auto& list = lists[kind];
    if (list.size() < kMaxReportEvents) list.push_back(EventJson(e, names, false, in.device_names));
  }
  ReportJson events = ReportJson::object();
  std::map<std::string, int64_t> counts;
  ReportJson notes = ReportJson::array();
  for (const auto& l : kMonthlyLists) {
    const int64_t listed = static_cast<int64_t>(lists[l.key].size());
    int64_t count = listed;
    if (auto it = in.event_counts.find(l.key); it != in.event_counts.end()) {
      count = std::max(count, it->second);
    }
    counts[l.key] = count;
    if (count > listed) {
      notes.push_back(l.title + ": only the first " + std::to_string(listed) + " of " +
                      std::to_string(count) + " are listed.");
    }
    events[l.key] = {{"title", l.title},
                     {"count", count},
                     {"listed", listed},
                     {"events", std::move(lists[l.key])}};
  }
  j["audit_events"] = std::move(events);

  j["totals"] = {{"sessions", in.sessions.size()},
                 {"live_sessions", live},
                 {"users", users.size()},
                 {"targets", targets.size()},
                 {"bytes_up", up},
                 {"bytes_down", down},
                 {"duration_seconds", seconds_total},
                 {"break_glass_sessions", break_glass},
                 {"unreviewed_break_glass_sessions", unreviewed},
                 {"sessions_with_recording", recorded},
                 {"recordings_verified", verified},
                 {"access_requests", in.requests.size()},
                 {"grants_issued", issued},
                 {"requests_denied", denied},
                 {"requests_pending", pending},
                 {"requests_refused_by_policy", counts["refused_requests"]},
                 {"refused_streams", counts["refused_streams"]},
                 {"refused_modbus", counts["refused_modbus"]},
                 {"kills", counts["kills"]},
                 {"quarantine_changes", counts["quarantines"]}};
  j["sessions_truncated"] = in.sessions_truncated;
  if (in.sessions_truncated) {
    notes.push_back("TRUNCATED: only the first " + std::to_string(in.sessions.size()) +
                    " sessions of the month are listed (limit " +
                    std::to_string(kMaxReportSessions) +
                    "); totals cover the listed sessions only. Split the period or use the "
                    "audit export for the rest.");
  }
  if (in.requests_truncated) {
    notes.push_back("Access requests: only the first " + std::to_string(in.requests.size()) +
                    " are listed.");
  }
  if (in.header.redact) {
    notes.push_back(
        "Names of persons are replaced by pseudonyms (person 1, person 2, ...), stable within "
        "this report; organisations are kept. Audit event details and client addresses are "
        "left out.");
  }
  j["notes"] = std::move(notes);
  return j;
}

ReportJson BuildSubjectReport(const SubjectInput& in) {
  const storage::User& u = in.user;
  Namer names(in.header.redact, u.name);
  ReportJson j;
  j["schema"] = kSubjectSchema;
  j["kind"] = "subject";
  j["subject"] = u.name;
  j["header"] = HeaderJson(in.header, names);
  j["evidence"] = EvidenceJson(in.evidence);
  j["totals"] = nullptr;  // filled below
  const bool locked = u.locked_until && *u.locked_until > in.header.generated;
  // Account data: never the password hash, TOTP secret or session tokens.
  j["account"] = {{"name", u.name},
                  {"role", u.role},
                  {"organisation", u.organisation},
                  {"created", Rfc(u.created)},
                  {"mfa", in.mfa},
                  {"disabled", u.disabled},
                  {"locked", locked}};

  ReportJson requests = ReportJson::array();
  int64_t granted = 0;
  ReportJson purposes = ReportJson::array();
  std::map<std::string, size_t> purpose_index;
  std::map<std::string, std::set<std::string>> site_targets;
  std::map<std::string, std::vector<std::string>> approver_requests;
  for (const auto& r : in.requests) {
    const std::string* state = Find(&in.grant_states, r.id);
    if (r.starts) ++granted;
    requests.push_back(GrantJson(r, state ? *state : std::string(), in.organisations, names));
    auto [it, fresh] = purpose_index.try_emplace(r.reason, purposes.size());
    if (fresh) purposes.push_back({{"reason", r.reason}, {"requests", ReportJson::array()}});
    purposes[it->second]["requests"].push_back(r.id);
    site_targets[r.site].insert(r.target);
    for (const auto& a : r.approvals) approver_requests[a.approver].push_back(r.id);
    if (!r.decided_by.empty() && r.decided_by != u.name) {
      approver_requests[r.decided_by].push_back(r.id);
    }
    if (!r.reviewed_by.empty()) approver_requests[r.reviewed_by].push_back(r.id);
  }
  j["access_requests"] = std::move(requests);

  SessionContext c{nullptr, &in.grant_states, &in.recordings, &in.device_names, &in.organisations};
  ReportJson sessions = ReportJson::array();
  ReportJson recordings = ReportJson::array();
  int64_t up = 0, down = 0, seconds_total = 0;
  for (const auto& s : in.sessions) {
    up += s.bytes_up;
    down += s.bytes_down;
    if (s.closed) seconds_total += duration_cast<seconds>(*s.closed - s.opened).count();
    site_targets[s.site].insert(s.target);
    sessions.push_back(SessionJson(s, c, names, false));
    if (const auto* rec = Find(&in.recordings, s.id)) {
      ReportJson rj = RecordingJson(*rec);
      rj["site"] = s.site;
      rj["target"] = s.target;
      recordings.push_back(std::move(rj));
    }
  }
  j["sessions"] = std::move(sessions);
  j["recordings"] = std::move(recordings);
  j["purposes"] = std::move(purposes);

  ReportJson recipients = ReportJson::array();
  for (const auto& [site, targets] : site_targets) {
    recipients.push_back(
        {{"kind", "site operator"},
         {"name", site},
         {"organisation", ""},
         {"targets", targets},
         {"why", "the operator of site " + site +
                     " receives its monthly access report: sessions, reasons and approvals"}});
  }
  for (const auto& [approver, ids] : approver_requests) {
    recipients.push_back({{"kind", "approver"},
                          {"name", names(approver)},
                          {"organisation", OrganisationOf(in.organisations, approver)},
                          {"targets", ReportJson::array()},
                          {"why", "decided on or reviewed the person's access requests"},
                          {"requests", ids}});
  }
  recipients.push_back({{"kind", "service operator"},
                        {"name", in.header.organisation},
                        {"organisation", in.header.organisation},
                        {"targets", ReportJson::array()},
                        {"why", "runs this torwart server and its audit trail (controller)"}});
  if (!in.siem.empty()) {
    recipients.push_back({{"kind", "SIEM"},
                          {"name", in.siem},
                          {"organisation", in.header.organisation},
                          {"targets", ReportJson::array()},
                          {"why", "every audit event is forwarded to this syslog collector"}});
  }
  j["recipients"] = std::move(recipients);

  ReportJson events = ReportJson::array();
  for (const auto& e : in.events) {
    if (events.size() >= kMaxReportEvents) break;
    std::string relation = SubjectRelation(e, u.name);
    if (relation.empty()) continue;
    const bool person_target = e.category == "user" || e.category == "auth";
    ReportJson ej = EventJson(e, names, person_target, in.device_names);
    ej["relation"] = relation;
    events.push_back(std::move(ej));
  }
  int64_t event_total = 0;
  ReportJson by_type = ReportJson::object();
  for (const auto& [type, n] : in.event_counts) {
    by_type[type] = n;
    event_total += n;
  }
  if (in.event_counts.empty()) {  // counts not given: count the listed ones
    for (const auto& e : events) {
      const std::string type = e["type"].get<std::string>();
      by_type[type] = by_type.value(type, int64_t{0}) + 1;
    }
    event_total = static_cast<int64_t>(events.size());
  }
  const int64_t listed = static_cast<int64_t>(events.size());
  j["audit_events"] = {{"count", event_total},
                       {"listed", listed},
                       {"by_type", by_type},
                       {"events", std::move(events)}};

  ReportJson audit_retention = ReportJson::array();
  for (const auto& [category, keep] : in.retention) {
    audit_retention.push_back(
        {{"category", category}, {"keep", FormatDuration(keep)}, {"seconds", keep.count()}});
  }
  j["retention"] = {
      {"audit", audit_retention},
      {"audit_default",
       "audit records of categories without a rule are kept without time limit; legal holds "
       "keep matching records beyond their period"},
      {"other",
       "access requests, tunnel sessions and recordings are kept until an administrator "
       "deletes them (no automatic retention yet)"}};
  j["rights"] = {
      {"access",
       "This report is the copy of the personal data torwart holds about the person (GDPR Art. "
       "15): account data, access requests with their purposes, remote-access sessions, the "
       "ids of their recordings and the audit events concerning the person."},
      {"rectification",
       "Account data (name, organisation, role) can be corrected by an administrator (Art. 16); "
       "the correction is itself recorded as a new audit event."},
      {"erasure",
       "Audit records, sessions and recordings are append-only and hash-chained evidence of "
       "access to third-party systems. They are not changed or erased on request while they "
       "are needed to comply with legal obligations or for the establishment, exercise or "
       "defence of legal claims (Art. 17(3)(b) and (e)); they are blanked when their retention "
       "period ends, unless a legal hold applies."},
      {"restriction_and_objection",
       "Requests under Art. 18 and 21 go to the service operator named above."}};

  j["totals"] = {{"access_requests", in.requests.size()},
                 {"grants", granted},
                 {"sessions", in.sessions.size()},
                 {"bytes_up", up},
                 {"bytes_down", down},
                 {"duration_seconds", seconds_total},
                 {"recordings", j["recordings"].size()},
                 {"audit_events", event_total}};
  ReportJson notes = ReportJson::array();
  if (in.sessions_truncated) {
    notes.push_back("TRUNCATED: only the first " + std::to_string(in.sessions.size()) +
                    " sessions are listed (limit " + std::to_string(kMaxReportSessions) + ").");
  }
  if (in.requests_truncated) {
    notes.push_back("Access requests: only the newest " + std::to_string(in.requests.size()) +
                    " are listed.");
  }
  if (event_total > listed) {
    notes.push_back("Audit events: the first " + std::to_string(listed) + " of " +
                    std::to_string(event_total) + " are listed; the counts by type cover all.");
  }
  if (in.header.redact) {
    notes.push_back(
        "Names of other persons are replaced by pseudonyms (person 1, person 2, ...); "
        "organisations are kept. Audit event details are left out.");
  }
  j["notes"] = std::move(notes);
  return j;
}

// --- HTML ---

std::string HtmlEscape(std::string_view s) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size() + 16);
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&#39;";
          break;
        case '\t':
        case '\n':
          out += static_cast<char>(c);
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            out += kReplacement;
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, surrogates or > U+10FFFF) passes unchanged.
    size_t n = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      cp = c & 0x07;
    }
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok && ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))) {
      ok = false;
    }
    if (ok && cp >= 0x80 && cp <= 0x9F) ok = false;  // C1 controls
    if (!ok) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

constexpr char kCss[] = R"css(
body{font:10.5pt/1.35 "DejaVu Sans",Arial,sans-serif;color:#111;margin:18px}
h1{font-size:16pt;margin:0 0 4px}h2{font-size:12.5pt;margin:18px 0 6px;border-bottom:1px solid #999}
h3{font-size:11pt;margin:12px 0 4px}
table{border-collapse:collapse;width:100%;margin:4px 0 10px}
th,td{border:1px solid #bbb;padding:3px 5px;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right;white-space:nowrap}
.meta td:first-child{width:14em;font-weight:bold;background:#f6f6f6}
.ok{border:2px solid #2a7a2a;background:#eef7ee;padding:6px 8px}
.bad{border:2px solid #a11;background:#fbeaea;padding:6px 8px;font-weight:bold}
.note{border-left:4px solid #c80;background:#fff8e8;padding:4px 8px;margin:4px 0}
.id{font-family:"DejaVu Sans Mono",monospace;font-size:9pt;white-space:nowrap}
.small{font-size:9pt;color:#333}.empty{color:#666;font-style:italic}
footer{margin-top:20px;font-size:8.5pt;color:#555}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}thead{display:table-header-group}}
@page{size:A4 landscape;margin:12mm}
)css";

std::string E(std::string_view s) { return HtmlEscape(s); }

// The text of a JSON value: strings as they are, numbers and booleans printed, null as "-".
std::string Text(const ReportJson& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return v.dump(-1, ' ', false, ReportJson::error_handler_t::replace);
}

std::string Field(const ReportJson& obj, const char* key) {
  if (!obj.is_object()) return "-";
  auto it = obj.find(key);
  if (it == obj.end()) return "-";
  std::string t = Text(*it);
  return t.empty() ? "-" : t;
}

std::string Thousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string Number(const ReportJson& v) {
  if (v.is_number_integer()) return Thousands(v.get<int64_t>());
  return Text(v);
}

std::string Duration(const ReportJson& v) {
  if (!v.is_number_integer()) return "-";
  int64_t s = v.get<int64_t>();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

std::string PersonCell(const ReportJson& obj, const char* name_key) {
  std::string out = E(Field(obj, name_key));
  std::string org = obj.is_object() ? obj.value("organisation", std::string()) : std::string();
  if (!org.empty()) out += "<br><span class=\"small\">" + E(org) + "</span>";
  return out;
}

std::string Approvers(const ReportJson& grant) {
  if (!grant.is_object() || !grant.contains("approvals")) return "-";
  std::string out;
  for (const auto& a : grant["approvals"]) {
    if (!out.empty()) out += "<br>";
    out += E(Field(a, "approver")) + " <span class=\"small\">" + E(Field(a, "at")) + "</span>";
  }
  if (out.empty()) {
    out = grant.value("approvals_required", 0) == 0 ? "none required" : "-";
  }
  return out;
}

std::string GrantCell(const ReportJson& g) {
  if (!g.is_object()) return "-";
  if (g.value("missing", false)) {
    return "<span class=\"id\">" + E(Field(g, "id")) + "</span><br><b>grant not found</b>";
  }
  std::string out = "<span class=\"id\">" + E(Field(g, "id")) + "</span><br>" +
                    E(Field(g, "reason")) +
                    "<br><span class=\"small\">approved by: " + Approvers(g) + "</span>";
  if (g.value("break_glass", false)) {
    const ReportJson& r = g["review"];
    out += "<br><b>BREAK-GLASS</b>, ";
    out += r.is_object() && r.value("reviewed", false)
               ? "reviewed by " + E(Field(r, "by")) + " at " + E(Field(r, "at"))
               : std::string("<b>not reviewed</b>");
  }
  return out;
}

std::string RecordingCell(const ReportJson& r) {
  if (!r.is_object()) return "<span class=\"empty\">none uploaded</span>";
  std::string out = "<span class=\"id\">" + E(Field(r, "id")) + "</span><br>";
  out += r.value("verified", false) ? "verified" : "<b>" + E(Field(r, "status")) + "</b>";
  return out;
}

struct Html {
  std::string out;
  Html& operator<<(std::string_view s) {
    out.append(s);
    return *this;
  }
};

void Meta(Html& h, const std::vector<std::pair<std::string, std::string>>& rows) {
  h << "<table class=\"meta\">";
  for (const auto& [k, v] : rows) h << "<tr><td>" << E(k) << "</td><td>" << v << "</td></tr>";
  h << "</table>";
}

void Evidence(Html& h, const ReportJson& ev) {
  const ReportJson& chain = ev["audit_chain"];
  const bool ok = chain.value("ok", false);
  h << "<h2>Evidence basis</h2><div class=\"" << (ok ? "ok" : "bad") << "\">"
    << E(Field(ev, "statement")) << "</div>";
  std::vector<std::pair<std::string, std::string>> rows{
      {"Audit chain", ok ? "intact" : "NOT VERIFIED INTACT"},
      {"Newest audit record", E(Field(ev, "head_seq"))}};
  if (chain.value("verified", false)) {
    rows.push_back({"Records verified", E(Number(chain["records"]))});
    rows.push_back({"Signed checkpoints", E(Number(chain["checkpoints"]))});
    rows.push_back({"Anchored through seq", E(Field(chain, "anchored_through"))});
  }
  const ReportJson& cp = ev["latest_checkpoint"];
  rows.push_back({"Latest signed checkpoint",
                  cp.is_object()
                      ? "seq " + E(Field(cp, "seq")) + " at " + E(Field(cp, "time")) +
                            "<br><span class=\"id\">key " + E(Field(cp, "key_id")) +
                            "</span><br><span class=\"id\">hash " + E(Field(cp, "hash")) + "</span>"
                      : std::string("none yet")});
  Meta(h, rows);
}

void Notes(Html& h, const ReportJson& notes) {
  for (const auto& n : notes) h << "<div class=\"note\">" << E(Text(n)) << "</div>";
}

void Totals(Html& h, const ReportJson& totals) {
  h << "<h2>Totals</h2><table><tr>";
  for (auto it = totals.begin(); it != totals.end(); ++it) h << "<th>" << E(it.key()) << "</th>";
  h << "</tr><tr>";
  for (auto it = totals.begin(); it != totals.end(); ++it) {
    h << "<td class=\"n\">" << E(it.key() == "duration_seconds" ? Duration(*it) : Number(*it))
      << "</td>";
  }
  h << "</tr></table>";
}

void Empty(Html& h, const char* what) { h << "<p class=\"empty\">" << what << "</p>"; }

void Requests(Html& h, const ReportJson& list, bool with_requester) {
  if (list.empty()) return Empty(h, "No access requests.");
  h << "<table><thead><tr><th>Request</th>";
  if (with_requester) h << "<th>Requester</th>";
  h << "<th>Target</th><th>Reason (purpose)</th><th>Created</th><th>Valid</th><th>State</th>"
       "<th>Approvers / decision</th></tr></thead><tbody>";
  for (const auto& r : list) {
    h << "<tr><td class=\"id\">" << E(Field(r, "id")) << "</td>";
    if (with_requester) h << "<td>" << PersonCell(r, "requester") << "</td>";
    h << "<td>" << E(Field(r, "site")) << "/" << E(Field(r, "target")) << "</td><td>"
      << E(Field(r, "reason")) << "</td><td>" << E(Field(r, "created")) << "</td><td>"
      << E(Field(r, "starts")) << "<br>" << E(Field(r, "ends")) << "</td><td>"
      << E(Field(r, "state")) << (r.value("break_glass", false) ? " (break-glass)" : "")
      << "</td><td>" << Approvers(r);
    const std::string state = Field(r, "state");
    if (Field(r, "decided_by") != "-" && (state == "denied" || state == "revoked")) {
      h << "<br><span class=\"small\">" << E(state) << " by " << E(Field(r, "decided_by"));
      if (Field(r, "decision_reason") != "-") h << ": " << E(Field(r, "decision_reason"));
      h << "</span>";
    }
    h << "</td></tr>";
  }
  h << "</tbody></table>";
}

void EventTable(Html& h, const ReportJson& events, bool with_relation) {
  if (events.empty()) return Empty(h, "None.");
  h << "<table><thead><tr><th>Seq</th><th>Time (UTC)</th><th>Type</th><th>Result</th>"
       "<th>Actor</th><th>Target</th><th>Reason</th>"
    << (with_relation ? "<th>Relation</th>" : "") << "</tr></thead><tbody>";
  for (const auto& e : events) {
    h << "<tr><td class=\"n\">" << E(Field(e, "seq")) << "</td><td>" << E(Field(e, "time"))
      << "</td><td>" << E(Field(e, "type")) << "</td><td>" << E(Field(e, "result")) << "</td><td>"
      << (Field(e, "actor_device") != "-"
              ? E(Field(e, "actor_device")) + "<br><span class=\"small\">device " +
                    E(Field(e, "actor")) + "</span>"
              : PersonCell(e, "actor"))
      << "</td><td>" << E(Field(e, "target")) << "</td><td>" << E(Field(e, "reason"));
    const ReportJson& d = e["details"];
    if (d.is_object() && d.contains("detail") && d["detail"].is_object()) {
      std::string extra;
      for (auto it = d["detail"].begin(); it != d["detail"].end(); ++it) {
        if (it.key() == "reason") continue;
        extra += (extra.empty() ? "" : ", ") + it.key() + "=" + Text(*it);
      }
      if (!extra.empty()) h << "<br><span class=\"small\">" << E(extra) << "</span>";
    }
    h << "</td>";
    if (with_relation) h << "<td>" << E(Field(e, "relation")) << "</td>";
    h << "</tr>";
  }
  h << "</tbody></table>";
}

void Sessions(Html& h, const ReportJson& list, bool monthly) {
  if (list.empty()) return Empty(h, "No sessions.");
  h << "<table><thead><tr><th>#</th><th>Session</th>" << (monthly ? "<th>User</th>" : "")
    << "<th>Target</th><th>Opened (UTC)</th><th>Closed (UTC)</th><th>Duration</th>"
       "<th>Bytes up / down</th><th>End</th><th>Grant</th><th>Recording</th></tr></thead><tbody>";
  int n = 0;
  for (const auto& s : list) {
    h << "<tr><td class=\"n\">" << std::to_string(++n) << "</td><td class=\"id\">"
      << E(Field(s, "id")) << "</td>";
    if (monthly) h << "<td>" << PersonCell(s, "user") << "</td>";
    h << "<td>" << E(Field(s, "site")) << "/" << E(Field(s, "target"))
      << "<br><span class=\"small\">via " << E(Field(s, "device")) << "</span></td><td>"
      << E(Field(s, "opened")) << "</td><td>"
      << (s["closed"].is_null() ? std::string("<b>live</b>") : E(Field(s, "closed")))
      << "</td><td class=\"n\">" << E(Duration(s["duration_seconds"])) << "</td><td class=\"n\">"
      << E(Number(s["bytes_up"])) << " / " << E(Number(s["bytes_down"])) << "</td><td>"
      << E(Field(s, "end_reason")) << "</td><td>";
    if (monthly) {
      h << GrantCell(s["grant"]);
    } else {
      h << "<span class=\"id\">" << E(Field(s, "grant_id")) << "</span>";
    }
    h << "</td><td>" << RecordingCell(s["recording"]) << "</td></tr>";
  }
  h << "</tbody></table>";
}

void Head(Html& h, const std::string& title) {
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       "<title>"
    << E(title) << "</title><style>" << kCss << "</style></head><body>";
}

void Foot(Html& h, const ReportJson& r) {
  h << "<footer>Schema " << E(Field(r, "schema"))
    << ". The same report as JSON: format=json (REST) or --json (CLI). All times are UTC."
       "</footer></body></html>\n";
}

std::string RenderMonthly(const ReportJson& r) {
  Html h;
  const std::string title =
      "Monthly access report: site " + Field(r, "site") + ", " + Field(r, "month");
  Head(h, title);
  const ReportJson& p = r["period"];
  const ReportJson& hd = r["header"];
  h << "<h1>" << E(title) << "</h1>";
  Meta(h, {{"Site", E(Field(r, "site"))},
           {"Period", E(Field(p, "from")) + " to " + E(Field(p, "until")) + " (exclusive), " +
                          E(Field(p, "time_zone"))},
           {"Which sessions", E(Field(p, "rule"))},
           {"Generated", E(Field(hd, "generated")) + " by " + E(Field(hd, "generated_by"))},
           {"Operator of this server", E(Field(hd, "organisation"))}});
  Notes(h, r["notes"]);
  Evidence(h, r["evidence"]);
  Totals(h, r["totals"]);
  h << "<h2>Sessions</h2>";
  Sessions(h, r["sessions"], true);
  h << "<h2>Access requests created in the month</h2>";
  Requests(h, r["access_requests"], true);
  const ReportJson& ev = r["audit_events"];
  for (auto it = ev.begin(); it != ev.end(); ++it) {
    const ReportJson& list = *it;
    h << "<h2>" << E(Field(list, "title")) << " (" << E(Number(list["count"])) << ")</h2>";
    EventTable(h, list["events"], false);
  }
  Foot(h, r);
  return std::move(h.out);
}

std::string RenderSubject(const ReportJson& r) {
  Html h;
  const std::string title = "Data subject access report (GDPR Art. 15): " + Field(r, "subject");
  Head(h, title);
  const ReportJson& hd = r["header"];
  const ReportJson& a = r["account"];
  h << "<h1>" << E(title) << "</h1>";
  Meta(h, {{"Generated", E(Field(hd, "generated")) + " by " + E(Field(hd, "generated_by"))},
           {"Controller (operator of this server)", E(Field(hd, "organisation"))}});
  Notes(h, r["notes"]);
  h << "<h2>Account data</h2>";
  Meta(h, {{"Name", E(Field(a, "name"))},
           {"Role", E(Field(a, "role"))},
           {"Organisation", E(Field(a, "organisation"))},
           {"Created", E(Field(a, "created"))},
           {"Second factor (TOTP)", E(Field(a, "mfa"))},
           {"Disabled", E(Field(a, "disabled"))},
           {"Locked", E(Field(a, "locked"))}});
  h << "<p class=\"small\">Passwords, second-factor secrets and session tokens are stored only "
       "as hashes or sealed and are not part of this report.</p>";
  Totals(h, r["totals"]);
  h << "<h2>Purposes (reasons given)</h2>";
  if (r["purposes"].empty()) {
    Empty(h, "None.");
  } else {
    h << "<table><thead><tr><th>Reason</th><th>Requests</th></tr></thead><tbody>";
    for (const auto& p : r["purposes"]) {
      std::string ids;
      for (const auto& id : p["requests"]) ids += (ids.empty() ? "" : ", ") + Text(id);
      h << "<tr><td>" << E(Field(p, "reason")) << "</td><td class=\"id\">" << E(ids)
        << "</td></tr>";
    }
    h << "</tbody></table>";
  }
  h << "<h2>Recipients</h2><table><thead><tr><th>Kind</th><th>Name</th><th>Organisation</th>"
       "<th>Why</th><th>Targets</th></tr></thead><tbody>";
  for (const auto& x : r["recipients"]) {
    std::string targets;
    for (const auto& t : x["targets"]) targets += (targets.empty() ? "" : ", ") + Text(t);
    h << "<tr><td>" << E(Field(x, "kind")) << "</td><td>" << E(Field(x, "name")) << "</td><td>"
      << E(Field(x, "organisation")) << "</td><td>" << E(Field(x, "why")) << "</td><td>"
      << E(targets.empty() ? "-" : targets) << "</td></tr>";
  }
  h << "</tbody></table>";
  h << "<h2>Access requests and grants</h2>";
  Requests(h, r["access_requests"], false);
  h << "<h2>Remote-access sessions</h2>";
  Sessions(h, r["sessions"], false);
  h << "<h2>Recordings of the sessions</h2>";
  if (r["recordings"].empty()) {
    Empty(h, "None.");
  } else {
    h << "<table><thead><tr><th>Recording</th><th>Target</th><th>Uploaded</th><th>Size</th>"
         "<th>Status</th></tr></thead><tbody>";
    for (const auto& x : r["recordings"]) {
      h << "<tr><td class=\"id\">" << E(Field(x, "id")) << "</td><td>" << E(Field(x, "site")) << "/"
        << E(Field(x, "target")) << "</td><td>" << E(Field(x, "uploaded"))
        << "</td><td class=\"n\">" << E(Number(x["size"])) << "</td><td>" << E(Field(x, "status"))
        << "</td></tr>";
    }
    h << "</tbody></table>";
  }
  const ReportJson& ae = r["audit_events"];
  h << "<h2>Audit events concerning the person (" << E(Number(ae["count"])) << ")</h2>";
  if (!ae["by_type"].empty()) {
    h << "<table><thead><tr><th>Type</th><th>Count</th></tr></thead><tbody>";
    for (auto it = ae["by_type"].begin(); it != ae["by_type"].end(); ++it) {
      h << "<tr><td>" << E(it.key()) << "</td><td class=\"n\">" << E(Number(*it)) << "</td></tr>";
    }
    h << "</tbody></table>";
  }
  EventTable(h, ae["events"], true);
  const ReportJson& ret = r["retention"];
  h << "<h2>Retention periods in force</h2>";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& x : ret["audit"]) {
    rows.push_back({"Audit category " + Field(x, "category"), E(Field(x, "keep"))});
  }
  rows.push_back({"Other audit categories", E(Field(ret, "audit_default"))});
  rows.push_back({"Requests, sessions, recordings", E(Field(ret, "other"))});
  Meta(h, rows);
  const ReportJson& rights = r["rights"];
  h << "<h2>Rights of the data subject</h2>";
  Meta(h, {{"Access (Art. 15)", E(Field(rights, "access"))},
           {"Rectification (Art. 16)", E(Field(rights, "rectification"))},
           {"Erasure (Art. 17)", E(Field(rights, "erasure"))},
           {"Restriction, objection", E(Field(rights, "restriction_and_objection"))}});
  Evidence(h, r["evidence"]);
  Foot(h, r);
  return std::move(h.out);
}

}  // namespace

std::string RenderReportHtml(const ReportJson& report) {
  return report.value("kind", std::string()) == "subject" ? RenderSubject(report)
                                                          : RenderMonthly(report);
}

}  // namespace torwart::server
