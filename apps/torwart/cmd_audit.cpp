// torwart CLI commands: the audit trail (query, verify, export, legal holds, retention).
#include <unistd.h>

#include <iostream>

#include "cli.hpp"

namespace torwart::cli {
namespace {

struct Filters {
  std::string type, actor, target, category, since, until;
};

void AddFilters(CLI::App* c, Filters& f) {
  c->add_option("--type", f.type, "event type prefix, e.g. pki. or device.revoke");
  c->add_option("--actor", f.actor, "user name or device id");
  c->add_option("--target", f.target, "target (device, user, serial, ...)");
  c->add_option("--category", f.category, "category: auth, device, pki, access, audit, ...");
  c->add_option("--since", f.since, "RFC 3339 time, inclusive (e.g. 2026-01-01T00:00:00Z)");
  c->add_option("--until", f.until, "RFC 3339 time, exclusive");
}

std::string Query(const Filters& f) {
  std::string q;
  auto add = [&](const char* k, const std::string& v) {
    if (!v.empty()) q += std::string(q.empty() ? "?" : "&") + k + "=" + UrlEncode(v);
  };
  add("type", f.type);
  add("actor", f.actor);
  add("target", f.target);
  add("category", f.category);
  add("since", f.since);
  add("until", f.until);
  return q;
}

}  // namespace

void RegisterAuditCommands(CLI::App& app, Globals& g) {
  auto* aud = app.add_subcommand(
      "audit", "the audit trail: query, verify, export, legal holds (admin, auditor)");
  aud->require_subcommand(1);

  // query (alias: list)
  static Filters qf;
  static int limit = 100;
  auto* query = aud->add_subcommand("query", "list audit events, oldest first (alias: list)");
  query->alias("list");
  AddFilters(query, qf);
  query->add_option("--limit", limit, "at most this many events (default 100, max 10000)");
  query->callback([&] {
    Api api(g, true);
    std::string q = Query(qf);
    q += std::string(q.empty() ? "?" : "&") + "limit=" + std::to_string(limit);
    json r = api.Call("GET", "/api/v1/audit" + q);
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    for (auto& e : r["events"]) {
      std::string actor = e.value("actor", "");
      std::cout << Col(std::to_string(e.value("seq", 0)), 7) << e.value("time", "") << "  "
                << Col(e.value("type", ""), 24) << Col(e.value("result", ""), 8)
                << Col(actor.empty() ? "-" : actor, 14) << e.value("target", "")
                << (e.value("reason", "").empty() ? "" : "  (" + e.value("reason", "") + ")")
                << "\n";
    }
  });

  // verify
  auto* verify = aud->add_subcommand(
      "verify",
      "verify the hash chain and signed checkpoints on the server; exit 1 and the seq of each "
      "problem if records were modified, deleted, inserted, reordered or truncated. Offline: "
      "torwartd audit verify --data-dir DIR");
  verify->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/audit/verify");
    if (g.json_out) {
      PrintJson(r);
    } else {
      std::cout << (r.value("ok", false) ? "audit chain intact" : "AUDIT CHAIN DAMAGED") << ": "
                << r.value("records", 0) << " records, " << r.value("purged", 0)
                << " purged by retention, " << r.value("checkpoints", 0)
                << " signed checkpoints, anchored through seq " << r.value("anchored_through", 0)
                << "\n";
      for (auto& p : r["problems"]) {
        std::cout << "  seq " << p.value("seq", 0) << ": " << p.value("kind", "") << ": "
                  << p.value("message", "") << "\n";
      }
    }
    if (!r.value("ok", false)) std::exit(1);
  });

  // export
  static Filters ef;
  auto* exp = aud->add_subcommand(
      "export", "write matching events as JSON lines to stdout (e.g. > audit.jsonl)");
  AddFilters(exp, ef);
  exp->callback([&] {
    Api api(g, true);
    std::cout << api.CallRaw("GET", "/api/v1/audit/export" + Query(ef)) << std::flush;
  });

  // status
  auto* status = aud->add_subcommand("status", "audit store health, capacity and forwarding");
  status->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/audit/status");
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << "writable:    " << (r.value("writable", false) ? "yes" : "NO: " + r.value("error", ""))
              << "\nhead seq:    " << r.value("head_seq", 0)
              << "\nused bytes:  " << r.value("used_bytes", 0) << " of "
              << (r.value("capacity_bytes", 0) ? std::to_string(r.value("capacity_bytes", 0))
                                               : std::string("unlimited"))
              << (r.value("capacity_warning", false) ? "  (WARNING: >= 80 %)" : "")
              << "\nforwarding:  "
              << (r.value("forwarding", false)
                      ? (r.value("forwarder_connected", false) ? "connected" : "not connected") +
                            std::string(", forwarded through seq ") +
                            std::to_string(r.value("forwarded_seq", 0))
                      : std::string("off"))
              << "\n";
  });

  // retention run
  auto* purge = aud->add_subcommand(
      "purge", "apply the configured retention now (admin); held records are kept");
  purge->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/audit/retention", json::object());
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << "purged " << r.value("purged", 0) << " record(s); " << r.value("held", 0)
              << " kept by legal holds\n";
  });

  // hold add|remove|list
  auto* hold = aud->add_subcommand("hold", "legal holds: records they match are never purged");
  hold->require_subcommand(1);
  static std::string h_category, h_target, h_since, h_until, h_reason;
  auto* hadd = hold->add_subcommand("add", "add a legal hold (by category, target, time range)");
  hadd->add_option("--category", h_category, "only this category (default: all)");
  hadd->add_option("--target", h_target, "only this target (default: all)");
  hadd->add_option("--since", h_since, "RFC 3339 start (default: open)");
  hadd->add_option("--until", h_until, "RFC 3339 end, exclusive (default: open)");
  hadd->add_option("--reason", h_reason, "why (case number, request)")->required();
  hadd->callback([&] {
    Api api(g, true);
    json body{{"reason", h_reason}};
    if (!h_category.empty()) body["category"] = h_category;
    if (!h_target.empty()) body["target"] = h_target;
    if (!h_since.empty()) body["since"] = h_since;
    if (!h_until.empty()) body["until"] = h_until;
    json r = api.Call("POST", "/api/v1/audit/holds", body);
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << "legal hold " << r.value("id", 0) << " added\n";
  });
  static int64_t h_id = 0;
  auto* hrm = hold->add_subcommand("remove", "remove a legal hold");
  hrm->add_option("ID", h_id, "hold id (see `torwart audit hold list`)")->required();
  hrm->callback([&] {
    Api api(g, true);
    json r = api.Call("DELETE", "/api/v1/audit/holds/" + std::to_string(h_id));
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    std::cout << "legal hold " << h_id << " removed\n";
  });
  auto* hlist = hold->add_subcommand("list", "list legal holds");
  hlist->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/audit/holds");
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    for (auto& h : r["holds"]) {
      std::cout << Col(std::to_string(h.value("id", 0)), 5)
                << Col(h.value("category", "").empty() ? "*" : h.value("category", ""), 10)
                << Col(h.value("target", "").empty() ? "*" : h.value("target", ""), 16)
                << h.value("since", "-") << " .. " << h.value("until", "-") << "  "
                << h.value("reason", "") << "\n";
    }
  });
}

}  // namespace torwart::cli
