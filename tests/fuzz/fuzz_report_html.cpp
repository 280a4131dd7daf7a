// Fuzzes the reports with hostile stored text (docs/design/reports.md): user names,
// organisations, reasons, end reasons and audit details come from people and gateways. The
// input is split at NUL bytes into those strings; the monthly and subject reports are built,
// rendered, and the HTML must never contain markup from the input. Also the month parser.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "report_build.hpp"

using namespace torwart;
using namespace torwart::server;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)ParseReportMonth(in.substr(0, 16));
  std::vector<std::string> parts;
  size_t start = 0;
  while (parts.size() < 8) {
    size_t nul = in.find('\0', start);
    parts.emplace_back(in.substr(start, nul == std::string_view::npos ? in.npos : nul - start));
    if (nul == std::string_view::npos) break;
    start = nul + 1;
  }
  parts.resize(8);
  const std::string& user = parts[0];

  // The escaper must leave no markup character and only valid UTF-8 behind.
  const std::string esc = HtmlEscape(in);
  if (esc.find_first_of("<>\"'") != std::string::npos) std::abort();

  storage::TunnelSession s;
  s.id = "st-0000000000000001";
  s.grant_id = "ar-000000000001";
  s.user = user;
  s.site = parts[1];
  s.target = parts[2];
  s.end_reason = parts[3];
  s.client = parts[4];
  s.opened = FromUnix(1772323200);  // 2026-03-01
  s.closed = s.opened + std::chrono::seconds(static_cast<int>(size));
  storage::AccessRequest r;
  r.id = s.grant_id;
  r.requester = user;
  r.site = s.site;
  r.target = s.target;
  r.reason = parts[5];
  r.break_glass = size % 2 == 1;
  r.approvals.push_back({parts[6], s.opened, std::nullopt, parts[7]});
  audit::Event e;
  e.seq = 1;
  e.type = size % 3 == 0 ? "agent.tunnel.request_refused" : "tunnel.refused";
  e.target = parts[1] + "/" + parts[2];
  e.actor = user;
  e.actor_type = audit::ActorType::kUser;
  e.reason = parts[3];
  e.details = parts[7];  // anything, also not JSON

  MonthlyInput m;
  m.site = parts[1];
  m.month = *ParseReportMonth("2026-03");
  m.header.generated_by = parts[6];
  m.header.organisation = parts[4];
  m.header.redact = size % 5 == 0;
  m.sessions = {s};
  m.requests = {r};
  m.grants[r.id] = r;
  m.organisations[user] = parts[4];
  m.site_devices.insert(parts[2]);
  m.events = {e};
  const std::string monthly = RenderReportHtml(BuildMonthlyReport(m));

  SubjectInput sub;
  sub.user.name = user;
  sub.user.organisation = parts[4];
  sub.header = m.header;
  sub.requests = {r};
  sub.sessions = {s};
  sub.events = {e};
  sub.retention = {{parts[2], std::chrono::seconds(size)}};
  sub.siem = parts[5];
  const std::string subject = RenderReportHtml(BuildSubjectReport(sub));

  for (const std::string* html : {&monthly, &subject}) {
    if (html->find("<script") != std::string::npos || html->find("<img") != std::string::npos) {
      std::abort();
    }
  }
  return 0;
}
