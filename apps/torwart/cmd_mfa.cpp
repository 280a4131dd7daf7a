// torwart CLI commands: mfa enroll, mfa confirm, mfa status (the own second factor, TOTP).
#include <iostream>

#include "cli.hpp"

namespace torwart::cli {

void RegisterMfaCommands(CLI::App& app, Globals& g) {
  auto* mfa = app.add_subcommand(
      "mfa", "your second factor (TOTP, RFC 6238): needed for every remote-access path");
  mfa->require_subcommand(1);
  mfa->footer(
      "Set-up: `torwart mfa enroll` prints a secret and an otpauth:// link for an authenticator "
      "app (shown once); `torwart mfa confirm CODE` activates it. From then on `torwart login` "
      "asks for the current code. Lost the phone? An admin runs `torwart user mfa-reset NAME`.");

  mfa->add_subcommand("enroll", "create a TOTP secret for your authenticator app (shown once)")
      ->callback([&] {
        Api api(g, true);
        json r = api.Call("POST", "/api/v1/auth/mfa/enroll");
        if (g.json_out) {
          PrintJson(r);
          return;
        }
        std::cout << "Add this account to your authenticator app (shown only now):\n\n"
                  << "    secret: " << r.value("secret", "") << "\n"
                  << "    link:   " << r.value("uri", "") << "\n\n"
                  << "Then activate it with the code the app shows:  torwart mfa confirm CODE\n";
      });

  auto* confirm = mfa->add_subcommand(
      "confirm", "activate the enrolled secret with one valid code; this session counts as MFA");
  static std::string code;
  confirm->add_option("CODE", code, "the 6-digit code the authenticator app shows")->required();
  confirm->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/auth/mfa/confirm", {{"code", code}});
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << "Second factor active. Future logins ask for the current code.\n";
  });

  mfa->add_subcommand("status", "show whether your account and this session have a second factor")
      ->callback([&] {
        Api api(g, true);
        json r = api.Call("GET", "/api/v1/me");
        json out{{"user", r.value("user", "")},
                 {"mfa_state", r.value("mfa_state", "none")},
                 {"session_mfa", r.value("mfa", false)}};
        if (g.json_out) {
          PrintJson(out);
          return;
        }
        std::cout << "second factor: " << out["mfa_state"].get<std::string>() << "; this session: "
                  << (out["session_mfa"].get<bool>() ? "with second factor" : "password only")
                  << "\n";
      });
}

}  // namespace torwart::cli
