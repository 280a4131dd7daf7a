// torwart CLI commands: users (admin).
#include <unistd.h>

#include <iostream>

#include "cli.hpp"

namespace torwart::cli {

void RegisterUserCommands(CLI::App& app, Globals& g) {
  // users
  auto* users = app.add_subcommand("user", "manage users (admin)");
  users->require_subcommand(1);
  auto* uadd = users->add_subcommand("add", "create a user; prints a one-time password");
  static std::string uname, urole;
  uadd->add_option("NAME", uname, "login name")->required();
  uadd->add_option("--role", urole, "admin, operator, approver, technician, auditor, vendor")->required();
  uadd->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/users", {{"name", uname}, {"role", urole}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "User " << uname << " (" << urole << ") created. One-time password (shown once):\n\n    "
              << r.value("one_time_password", "") << "\n\nIt must be changed at the first login.\n";
  });
  users->add_subcommand("list", "list users")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/users");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("NAME", 20) << Col("ROLE", 12) << "STATE\n";
    for (auto& u : r["users"]) {
      std::string st = u.value("disabled", false) ? "disabled" : u.contains("locked_until") ? "locked" : u.value("must_change_password", false) ? "password change pending" : "active";
      std::cout << Col(u.value("name", ""), 20) << Col(u.value("role", ""), 12) << st << "\n";
    }
  });

}

}  // namespace torwart::cli
