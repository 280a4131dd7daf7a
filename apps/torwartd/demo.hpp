// `torwartd --demo` (used by `make run`): a server-side bootstrap for the local demo agent. It
// makes sure the device "demo-gateway" (site "demo") exists and, while it is not enrolled, writes
// a fresh one-time enrollment reference and secret to <data_dir>/demo-enrollment.json (0600) for
// scripts/run-demo to hand to `torwart-agent enroll`. Never used outside the demo: the admin's
// one-time password stays the human's. Call from main's thread during start-up.
#pragma once

#include <CLI/CLI.hpp>

#include "context.hpp"

namespace torwart::server {

// Adds --demo to torwartd's command line.
void AddDemoOption(CLI::App& app);
// Does nothing unless --demo was given. Audited as a system action.
Expected<void> SetUpDemoIfRequested(Context& ctx);

}  // namespace torwart::server
