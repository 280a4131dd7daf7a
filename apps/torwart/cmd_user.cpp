// torwart CLI commands: users (admin; list and show also for auditors).
#include <unistd.h>

#include <iostream>

#include "cli.hpp"

namespace torwart::cli {
namespace {

std::string State(const json& u) {
  if (u.value("disabled", false)) return "disabled";
  if (u.contains("locked_until")) return "locked until " + u.value("locked_until", "");
  if (u.value("must_change_password", false)) return "password change pending";
  return "active";
}

std::string Path(const std::string& name, const std::string& action = "") {
  return "/api/v1/users/" + UrlEncode(name) + (action.empty() ? "" : "/" + action);
}

}  // namespace

void RegisterUserCommands(CLI::App& app, Globals& g) {
  auto* users = app.add_subcommand("user", "manage users (admin; list/show also for auditors)");
  users->require_subcommand(1);
  static std::string uname, urole, uorg;

  auto* uadd = users->add_subcommand("add", "create a user; prints a one-time password");
  uadd->add_option("NAME", uname, "login name")->required();
  uadd->add_option("--role", urole, "admin, operator, approver, technician, auditor, vendor")
      ->required();
  uadd->add_option("--organisation", uorg,
                   "employer or contractor (shown in audit records and reports)");
  uadd->callback([&] {
    Api api(g, true);
    json body{{"name", uname}, {"role", urole}};
    if (!uorg.empty()) body["organisation"] = uorg;
    json r = api.Call("POST", "/api/v1/users", body);
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "User " << uname << " (" << urole << ") created. One-time password (shown once):\n\n    "
              << r.value("one_time_password", "") << "\n\nIt must be changed at the first login.\n";
  });

  users->add_subcommand("list", "list users")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/users");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("NAME", 20) << Col("ROLE", 12) << Col("ORGANISATION", 20) << Col("MFA", 9)
              << "STATE\n";
    for (auto& u : r["users"]) {
      std::cout << Col(u.value("name", ""), 20) << Col(u.value("role", ""), 12)
                << Col(u.value("organisation", ""), 20) << Col(u.value("mfa", ""), 9) << State(u)
                << "\n";
    }
  });

  auto* show = users->add_subcommand("show", "show one user");
  show->add_option("NAME", uname, "login name")->required();
  show->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", Path(uname));
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "name:          " << r.value("name", "") << "\n"
              << "role:          " << r.value("role", "") << "\n"
              << "organisation:  " << r.value("organisation", "") << "\n"
              << "second factor: " << r.value("mfa", "") << "\n"
              << "state:         " << State(r) << "\n"
              << "created:       " << r.value("created", "") << "\n";
  });

  for (const char* action : {"disable", "enable"}) {
    bool disable = std::string(action) == "disable";
    auto* c = users->add_subcommand(
        action, disable ? "disable a user: ends their sessions and grants, refuses logins"
                        : "enable a disabled user again (also clears a lockout)");
    c->add_option("NAME", uname, "login name")->required();
    c->callback([&g, action, disable] {
      Api api(g, true);
      json r = api.Call("POST", Path(uname, action));
      if (g.json_out) { PrintJson(r); return; }
      std::cout << "User " << uname << (disable ? " disabled; sessions and grants ended.\n"
                                                : " enabled.\n");
    });
  }

  auto* reset = users->add_subcommand(
      "reset-password", "issue a new one-time password (ends the user's sessions)");
  reset->add_option("NAME", uname, "login name")->required();
  reset->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", Path(uname, "password-reset"));
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "New one-time password for " << uname << " (shown once):\n\n    "
              << r.value("one_time_password", "") << "\n\nIt must be changed at the next login.\n";
  });

  auto* mfa_reset = users->add_subcommand(
      "mfa-reset", "remove a user's second factor (lost phone); ends their sessions");
  mfa_reset->add_option("NAME", uname, "login name")->required();
  mfa_reset->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", Path(uname, "mfa-reset"));
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Second factor of " << uname
              << " removed; they enroll again with `torwart mfa enroll`.\n";
  });
}

}  // namespace torwart::cli
