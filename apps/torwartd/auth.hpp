// Users, passwords (Argon2id via libsodium), lockout, bearer-token sessions, and role checks for
// REST handlers. Thread-safe (state lives in the Store).
#pragma once

#include <optional>
#include <string>

#include <functional>
#include <vector>

#include "context.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

class AuthService {
 public:
  explicit AuthService(Context& ctx) : ctx_(ctx) {}

  // Creates the first admin with a random one-time password if there is no user yet.
  // Returns the password (to be printed once) or nullopt if users already exist.
  Expected<std::optional<std::string>> BootstrapAdmin();

  struct LoginResult {
    std::string token;
    TimePoint expires;
    Principal who;
  };
  Expected<LoginResult> Login(const std::string& user, const std::string& password,
                              const http::Request& req);
  Expected<void> Logout(const http::Request& req);
  Expected<void> ChangePassword(const Principal& who, const std::string& old_password,
                                const std::string& new_password, const http::Request& req);
  // Creates a user with a one-time password (must be changed at first login).
  Expected<std::string> CreateUser(const Principal& by, const std::string& name,
                                   const std::string& role, const http::Request& req);

  // Resolves "Authorization: Bearer <token>"; enforces expiry, idle timeout, disabled users.
  Expected<Principal> Authenticate(const http::Request& req);

  Expected<std::string> HashPassword(const std::string& password) const;
  Expected<void> CheckPasswordPolicy(const std::string& password) const;
  static bool IsRole(const std::string& role);

 private:
  Context& ctx_;
};

// Wraps a handler: authenticates, refuses users who must change their password (except for
// `allow_password_change` handlers), and checks the role is one of `roles` (empty = any role).
using AuthedHandler = std::function<http::Response(const http::Request&, const Principal&)>;
http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          bool allow_password_change = false);

}  // namespace torwart::server
