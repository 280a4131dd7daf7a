// torwart CLI commands: login, passwd, logout, whoami.
#include <unistd.h>

#include <iostream>

#include "cli.hpp"

namespace torwart::cli {

void RegisterSessionCommands(CLI::App& app, Globals& g) {
  // login / logout / passwd / whoami
  auto* login = app.add_subcommand("login", "log in and keep a session token (0600) in the config dir");
  static std::string user;
  static bool pw_stdin = false;
  login->add_option("-u,--user", user, "user name")->required();
  login->add_flag("--password-stdin", pw_stdin, "read the password from standard input");
  login->callback([&] {
    Api api(g, false);
    std::string pw = ReadSecret("Password for " + user + ": ");
    json r = api.Call("POST", "/api/v1/auth/login", {{"user", user}, {"password", pw}});
    if (!SaveSession(g, {api.server(), api.ca(), r.value("token", ""), user})) {
      Die("cannot write the session file in " + ConfigDir(g));
    }
    bool must = r.value("must_change_password", false);
    if (g.json_out) {
      r.erase("token");
      PrintJson(r);
    } else {
      std::cout << "Logged in to " << api.server() << " as " << user << " (" << r.value("role", "")
                << "), session valid until " << r.value("expires", "") << ".\n";
    }
    if (must && !pw_stdin && isatty(STDIN_FILENO)) {
      std::cout << "Your one-time password must be changed now.\n";
      std::string n1 = ReadSecret("New password (at least 12 characters): ");
      std::string n2 = ReadSecret("Repeat new password: ");
      if (n1 != n2) Die("the two passwords differ; run `torwart passwd` to try again");
      Api a2(g, true);
      a2.Call("POST", "/api/v1/auth/password", {{"old_password", pw}, {"new_password", n1}});
      std::cout << "Password changed.\n";
    } else if (must && !g.json_out) {
      std::cout << "Your one-time password must be changed before anything else: run `torwart passwd`.\n";
    }
  });
  auto* passwd = app.add_subcommand("passwd", "change your password (reads current and new password; "
                                              "from stdin: two lines)");
  passwd->callback([&] {
    Api api(g, true);
    std::string o = ReadSecret("Current password: ");
    std::string n = ReadSecret("New password (at least 12 characters): ");
    if (isatty(STDIN_FILENO) && ReadSecret("Repeat new password: ") != n) Die("the two passwords differ");
    api.Call("POST", "/api/v1/auth/password", {{"old_password", o}, {"new_password", n}});
    if (g.json_out) PrintJson({{"changed", true}}); else std::cout << "Password changed.\n";
  });
  app.add_subcommand("logout", "end the session")->callback([&] {
    Api api(g, true);
    api.Call("POST", "/api/v1/auth/logout");
    auto s = LoadSession(g);
    if (s) { s->token.clear(); SaveSession(g, *s); }
    if (!g.json_out) std::cout << "Logged out.\n"; else PrintJson({{"logged_out", true}});
  });
  app.add_subcommand("whoami", "show the logged-in user")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/me");
    if (g.json_out) PrintJson(r); else std::cout << r.value("user", "") << " (" << r.value("role", "") << ") at " << api.server() << "\n";
  });

}

}  // namespace torwart::cli
