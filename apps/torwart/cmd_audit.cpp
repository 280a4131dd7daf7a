// torwart CLI commands: the audit trail.
#include <unistd.h>

#include <iostream>

#include "cli.hpp"

namespace torwart::cli {

void RegisterAuditCommands(CLI::App& app, Globals& g) {
  // audit
  auto* aud = app.add_subcommand("audit", "read the audit trail (admin, auditor)");
  aud->require_subcommand(1);
  auto* alist = aud->add_subcommand("list", "list audit events, oldest first");
  static std::string atype, aactor, atarget, asince, auntil;
  static int alimit = 100;
  alist->add_option("--type", atype, "event type prefix, e.g. pki. or device.revoke");
  alist->add_option("--actor", aactor, "user name or device id");
  alist->add_option("--target", atarget, "target");
  alist->add_option("--since", asince, "RFC 3339 time");
  alist->add_option("--until", auntil, "RFC 3339 time");
  alist->add_option("--limit", alimit, "at most this many events (default 100)");
  alist->callback([&] {
    Api api(g, true);
    std::string q = "/api/v1/audit?limit=" + std::to_string(alimit);
    auto add = [&](const char* k, const std::string& v) {
      if (!v.empty()) q += std::string("&") + k + "=" + UrlEncode(v);
    };
    add("type", atype); add("actor", aactor); add("target", atarget); add("since", asince); add("until", auntil);
    json r = api.Call("GET", q);
    if (g.json_out) { PrintJson(r); return; }
    for (auto& e : r["events"]) {
      std::cout << e.value("time", "") << "  " << Col(e.value("type", ""), 24) << Col(e.value("result", ""), 8)
                << Col(e.value("actor", "-").empty() ? "-" : e.value("actor", "-"), 14)
                << e.value("target", "") << (e.value("reason", "").empty() ? "" : "  (" + e.value("reason", "") + ")") << "\n";
    }
  });

}

}  // namespace torwart::cli
