// torwart CLI commands: just-in-time access: request, approve, deny, revoke, review, list, show,
// cert (a grant certificate for a locally generated P-256 key). See docs/design/access.md.
#include <sys/stat.h>

#include <filesystem>
#include <iostream>

#include "cli.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::cli {
namespace {

void PrintRequest(const json& r) {
  std::cout << "id:        " << r.value("id", "") << "\n"
            << "state:     " << r.value("state", "") << "\n"
            << "requester: " << r.value("requester", "") << "\n"
            << "target:    " << r.value("site", "") << "/" << r.value("target", "") << "\n"
            << "rule:      " << r.value("rule", "") << "\n"
            << "reason:    " << r.value("reason", "") << "\n"
            << "duration:  " << r.value("duration", "") << "\n";
  std::string scopes;
  for (auto& s : r.value("scopes", json::array())) scopes += (scopes.empty() ? "" : ", ") + s.get<std::string>();
  std::cout << "scopes:    " << (scopes.empty() ? "(whole protocol)" : scopes) << "\n";
  if (r.value("approvals_required", 0) > 0) {
    std::cout << "approvals: " << r["approvals"].size() << " of " << r.value("approvals_required", 0)
              << " from group " << r.value("approver_group", "") << "\n";
    for (auto& a : r["approvals"]) {
      std::cout << "           " << a.value("approver", "") << " at " << a.value("at", "")
                << (a.contains("shorten") ? " (shortened to " + a.value("shorten", "") + ")" : "") << "\n";
    }
  }
  if (r.value("on_site_consent", false)) std::cout << "consent:   on-site consent switch required\n";
  if (r.contains("starts")) std::cout << "valid:     " << r.value("starts", "") << " .. " << r.value("ends", "") << "\n";
  if (r.contains("decided_by")) {
    std::cout << "decided:   by " << r.value("decided_by", "")
              << (r.contains("decision_reason") ? ": " + r.value("decision_reason", "") : "") << "\n";
  }
  if (r.value("break_glass", false)) {
    std::cout << "BREAK-GLASS: review by group " << r.value("review_group", "") << ": "
              << (r.value("reviewed", false) ? "reviewed by " + r.value("reviewed_by", "") : "NOT YET REVIEWED")
              << "\n";
  }
}

}  // namespace

void RegisterAccessCommands(CLI::App& app, Globals& g) {
  auto* acc = app.add_subcommand("access", "just-in-time access: request, approve, deny, revoke, list, cert");
  acc->require_subcommand(1);
  static std::string target, reason, duration, scope, id, shorten, comment, out_dir;
  static bool break_glass = false, mine = false, pending = false, active = false, unreviewed = false;

  auto* req = acc->add_subcommand("request", "ask for access to one target for a reason and a duration");
  req->add_option("TARGET", target, "SITE/TARGET, e.g. werk-hamburg/presse-1-plc")->required();
  req->add_option("--reason", reason, "why (required by most rules)");
  req->add_option("--duration", duration, "how long, e.g. 2h or 30m (default: the rule's maximum)");
  req->add_option("--scope", scope, "protocol scope, e.g. modbus:read");
  req->add_flag("--break-glass", break_glass, "emergency access: granted at once, alerted, reviewed afterwards");
  req->callback([&] {
    if (target.find('/') == std::string::npos) Die("give the target as SITE/TARGET", 2);
    Api api(g, true);
    json body{{"target", target}, {"reason", reason}, {"break_glass", break_glass}};
    if (!duration.empty()) body["duration"] = duration;
    if (!scope.empty()) body["scope"] = scope;
    json r = api.Call("POST", "/api/v1/access", body);
    if (g.json_out) { PrintJson(r); return; }
    std::string state = r.value("state", "");
    if (state == "pending") {
      std::cout << "Request " << r.value("id", "") << " is waiting for " << r.value("approvals_required", 0)
                << " approval(s) from group " << r.value("approver_group", "") << ".\n";
    } else {
      std::cout << (break_glass ? "BREAK-GLASS grant " : "Granted: ") << r.value("id", "") << " until "
                << r.value("ends", "") << (break_glass ? " (alert raised; review required)" : "") << ".\n";
    }
  });

  auto* approve = acc->add_subcommand("approve", "approve a pending request (never your own)");
  approve->add_option("ID", id, "request id")->required();
  approve->add_option("--shorten", shorten, "grant at most this long, e.g. 30m");
  approve->add_option("--comment", comment, "note for the audit trail");
  approve->callback([&] {
    Api api(g, true);
    json body{{"comment", comment}};
    if (!shorten.empty()) body["shorten"] = shorten;
    json r = api.Call("POST", "/api/v1/access/" + id + "/approve", body);
    if (g.json_out) { PrintJson(r); return; }
    if (r.value("state", "") == "active") {
      std::cout << "Granted " << id << " until " << r.value("ends", "") << ".\n";
    } else {
      std::cout << "Approved " << id << "; " << r["approvals"].size() << " of " << r.value("approvals_required", 0)
                << " approvals.\n";
    }
  });

  auto* deny = acc->add_subcommand("deny", "deny a pending request");
  deny->add_option("ID", id, "request id")->required();
  deny->add_option("--reason", reason, "why (told to the requester)")->required();
  deny->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/access/" + id + "/deny", json{{"reason", reason}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Denied " << id << ".\n";
  });

  auto* revoke = acc->add_subcommand("revoke", "end a grant now (or withdraw a pending request)");
  revoke->add_option("ID", id, "request id")->required();
  revoke->add_option("--reason", reason, "why");
  revoke->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/access/" + id + "/revoke", json{{"reason", reason}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Revoked " << id << ".\n";
  });

  auto* review = acc->add_subcommand("review", "review a break-glass grant (its review group)");
  review->add_option("ID", id, "request id")->required();
  review->add_option("--comment", comment, "the review's finding")->required();
  review->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/access/" + id + "/review", json{{"comment", comment}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Reviewed " << id << ".\n";
  });

  auto* list = acc->add_subcommand("list", "list requests and grants");
  list->add_flag("--mine", mine, "only my requests");
  list->add_flag("--pending", pending, "only requests waiting for approval");
  list->add_flag("--active", active, "only grants valid now");
  list->add_flag("--unreviewed", unreviewed, "break-glass grants not yet reviewed");
  list->callback([&] {
    Api api(g, true);
    std::string filter = mine ? "mine" : pending ? "pending" : active ? "active" : unreviewed ? "unreviewed" : "";
    json r = api.Call("GET", "/api/v1/access" + (filter.empty() ? "" : "?filter=" + filter));
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("ID", 17) << Col("STATE", 9) << Col("REQUESTER", 28) << Col("TARGET", 34) << "UNTIL\n";
    for (auto& x : r["requests"]) {
      std::string state = x.value("state", "");
      if (x.value("break_glass", false) && !x.value("reviewed", false)) state += "!";
      std::cout << Col(x.value("id", ""), 17) << Col(state, 9) << Col(x.value("requester", ""), 28)
                << Col(x.value("site", "") + "/" + x.value("target", ""), 34) << x.value("ends", "-") << "\n";
    }
  });

  auto* show = acc->add_subcommand("show", "show one request or grant");
  show->add_option("ID", id, "request id")->required();
  show->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/access/" + id);
    if (g.json_out) { PrintJson(r); return; }
    PrintRequest(r);
  });

  auto* cert = acc->add_subcommand(
      "cert", "obtain a client certificate for your active grant (key made here, 0600)");
  cert->add_option("ID", id, "grant id")->required();
  cert->add_option("--out", out_dir, "directory for <ID>.key and <ID>.pem (default: config dir/grants)");
  cert->callback([&] {
    Api api(g, true);
    GrantCertificate c = EnsureGrantCertificate(api, g, id, out_dir, "", /*renew=*/true);
    if (g.json_out) {
      PrintJson(json{{"grant", id}, {"certificate", c.cert_path}, {"key", c.key_path}, {"not_after", c.not_after}});
      return;
    }
    std::cout << "Grant certificate " << c.cert_path << " (key " << c.key_path << "), valid until "
              << c.not_after << ".\n";
  });
}

}  // namespace torwart::cli
