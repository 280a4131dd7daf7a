// Shared services of torwartd, built by main and handed to the API modules.
// Every member is thread-safe; the struct itself is immutable after start-up.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "server_config.hpp"
#include "torwart/audit/event.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/http/message.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {

class AuthService;

struct Principal {
  std::string user_id;
  std::string name;
  std::string role;
  bool must_change_password = false;
  bool mfa = false;          // this session passed the second factor (TOTP)
  std::string organisation{};  // the user's organisation, copied into audit events
};

struct Context {
  const ServerConfig* config = nullptr;
  storage::Store* store = nullptr;
  Clock* clock = nullptr;
  AuthService* auth = nullptr;
  // The audit trail's group-commit writer (AuditService); null: append to the store directly.
  audit::Sink* audit = nullptr;
  // Fails while the audit store cannot be written (disk full, I/O error); unset: always ok.
  std::function<Expected<void>()> audit_available;
  // "tls://host:port" of the tunnel relay, told to CLI and agents by agent.json; "" = disabled.
  // Set by main before serving (tunnel_service.*).
  std::string relay_url;
};

// Builds an audit event with time and source filled from the request.
audit::Event MakeEvent(const Context& ctx, const http::Request& req, std::string category,
                       std::string type);
// An event by torwartd itself: actor_type system, actor "torwartd", source "local".
audit::Event MakeSystemEvent(const Context& ctx, std::string category, std::string type);
// Appends a system event; failures are logged by Audit() and returned.
Expected<void> AuditSystem(const Context& ctx, std::string category, std::string type,
                           std::string details);
// Same, with the authenticated user as actor.
audit::Event MakeUserEvent(const Context& ctx, const http::Request& req, const Principal& who,
                           std::string category, std::string type);

// Appends; on failure logs loudly and returns the error (callers fail closed where it matters).
Expected<void> Audit(const Context& ctx, audit::Event e);
// Fails (kUnavailable, 503) while the audit trail cannot be written: call it before starting a
// security-relevant action so that it is refused up front instead of half done.
Expected<void> AuditAvailable(const Context& ctx);

// Maps an error to an HTTP JSON error response (404 for kNotFound, 409 kAlreadyExists, ...).
http::Response ErrorResponse(const Error& e);

}  // namespace torwart::server
