// Users, passwords (Argon2id via libsodium), TOTP second factor (RFC 6238), lockout, bearer
// sessions, and role checks for REST handlers. Thread-safe (state lives in the Store).
//
// For every remote-access path (access requests, approvals, grants, grant certificates) wrap the
// handler with `RequireMfa(ctx, roles, handler)` (same as `RequireRole(ctx, roles, handler,
// {.mfa = true})`): sessions that did not pass TOTP get 403 `mfa_required`. There is no exemption.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "context.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

class AuthService {
 public:
  explicit AuthService(Context& ctx) : ctx_(ctx) {}

  // The 32-byte key that seals TOTP secrets at rest (see LoadOrCreateSealingKey). Without it,
  // MFA enrolment and TOTP logins fail closed. Call once before serving.
  void SetSealingKey(std::string key) { sealing_key_ = std::move(key); }

  // Creates the first admin with a random one-time password if there is no user yet.
  // Returns the password (to be printed once) or nullopt if users already exist.
  Expected<std::optional<std::string>> BootstrapAdmin();

  struct LoginResult {
    bool totp_required = false;  // password right, but the account needs a TOTP code: no session
    std::string token;
    TimePoint expires;
    Principal who;
  };
  // `totp` may be empty. Every attempt that does not produce a session (wrong password, missing,
  // wrong or replayed code) counts towards the lockout.
  Expected<LoginResult> Login(const std::string& user, const std::string& password,
                              const std::string& totp, const http::Request& req);
  Expected<void> Logout(const http::Request& req);
  Expected<void> ChangePassword(const Principal& who, const std::string& old_password,
                                const std::string& new_password, const http::Request& req);
  // Creates a user with a one-time password (must be changed at first login).
  Expected<std::string> CreateUser(const Principal& by, const std::string& name,
                                   const std::string& role, const std::string& organisation,
                                   const http::Request& req);

  // Resolves "Authorization: Bearer <token>"; enforces expiry, idle timeout, disabled users.
  Expected<Principal> Authenticate(const http::Request& req);

  // --- second factor ---
  struct MfaEnrollment {
    std::string secret;  // base32, shown once
    std::string uri;     // otpauth://totp/...
  };
  // Creates (or replaces a not yet confirmed) TOTP secret. kFailedPrecondition if one is active.
  Expected<MfaEnrollment> EnrollMfa(const Principal& who, const http::Request& req);
  // Activates the pending secret with one valid code and marks the calling session as MFA.
  Expected<void> ConfirmMfa(const Principal& who, const std::string& code,
                            const http::Request& req);
  // "none", "pending" or "active".
  Expected<std::string> MfaState(const std::string& user_id);

  // --- administration (callers check the admin role) ---
  // Disabling ends the user's sessions; enabling also clears a lockout.
  Expected<void> SetDisabled(const Principal& by, const std::string& name, bool disabled,
                             const http::Request& req);
  // A new one-time password; ends sessions and clears a lockout.
  Expected<std::string> ResetPassword(const Principal& by, const std::string& name,
                                      const http::Request& req);
  // Removes the second factor (lost phone); ends sessions. The user enrolls again.
  Expected<void> ResetMfa(const Principal& by, const std::string& name, const http::Request& req);

  Expected<std::string> HashPassword(const std::string& password) const;
  Expected<void> CheckPasswordPolicy(const std::string& password) const;
  static bool IsRole(const std::string& role);

 private:
  Expected<std::string> Seal(const std::string& user_id, const std::string& secret) const;
  Expected<std::string> Open(const std::string& user_id, const std::string& sealed) const;

  Context& ctx_;
  std::string sealing_key_;
};

// Reads the 32-byte key sealing secrets at rest from `path`, creating it (mode 0600) with random
// bytes if it does not exist. For main.
Expected<std::string> LoadOrCreateSealingKey(const std::string& path);

struct AuthOptions {
  bool allow_password_change = false;  // also serve users who must still change their password
  bool mfa = false;  // refuse sessions without the second factor (403 mfa_required)
};

// Wraps a handler: authenticates, refuses users who must change their password (except for
// `allow_password_change` handlers), and checks the role is one of `roles` (empty = any role).
using AuthedHandler = std::function<http::Response(const http::Request&, const Principal&)>;
http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          bool allow_password_change = false);
http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          AuthOptions options);
// RequireRole with {.mfa = true}: for every remote-access path.
http::Handler RequireMfa(Context& ctx, std::vector<std::string> roles, AuthedHandler h);

}  // namespace torwart::server
