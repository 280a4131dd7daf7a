// Compliance reports, the service (docs/design/reports.md): ReportService gathers the inputs of
// the monthly site report and the GDPR Art. 15 report read-only from the store, checks who may
// read them and audits every report it hands out (`report.generated`, fail closed); building and
// rendering are the pure functions of report_build.hpp. REST: /api/v1/reports/{monthly,subject}
// as JSON or HTML. Thread-safe: ReportService has no mutable state.
#pragma once

#include <functional>
#include <string>

#include "context.hpp"
#include "report_build.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

class AccessService;

class ReportService {
 public:
  // `verify` verifies the audit chain (AuditService::Verify); empty: reports say "not verified".
  ReportService(Context& ctx, AccessService& access,
                std::function<Expected<audit::VerifyReport>()> verify)
      : ctx_(ctx), access_(access), verify_(std::move(verify)) {}

  // Both check who may see the report, audit `report.generated` (fail closed: no report without
  // the record) and then gather. `req` is the HTTP request (source address for the audit).
  // Monthly: admin and auditor; kInvalidArgument for a malformed site name.
  Expected<ReportJson> Monthly(const http::Request& req, const Principal& who,
                               const std::string& site, const ReportMonth& month, bool redact);
  // Subject: admin and auditor for anyone, everyone else only for themselves
  // (kPermissionDenied); kNotFound for an unknown user.
  Expected<ReportJson> Subject(const http::Request& req, const Principal& who,
                               const std::string& user, bool redact);

 private:
  ReportHeader Header(const Principal& who, bool redact) const;
  ReportEvidence Evidence();

  Context& ctx_;
  AccessService& access_;
  std::function<Expected<audit::VerifyReport>()> verify_;
};

// GET /api/v1/reports/monthly and /api/v1/reports/subject (format=json|html); each report is
// audited as `report.generated` before it is handed out.
void RegisterReportApi(Context& ctx, ReportService& reports, http::Router& router);

}  // namespace torwart::server
