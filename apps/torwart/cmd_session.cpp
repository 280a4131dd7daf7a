// torwart CLI commands: login, passwd, logout, whoami.
#include <unistd.h>

#include <iostream>
#include <tuple>

#include "cli.hpp"

namespace torwart::cli {

void RegisterSessionCommands(CLI::App& app, Globals& g) {
  // login / logout / passwd / whoami
  auto* login = app.add_subcommand("login", "log in and keep a session token (0600) in the config dir");
  static std::string user, totp;
  static bool pw_stdin = false;
  login->add_option("-u,--user", user, "user name")->required();
  login->add_flag("--password-stdin", pw_stdin,
                  "read the password from standard input (and, if the account has a second "
                  "factor and --totp is not given, the one-time code from the next line)");
  login->add_option("--totp", totp, "the 6-digit one-time code of your authenticator app");
  login->footer(
      "Accounts with a second factor (torwart mfa enroll) need the current one-time code: it is "
      "asked for, or taken from --totp. Remote access needs such a session.");
  login->callback([&] {
    Api api(g, false);
    std::string pw = ReadSecret("Password for " + user + ": ");
    json body{{"user", user}, {"password", pw}};
    if (!totp.empty()) body["totp"] = totp;
    auto [status, r] = api.Try("POST", "/api/v1/auth/login", body);
    auto code_of = [](const json& j) {
      return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
    };
    if (status == 401 && code_of(r) == "totp_required" && totp.empty()) {
      std::string code;
      if (isatty(STDIN_FILENO)) {
        code = ReadSecret("One-time code (authenticator app): ");
      } else if (!std::getline(std::cin, code) || code.empty()) {
        Die("this account needs a one-time code: pass --totp CODE (or a second line on standard "
            "input)", 3);
      }
      body["totp"] = code;
      std::tie(status, r) = api.Try("POST", "/api/v1/auth/login", body);
    }
    if (status >= 400) {
      std::string msg = "server answered " + std::to_string(status);
      if (r.is_object() && r.contains("error")) msg = r["error"].value("message", msg);
      Die(msg, status == 401 || status == 403 ? 3 : 1);
    }
    if (!SaveSession(g, {api.server(), api.ca(), r.value("token", ""), user})) {
      Die("cannot write the session file in " + ConfigDir(g));
    }
    bool must = r.value("must_change_password", false);
    if (g.json_out) {
      r.erase("token");
      PrintJson(r);
    } else {
      std::cout << "Logged in to " << api.server() << " as " << user << " (" << r.value("role", "")
                << (r.value("mfa", false) ? ", with second factor" : "")
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
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << r.value("user", "") << " (" << r.value("role", "") << ") at " << api.server()
              << (r.value("mfa", false) ? ", session with second factor" : "")
              << "; second factor: " << r.value("mfa_state", "none") << "\n";
  });

}

}  // namespace torwart::cli
