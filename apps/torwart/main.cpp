// torwart: the command-line client for operators, technicians, auditors and scripts.
// Talks to torwartd's REST API over HTTPS; `--json` prints machine-readable output.
// Each area's subcommands live in cmd_<area>.cpp; shared plumbing in cli_common.cpp.
#include <signal.h>

#include "cli.hpp"

using namespace torwart::cli;

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"torwart - secure remote maintenance: log in, register devices, read the audit trail."};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--json, --server, …) also after the subcommand
  Globals g;
  app.add_option("--server", g.server, "torwartd URL, e.g. https://127.0.0.1:8443 (remembered at login)");
  app.add_option("--ca", g.ca, "CA chain (PEM) to verify the server (remembered at login)");
  app.add_option("--config-dir", g.config_dir, "where the session is kept (default ~/.config/torwart)");
  app.add_flag("--json", g.json_out, "machine-readable output");
  app.set_version_flag("--version", "torwart 0.1.0");

  RegisterSessionCommands(app, g);
  RegisterUserCommands(app, g);
  RegisterDeviceCommands(app, g);
  RegisterAuditCommands(app, g);
  RegisterMfaCommands(app, g);
  RegisterPolicyCommands(app, g);
  RegisterAccessCommands(app, g);
  RegisterRecordingCommands(app, g);
  RegisterConnectCommands(app, g);
  RegisterTunnelSessionCommands(app, g);
  RegisterReportCommands(app, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
