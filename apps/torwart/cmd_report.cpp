// torwart CLI commands: compliance reports (docs/design/reports.md). `report monthly` (a site's
// sessions in one UTC month) and `report subject` (GDPR Art. 15 report of one person); a
// summary table on the terminal, the JSON with --json, the printable HTML page with --html FILE.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "cli.hpp"

namespace torwart::cli {
namespace {

constexpr size_t kMaxReportBytes = size_t{1} << 30;  // 100 000 sessions fit easily

struct ReportOptions {
  std::string site, month, user, html_file;
  bool redact = false;
};

std::string Path(const std::string& base, const ReportOptions& o, const char* format) {
  std::string p = base + (base.back() == '?' ? "" : "&") + "format=" + format;
  if (o.redact) p += "&redact=true";
  return p;
}

json FetchJson(Api& api, const std::string& path) {
  auto d = api.Get(path, kMaxReportBytes);
  json j = json::parse(d.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) Die("the server's report is not valid JSON");
  return j;
}

void WriteHtml(Api& api, const std::string& path, const std::string& file) {
  auto d = api.Get(path, kMaxReportBytes);
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  if (!f) Die("cannot write " + file);
  f << d.body;
  f.close();
  if (!f) Die("cannot write " + file);
}

std::string S(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return "-";
  if (j[key].is_string())
    return j[key].get<std::string>().empty() ? "-" : j[key].get<std::string>();
  if (j[key].is_boolean()) return j[key].get<bool>() ? "yes" : "no";
  return j[key].dump();
}

std::string Duration(const json& v) {
  if (!v.is_number_integer()) return "live";
  int64_t s = v.get<int64_t>();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

void PrintEvidence(const json& r) {
  const json& ev = r["evidence"];
  std::cout << "\n" << S(ev, "statement") << "\n";
  if (ev.contains("latest_checkpoint") && ev["latest_checkpoint"].is_object()) {
    std::cout << "latest signed checkpoint: seq " << S(ev["latest_checkpoint"], "seq") << " at "
              << S(ev["latest_checkpoint"], "time") << "\n";
  }
  for (const auto& n : r["notes"]) std::cout << "NOTE: " << n.get<std::string>() << "\n";
}

void PrintSessions(const json& sessions, bool with_user) {
  if (sessions.empty()) {
    std::cout << "  (no sessions)\n";
    return;
  }
  std::cout << "  " << Col("SESSION", 21) << (with_user ? Col("USER", 16) : "") << Col("TARGET", 22)
            << Col("OPENED (UTC)", 22) << Col("DURATION", 10) << Col("BYTES UP/DOWN", 18)
            << Col("GRANT", 17) << "RECORDING\n";
  for (const auto& s : sessions) {
    std::string rec = "-";
    if (s["recording"].is_object()) {
      rec = s["recording"].value("verified", false) ? "verified" : S(s["recording"], "status");
    }
    std::cout << "  " << Col(S(s, "id"), 21) << (with_user ? Col(S(s, "user"), 16) : "")
              << Col(S(s, "site") + "/" + S(s, "target"), 22) << Col(S(s, "opened"), 22)
              << Col(Duration(s["duration_seconds"]), 10)
              << Col(S(s, "bytes_up") + "/" + S(s, "bytes_down"), 18) << Col(S(s, "grant_id"), 17)
              << rec << "\n";
  }
}

void PrintMonthly(const json& r) {
  const json& t = r["totals"];
  std::cout << "Monthly access report: site " << S(r, "site") << ", " << S(r, "month")
            << " (UTC; sessions belong to the month they were opened in)\n"
            << "sessions " << S(t, "sessions") << " (live " << S(t, "live_sessions") << "), users "
            << S(t, "users") << ", duration " << Duration(t["duration_seconds"])
            << ", bytes up/down " << S(t, "bytes_up") << "/" << S(t, "bytes_down") << "\n"
            << "requests " << S(t, "access_requests") << ", grants issued " << S(t, "grants_issued")
            << ", denied " << S(t, "requests_denied") << ", refused by policy "
            << S(t, "requests_refused_by_policy") << "; break-glass "
            << S(t, "break_glass_sessions") << " (unreviewed "
            << S(t, "unreviewed_break_glass_sessions") << ")\n"
            << "refused streams " << S(t, "refused_streams") << ", refused Modbus requests "
            << S(t, "refused_modbus") << ", kills " << S(t, "kills") << ", quarantine changes "
            << S(t, "quarantine_changes") << "; recordings " << S(t, "sessions_with_recording")
            << " (verified " << S(t, "recordings_verified") << ")\n\n";
  PrintSessions(r["sessions"], true);
  PrintEvidence(r);
}

void PrintSubject(const json& r) {
  const json& a = r["account"];
  const json& t = r["totals"];
  std::cout << "Art. 15 report: " << S(r, "subject") << " (role " << S(a, "role")
            << ", organisation " << S(a, "organisation") << ", created " << S(a, "created")
            << ", MFA " << S(a, "mfa") << ")\n"
            << "access requests " << S(t, "access_requests") << " (grants " << S(t, "grants")
            << "), sessions " << S(t, "sessions") << ", recordings " << S(t, "recordings")
            << ", audit events " << S(t, "audit_events") << "\n";
  std::cout << "purposes:\n";
  for (const auto& p : r["purposes"]) std::cout << "  - " << S(p, "reason") << "\n";
  if (r["purposes"].empty()) std::cout << "  (none)\n";
  std::cout << "recipients:\n";
  for (const auto& x : r["recipients"]) {
    std::cout << "  - " << S(x, "kind") << ": " << S(x, "name") << "\n";
  }
  std::cout << "\n";
  PrintSessions(r["sessions"], false);
  PrintEvidence(r);
}

}  // namespace

void RegisterReportCommands(CLI::App& app, Globals& g) {
  auto* rep = app.add_subcommand(
      "report",
      "compliance reports as a table, JSON (--json) or printable HTML (--html FILE): monthly "
      "access report of a site, GDPR Art. 15 report of a person");
  rep->require_subcommand(1);

  static ReportOptions mo;
  auto* monthly = rep->add_subcommand(
      "monthly",
      "every session to a site's targets in one calendar month (UTC; a session counts in the "
      "month it was opened), with grants, approvers, recordings, refusals and the audit chain "
      "status (admin, auditor)");
  monthly->add_option("--site", mo.site, "site name as in the policy")->required();
  monthly->add_option("--month", mo.month, "YYYY-MM, e.g. 2026-03")->required();
  monthly->add_option("--html", mo.html_file, "write the printable HTML report to FILE");
  monthly->add_flag("--redact", mo.redact, "replace names of persons by pseudonyms");
  monthly->add_flag("--json", g.json_out, "print the report as JSON");
  monthly->callback([&] {
    Api api(g, true);
    const std::string base =
        "/api/v1/reports/monthly?site=" + UrlEncode(mo.site) + "&month=" + UrlEncode(mo.month);
    if (!mo.html_file.empty()) {
      WriteHtml(api, Path(base, mo, "html"), mo.html_file);
      if (!g.json_out) std::cout << "wrote " << mo.html_file << "\n";
      if (!g.json_out) return;
    }
    json r = FetchJson(api, Path(base, mo, "json"));
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    PrintMonthly(r);
  });

  static ReportOptions so;
  auto* subject = rep->add_subcommand(
      "subject",
      "GDPR Art. 15 report of one person: account data, access requests and purposes, sessions, "
      "recordings, audit events, recipients, retention (admin, auditor; anyone for themselves)");
  subject->add_option("USER", so.user, "user name (default: yourself)");
  subject->add_option("--html", so.html_file, "write the printable HTML report to FILE");
  subject->add_flag("--redact", so.redact, "replace names of other persons by pseudonyms");
  subject->add_flag("--json", g.json_out, "print the report as JSON");
  subject->callback([&] {
    Api api(g, true);
    std::string base = "/api/v1/reports/subject?";
    if (!so.user.empty()) base += "user=" + UrlEncode(so.user);
    if (!so.html_file.empty()) {
      WriteHtml(api, Path(base, so, "html"), so.html_file);
      if (!g.json_out) std::cout << "wrote " << so.html_file << "\n";
      if (!g.json_out) return;
    }
    json r = FetchJson(api, Path(base, so, "json"));
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    PrintSubject(r);
  });
}

}  // namespace torwart::cli
