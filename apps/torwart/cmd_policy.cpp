// torwart CLI commands: the access policy: check (offline), apply, show, versions, restore,
// explain. Format: docs/design/policy.md.
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli.hpp"
#include "torwart/policy/policy.hpp"

namespace torwart::cli {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Die("cannot read " + path, 2);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void PrintErrors(const std::string& file, const json& errors) {
  for (const auto& e : errors) {
    std::cerr << file << ":" << e.value("text", e.value("message", "")) << "\n";
  }
}

}  // namespace

void RegisterPolicyCommands(CLI::App& app, Globals& g) {
  auto* pol = app.add_subcommand("policy", "the access policy: check, apply, show, versions, restore, explain");
  pol->require_subcommand(1);
  static std::string file, comment, user, target, at, scope, duration, reason;
  static int64_t version = 0;
  static bool break_glass = false;
  static std::vector<std::string> roles;

  auto* check = pol->add_subcommand(
      "check", "validate a policy file and run its tests, offline (no server needed)");
  check->add_option("FILE", file, "policy document (JSON with comments)")->required();
  check->callback([&] {
    std::string text = ReadText(file);
    auto r = policy::CompileDetailed(text);
    size_t tests = r.policy ? policy::RunTests(*r.policy).size() : 0;
    if (g.json_out) {
      json errors = json::array();
      for (const auto& d : r.errors) {
        errors.push_back({{"line", d.pos.line}, {"column", d.pos.column}, {"message", d.message}});
      }
      json out{{"valid", r.errors.empty()}, {"errors", errors}, {"tests", tests}};
      if (r.policy) {
        out["rules"] = r.policy->rule_count();
        out["targets"] = r.policy->target_count();
      }
      PrintJson(out);
    } else if (r.errors.empty()) {
      std::cout << file << ": OK: " << r.policy->rule_count() << " rules, "
                << r.policy->target_count() << " targets, " << tests << " tests passed\n";
    } else {
      for (const auto& d : r.errors) std::cerr << file << ":" << d.String() << "\n";
      std::cerr << file << ": " << r.errors.size() << " error(s); policy invalid\n";
    }
    if (!r.errors.empty()) std::exit(1);
  });

  auto* apply = pol->add_subcommand(
      "apply", "validate and activate a policy on the server (refused if invalid or a test fails)");
  apply->add_option("FILE", file, "policy document")->required();
  apply->add_option("--comment", comment, "why this change (kept with the version)");
  apply->callback([&] {
    Api api(g, true);
    auto [status, r] = api.Try("PUT", "/api/v1/policy", json{{"text", ReadText(file)}, {"comment", comment}});
    if (status >= 400) {
      if (g.json_out) PrintJson(r);
      if (r.is_object() && r.contains("errors")) {
        PrintErrors(file, r["errors"]);
        std::cerr << "torwart: policy refused (" << r["errors"].size()
                  << " error(s)); the active policy is unchanged\n";
      } else {
        std::cerr << "torwart: "
                  << (r.is_object() && r.contains("error") ? r["error"].value("message", "")
                                                           : "server answered " + std::to_string(status))
                  << "\n";
      }
      std::exit(status == 401 || status == 403 ? 3 : 1);
    }
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Policy version " << r.value("version", 0) << " is active (" << r.value("rules", 0)
              << " rules, " << r.value("tests", 0) << " tests passed).\n";
  });

  pol->add_subcommand("show", "print the active policy")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/policy");
    if (g.json_out) { PrintJson(r); return; }
    std::cerr << "# version " << r.value("version", 0) << " by " << r.value("author", "") << " at "
              << r.value("created", "") << "\n";
    std::cout << r.value("text", "");
  });

  pol->add_subcommand("versions", "list stored policy versions")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/policy/versions");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("VERSION", 9) << Col("ACTIVE", 8) << Col("AUTHOR", 20) << Col("CREATED", 22) << "COMMENT\n";
    for (auto& v : r["versions"]) {
      std::cout << Col(std::to_string(v.value("version", 0)), 9) << Col(v.value("active", false) ? "*" : "", 8)
                << Col(v.value("author", ""), 20) << Col(v.value("created", ""), 22) << v.value("comment", "") << "\n";
    }
  });

  auto* restore = pol->add_subcommand("restore", "activate an earlier version again (as a new version)");
  restore->add_option("N", version, "version number")->required();
  restore->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/policy/versions/" + std::to_string(version) + "/restore", json::object());
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Version " << version << " restored as version " << r.value("version", 0) << ".\n";
  });

  auto* explain = pol->add_subcommand(
      "explain", "why would USER be allowed or denied TARGET? names the deciding rule or what is missing");
  explain->add_option("--user", user, "user name (default: you)");
  explain->add_option("--target", target, "target name (SITE/TARGET or TARGET)")->required();
  explain->add_option("--at", at, "time, RFC 3339, e.g. 2026-05-04T21:00:00+02:00 (default: now)");
  explain->add_option("--scope", scope, "protocol scope, e.g. modbus:read");
  explain->add_option("--duration", duration, "requested duration, e.g. 2h");
  explain->add_option("--reason", reason, "the reason that would be given");
  explain->add_option("--role", roles, "assume an extra directory role (repeatable)");
  explain->add_flag("--break-glass", break_glass, "as an emergency (break-glass) request");
  explain->callback([&] {
    Api api(g, true);
    std::string t = target.substr(target.find('/') == std::string::npos ? 0 : target.find('/') + 1);
    json body{{"target", t}, {"break_glass", break_glass}};
    if (!user.empty()) body["user"] = user;
    if (!at.empty()) body["at"] = at;
    if (!scope.empty()) body["scope"] = scope;
    if (!duration.empty()) body["duration"] = duration;
    if (!reason.empty()) body["reason"] = reason;
    if (!roles.empty()) body["roles"] = roles;
    json r = api.Call("POST", "/api/v1/policy/explain", body);
    if (g.json_out) { PrintJson(r); return; }
    std::cout << r.value("text", "");
    if (!r.value("allow", false)) std::exit(4);
  });
}

}  // namespace torwart::cli
