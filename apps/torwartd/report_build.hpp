// Compliance reports, the pure part (docs/design/reports.md): the monthly access report of one
// site and the GDPR Art. 15 report of one person are built from plain inputs into JSON (stable
// schemas "torwart.report.monthly/1" and "torwart.report.subject/1") and rendered into one
// self-contained printable HTML page from exactly that JSON. No I/O, no shared state: every
// function is thread-safe. Gathering the inputs (and auditing) is ReportService (reports.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "torwart/audit/chain.hpp"
#include "torwart/audit/event.hpp"
#include "torwart/audit/verify.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {

using ReportJson = nlohmann::ordered_json;

// Sessions per report; beyond this the report says it is truncated (and where).
inline constexpr size_t kMaxReportSessions = 100000;
// Entries per audit-event list (and access requests); counts still cover everything.
inline constexpr size_t kMaxReportEvents = 10000;

// A calendar month in UTC: begin <= t < end.
struct ReportMonth {
  std::string text;  // "YYYY-MM"
  TimePoint begin, end;
};
// "YYYY-MM" (year 1970-9999, month 01-12); kInvalidArgument otherwise.
Expected<ReportMonth> ParseReportMonth(std::string_view text);

// What the report's statements rest on: the audit chain as verified while it was generated.
struct ReportEvidence {
  std::optional<audit::VerifyReport> verify;  // unset: verification could not run
  std::string verify_error;
  std::optional<audit::Checkpoint> latest_checkpoint;
  int64_t head_seq = 0;  // newest audit record when the report was generated
};

// Shared by both reports.
struct ReportHeader {
  TimePoint generated;
  std::string generated_by;
  std::string organisation;  // who runs this torwart ([server] organisation)
  bool redact = false;       // replace other persons' names (docs/design/reports.md)
};

struct MonthlyInput {
  std::string site;
  ReportMonth month;
  ReportHeader header;
  std::vector<storage::TunnelSession> sessions;  // opened in the month at the site, oldest first
  bool sessions_truncated = false;
  std::vector<storage::AccessRequest> requests;  // created in the month for the site, oldest first
  bool requests_truncated = false;
  // By id: the grants of the sessions (also from earlier months) and the month's requests.
  std::map<std::string, storage::AccessRequest> grants;
  std::map<std::string, std::string> grant_states;             // by id: AccessService::State
  std::map<std::string, storage::StoredRecording> recordings;  // by stream id
  std::map<std::string, std::string> device_names;             // device id -> name
  std::map<std::string, std::string> organisations;            // user name -> organisation
  std::set<std::string> site_devices;  // names of the site's gateways (for quarantine events)
  // Audit events of the month; BuildMonthlyReport lists those that concern the site
  // (MonthlyEventKind), oldest first.
  std::vector<audit::Event> events;
  // Per list (MonthlyEventKind), how many events the month really had; where that is more than
  // `events` holds, the report says the list is truncated. Missing: the listed ones are all.
  std::map<std::string, int64_t> event_counts;
  ReportEvidence evidence;
};

struct SubjectInput {
  storage::User user;
  bool mfa = false;  // an active second factor
  ReportHeader header;
  std::vector<storage::AccessRequest> requests;  // every request of the person, oldest first
  bool requests_truncated = false;
  std::map<std::string, std::string> grant_states;  // by id
  std::vector<storage::TunnelSession> sessions;     // every session of the person, oldest first
  bool sessions_truncated = false;
  std::map<std::string, storage::StoredRecording> recordings;  // of those sessions, by stream id
  std::map<std::string, std::string> device_names;
  std::map<std::string, std::string> organisations;  // other persons' organisations
  // Audit events concerning the person (SubjectRelation != ""), oldest first.
  std::vector<audit::Event> events;
  bool events_truncated = false;                // more matched than are listed (counts cover all)
  std::map<std::string, int64_t> event_counts;  // by type, over every matching event
  std::vector<std::pair<std::string, std::chrono::seconds>> retention;  // [audit.retention]
  std::string siem;  // "[audit.syslog] address" when forwarding is configured
  ReportEvidence evidence;
};

// Whether an audit event concerns `site`: stream/access events by their "SITE/TARGET" target
// or the agent's details.site, quarantine events by the device name. "" if not, else the list
// it belongs in: refused_requests, refused_streams, refused_modbus, kills, quarantines.
std::string MonthlyEventKind(const audit::Event& e, const std::string& site,
                             const std::set<std::string>& site_devices);
// How an audit event concerns person `name`: "actor", "target", "subject" (named in details as
// user or requester) or "" (not at all).
std::string SubjectRelation(const audit::Event& e, const std::string& name);

ReportJson BuildMonthlyReport(const MonthlyInput& in);
ReportJson BuildSubjectReport(const SubjectInput& in);

// A complete HTML document (inline CSS, no scripts, nothing external) of a report built above.
std::string RenderReportHtml(const ReportJson& report);
// Text for HTML element content and attribute values: & < > " ' escaped, invalid UTF-8 and
// control characters replaced by U+FFFD.
std::string HtmlEscape(std::string_view s);

}  // namespace torwart::server
