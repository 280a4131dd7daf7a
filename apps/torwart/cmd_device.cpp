// torwart CLI commands: devices: add, list, show, enrollment, revoke, ping, quarantine.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace torwart::cli {

namespace {

void PrintDevice(const json& d) {
  std::cout << "name:     " << d.value("name", "") << "\n"
            << "id:       " << d.value("id", "") << "\n"
            << "site:     " << d.value("site", "") << "\n";
  std::string tags;
  for (auto& t : d.value("tags", json::array())) tags += (tags.empty() ? "" : ", ") + t.get<std::string>();
  std::cout << "tags:     " << (tags.empty() ? "-" : tags) << "\n"
            << "status:   " << d.value("status", "") << "\n";
  if (d.contains("certificate")) {
    std::cout << "cert:     serial " << d["certificate"].value("serial", "") << ", valid until "
              << d["certificate"].value("not_after", "") << "\n";
  }
  if (d.value("bind_machine", false)) {
    std::cout << "binding:  machine " << d.value("machine_fingerprint", "(not yet enrolled)") << "\n";
  }
  if (d.value("quarantined", false)) std::cout << "QUARANTINED: tunnel streams are refused\n";
  std::cout << "online:   " << (d.value("online", false) ? "yes" : "no");
  if (d.contains("last_seen")) std::cout << " (last seen " << d.value("last_seen", "") << ")";
  if (d.contains("agent_version")) std::cout << ", agent " << d.value("agent_version", "");
  std::cout << "\n";
  // Control-channel telemetry: top-level scalar fields one per line, nested ones as JSON.
  for (const char* section : {"inventory", "health"}) {
    if (!d.contains(section) || !d[section].is_object()) continue;
    std::cout << section << ":" << (d.contains(std::string(section) + "_time")
                                        ? "  (" + d.value(std::string(section) + "_time", "") + ")"
                                        : std::string())
              << "\n";
    for (auto& [k, v] : d[section].items()) {
      if (k == "v") continue;
      std::cout << "  " << Col(k, 16) << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    }
  }
  if (d.contains("certificates") && !d["certificates"].empty()) {
    std::cout << "certificates:\n";
    for (auto& c : d["certificates"]) {
      std::cout << "  " << Col(c.value("serial", ""), 34) << Col(c.value("status", ""), 8)
                << c.value("not_before", "") << " .. " << c.value("not_after", "") << "\n";
    }
  }
}

}  // namespace

void RegisterDeviceCommands(CLI::App& app, Globals& g) {
  // devices
  auto* dev = app.add_subcommand("device", "register, inspect and revoke devices (gateways)");
  dev->require_subcommand(1);
  auto* dadd = dev->add_subcommand("add", "register a device; prints a one-time enrollment reference and secret");
  static std::string dname, dsite, dttl, dreason;
  static std::vector<std::string> dtags;
  static bool dbind = false;
  dadd->add_option("NAME", dname, "device name")->required();
  dadd->add_option("--site", dsite, "site the device belongs to")->required();
  dadd->add_option("--tag", dtags, "tag (repeatable)");
  dadd->add_flag("--bind-machine", dbind, "bind the certificate to the machine it enrolls on");
  dadd->add_option("--ttl", dttl, "how long the enrollment secret stays valid (default 24h)");
  dadd->callback([&] {
    Api api(g, true);
    json body{{"name", dname}, {"site", dsite}, {"tags", dtags}, {"bind_machine", dbind}};
    if (!dttl.empty()) body["enrollment_ttl"] = dttl;
    json r = api.Call("POST", "/api/v1/devices", body);
    if (g.json_out) { PrintJson(r); return; }
    auto& e = r["enrollment"];
    std::cout << "Device " << dname << " registered (id " << r.value("id", "") << ").\n\n"
              << "One-time enrollment credentials (single use, valid until " << e.value("expires", "") << "):\n"
              << "    reference: " << e.value("reference", "") << "\n"
              << "    secret:    " << e.value("secret", "") << "\n\n"
              << "On the device:\n"
              << "    torwart-agent enroll --server " << api.server() << " --ca chain.pem \\\n"
              << "        --ref " << e.value("reference", "") << " --secret " << e.value("secret", "") << " --key-store file\n";
  });
  dev->add_subcommand("list", "list devices")->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/devices");
    if (g.json_out) { PrintJson(r); return; }
    std::cout << Col("NAME", 20) << Col("SITE", 14) << Col("STATUS", 11) << Col("ONLINE", 8)
              << Col("LAST SEEN", 22) << "CERTIFICATE VALID UNTIL\n";
    for (auto& d : r["devices"]) {
      std::cout << Col(d.value("name", ""), 20) << Col(d.value("site", ""), 14) << Col(d.value("status", ""), 11)
                << Col(d.value("online", false) ? "yes" : "no", 8) << Col(d.value("last_seen", "-"), 22)
                << (d.contains("certificate") ? d["certificate"].value("not_after", "") : "-") << "\n";
    }
  });
  auto* dshow = dev->add_subcommand("show", "show one device with its certificates");
  dshow->add_option("NAME", dname, "device name")->required();
  dshow->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/devices/" + dname);
    if (g.json_out) PrintJson(r); else PrintDevice(r);
  });
  auto* dsecret = dev->add_subcommand("enrollment", "issue a new one-time enrollment secret for a device");
  dsecret->add_option("NAME", dname, "device name")->required();
  dsecret->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/enrollment", json::object());
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "reference: " << r["enrollment"].value("reference", "") << "\nsecret:    "
              << r["enrollment"].value("secret", "") << "\nvalid until " << r["enrollment"].value("expires", "") << "\n";
  });
  auto* drevoke = dev->add_subcommand("revoke", "revoke every certificate of a device (CRL, renewal refused)");
  drevoke->add_option("NAME", dname, "device name")->required();
  drevoke->add_option("--reason", dreason, "why (e.g. keyCompromise, cessationOfOperation, or free text)")->required();
  drevoke->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/revoke", {{"reason", dreason}});
    if (g.json_out) { PrintJson(r); return; }
    std::cout << "Device " << dname << " revoked; " << r.value("certificates_revoked", 0)
              << " certificate(s) on the CRL. Renewal and re-enrollment are refused.\n";
  });
  auto* dping = dev->add_subcommand(
      "ping", "send a ping command over the control channel and print the round-trip time");
  static int dping_timeout_ms = 5000;
  dping->add_option("NAME", dname, "device name")->required();
  dping->add_option("--timeout-ms", dping_timeout_ms, "how long to wait for the answer (100-60000)")
      ->check(CLI::Range(100, 60000));
  dping->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/ping",
                      {{"timeout_ms", dping_timeout_ms}});
    if (g.json_out) { PrintJson(r); return; }
    if (!r.value("ok", false)) Die("device " + dname + " answered with an error: " + r.value("error", ""));
    char rtt[32];
    std::snprintf(rtt, sizeof rtt, "%.1f", r.value("rtt_ms", 0.0));
    std::cout << "reply from " << dname << ": time=" << rtt << " ms\n";
  });
  auto* dquar = dev->add_subcommand(
      "quarantine", "refuse every new tunnel stream to a device and kill its live ones (--release: undo)");
  static bool drelease = false;
  dquar->add_option("NAME", dname, "device name")->required();
  dquar->add_option("--reason", dreason, "why (audited; sent to the gateway)");
  dquar->add_flag("--release", drelease, "lift the quarantine");
  dquar->add_flag("--json", g.json_out, "machine-readable output");
  dquar->callback([&] {
    Api api(g, true);
    json r = api.Call("POST", "/api/v1/devices/" + dname + "/quarantine",
                      {{"on", !drelease}, {"reason", dreason}});
    if (g.json_out) { PrintJson(r); return; }
    if (r.value("quarantined", !drelease)) {
      std::cout << "Device " << dname << " is in quarantine: new streams are refused, live ones killed.\n";
    } else {
      std::cout << "Device " << dname << " released from quarantine.\n";
    }
  });

}

}  // namespace torwart::cli
