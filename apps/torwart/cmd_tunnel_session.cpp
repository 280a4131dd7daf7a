// torwart CLI commands: tunnel sessions (streams through the relay): `session list [--all]` and
// `session kill ID [--reason R]` over GET /api/v1/tunnels and POST /api/v1/tunnels/{id}/kill
// (docs/design/tunnel.md). Not to be confused with the login session (login/logout/whoami).
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace torwart::cli {
namespace {

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

uint64_t Num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>()
         : it != j.end() && it->is_number_integer() && it->get<int64_t>() > 0
             ? static_cast<uint64_t>(it->get<int64_t>())
             : 0;
}

}  // namespace

void RegisterTunnelSessionCommands(CLI::App& app, Globals& g) {
  auto* sess = app.add_subcommand("session", "tunnel sessions (streams): list live ones, kill one");
  sess->require_subcommand(1);
  static bool all = false;
  static std::string id, reason;

  auto* list = sess->add_subcommand("list", "list live tunnel streams (--all: also ended ones)");
  list->add_flag("--all", all, "include ended streams");
  list->add_flag("--json", g.json_out, "machine-readable output");
  list->callback([&g] {
    Api api(g, true);
    json r = api.Call("GET", std::string("/api/v1/tunnels?state=") + (all ? "all" : "live"));
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    const json rows = r.value("tunnels", json::array());
    if (rows.empty()) {
      std::cout << (all ? "No tunnel streams.\n" : "No live tunnel streams.\n");
      return;
    }
    std::cout << Col("ID", 20) << Col("USER", 26) << Col("TARGET", 32) << Col("SINCE", 21)
              << Col("BYTES UP/DOWN", 22) << "STATE\n";
    for (const auto& t : rows) {
      std::string state = t.value("state", "");
      if (state == "ended" && !t.value("end_reason", "").empty()) {
        state += " (" + t.value("end_reason", "") + ")";
      }
      std::cout << Col(t.value("id", ""), 20) << Col(t.value("user", ""), 26)
                << Col(t.value("site", "") + "/" + t.value("target", ""), 32)
                << Col(t.value("opened", ""), 21)
                << Col(Bytes(Num(t, "bytes_up")) + " / " + Bytes(Num(t, "bytes_down")), 22) << state
                << "\n";
    }
  });

  auto* kill = sess->add_subcommand("kill", "end a live tunnel stream now (the gateway cuts it)");
  kill->add_option("ID", id, "stream id (st-…), see `torwart session list`")->required();
  kill->add_option("--reason", reason, "why (audited, shown to the technician)");
  kill->add_flag("--json", g.json_out, "machine-readable output");
  kill->callback([&g] {
    Api api(g, true);
    auto [status, r] =
        api.Try("POST", "/api/v1/tunnels/" + UrlEncode(id) + "/kill", json{{"reason", reason}});
    if (status == 404) Die("no tunnel stream " + id + " (see `torwart session list --all`)");
    if (status >= 400) {
      std::string msg = r.is_object() && r.contains("error")
                            ? r["error"].value("message", "")
                            : "server answered " + std::to_string(status);
      Die(msg, status == 401 || status == 403 ? 3 : 1);
    }
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    int n = r.value("killed", 0);
    if (n == 0) {
      std::cout << "Stream " << id << " was not live; nothing to kill.\n";
    } else {
      std::cout << "Killed " << id << " (" << n << " stream" << (n == 1 ? "" : "s") << ").\n";
    }
  });
}

}  // namespace torwart::cli
