#include "auth.hpp"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"

namespace torwart::server {
namespace {

std::string Sha256Hex(const std::string& s) {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  return HexEncode(std::string_view(reinterpret_cast<char*>(out), sizeof out));
}

std::string BearerToken(const http::Request& req) {
  std::string h = req.Header("authorization");
  constexpr std::string_view kPrefix = "Bearer ";
  if (h.size() > kPrefix.size() && h.compare(0, kPrefix.size(), kPrefix) == 0) {
    return h.substr(kPrefix.size());
  }
  return {};
}

const std::vector<std::string> kRoles = {"admin",      "operator", "approver",
                                         "technician", "auditor",  "vendor"};

}  // namespace

bool AuthService::IsRole(const std::string& role) {
  return std::find(kRoles.begin(), kRoles.end(), role) != kRoles.end();
}

Expected<void> AuthService::CheckPasswordPolicy(const std::string& password) const {
  if (static_cast<int>(password.size()) < ctx_.config->min_password_length) {
    return MakeError(Errc::kInvalidArgument,
                     "password must have at least " +
                         std::to_string(ctx_.config->min_password_length) + " characters");
  }
  if (password.size() > 1024) return MakeError(Errc::kInvalidArgument, "password too long");
  return {};
}

Expected<std::string> AuthService::HashPassword(const std::string& password) const {
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(),
                            crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return MakeError(Errc::kResourceExhausted, "password hashing ran out of memory");
  }
  return std::string(out);
}

Expected<std::optional<std::string>> AuthService::BootstrapAdmin() {
  auto count = ctx_.store->users().Count();
  if (!count) return MakeError(count.error().WithContext("counting users"));
  if (*count > 0) return std::optional<std::string>();
  std::string password = RandomToken(15);  // 20 characters, 120 bits
  auto hash = HashPassword(password);
  if (!hash) return MakeError(hash.error());
  storage::User u;
  u.id = NewUuid();
  u.name = "admin";
  u.role = "admin";
  u.password_hash = *hash;
  u.must_change_password = true;
  u.created = ctx_.clock->Now();
  if (auto r = ctx_.store->users().Create(u); !r) {
    return MakeError(r.error().WithContext("creating the first admin"));
  }
  audit::Event e;
  e.time = ctx_.clock->Now();
  e.actor_type = audit::ActorType::kSystem;
  e.actor = "torwartd";
  e.source = "local";
  e.category = "user";
  e.type = "user.bootstrap_admin";
  e.target = "admin";
  e.reason = "first start: one-time password issued";
  e.details = "{}";
  if (auto r = Audit(ctx_, e); !r) return MakeError(r.error());
  return std::optional<std::string>(password);
}

Expected<AuthService::LoginResult> AuthService::Login(const std::string& name,
                                                      const std::string& password,
                                                      const http::Request& req) {
  audit::Event e = MakeEvent(ctx_, req, "auth", "auth.login");
  e.actor_type = audit::ActorType::kUser;
  e.actor = name;
  e.target = name;
  auto fail = [&](std::string why, Errc code, std::string shown) -> Unexpected {
    e.result = audit::Result::kFailure;
    e.reason = std::move(why);
    (void)Audit(ctx_, e);
    return MakeError(code, std::move(shown));
  };
  auto user = ctx_.store->users().GetByName(name);
  if (!user) {
    // Spend the same work as a real check so timing does not reveal which names exist.
    [[maybe_unused]] int ignored = crypto_pwhash_str_verify(
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "x1f5yTlbQ9Nw8SS6D0c2ikY0P3eYYhF5iZBuaTQH3Cs",
        password.data(), password.size());
    return fail("unknown user", Errc::kUnauthenticated, "wrong user name or password");
  }
  TimePoint now = ctx_.clock->Now();
  if (user->disabled) return fail("user disabled", Errc::kUnauthenticated, "account disabled");
  if (user->locked_until && *user->locked_until > now) {
    return fail("account locked", Errc::kPermissionDenied,
                "account locked after too many failed logins until " +
                    FormatRfc3339(*user->locked_until));
  }
  if (crypto_pwhash_str_verify(user->password_hash.c_str(), password.data(), password.size()) !=
      0) {
    user->failed_logins++;
    std::string why = "wrong password";
    if (user->failed_logins >= ctx_.config->max_failed_logins) {
      user->locked_until = now + ctx_.config->lockout;
      user->failed_logins = 0;
      why = "wrong password; account locked";
      audit::Event lock = e;
      lock.type = "auth.lockout";
      lock.result = audit::Result::kSuccess;
      lock.reason = "too many failed logins";
      (void)Audit(ctx_, lock);
    }
    (void)ctx_.store->users().Update(*user);
    return fail(why, Errc::kUnauthenticated, "wrong user name or password");
  }
  user->failed_logins = 0;
  user->locked_until.reset();
  if (auto r = ctx_.store->users().Update(*user); !r) return MakeError(r.error());

  LoginResult out;
  out.token = RandomToken(32);
  out.expires = now + ctx_.config->session_ttl;
  out.who = Principal{user->id, user->name, user->role, user->must_change_password};
  storage::Session s{Sha256Hex(out.token), user->id, now, out.expires, now};
  if (auto r = ctx_.store->sessions().Create(s); !r) return MakeError(r.error());
  e.result = audit::Result::kSuccess;
  if (user->must_change_password) e.reason = "password change required";
  if (auto r = Audit(ctx_, e); !r) {
    (void)ctx_.store->sessions().Delete(s.token_hash);
    return MakeError(Errc::kUnavailable, "audit store unavailable; login refused");
  }
  return out;
}

Expected<void> AuthService::Logout(const http::Request& req) {
  std::string token = BearerToken(req);
  if (token.empty()) return {};
  return ctx_.store->sessions().Delete(Sha256Hex(token));
}

Expected<Principal> AuthService::Authenticate(const http::Request& req) {
  std::string token = BearerToken(req);
  if (token.empty()) {
    return MakeError(Errc::kUnauthenticated, "missing bearer token: run `torwart login` first");
  }
  std::string hash = Sha256Hex(token);
  auto s = ctx_.store->sessions().Get(hash);
  if (!s) return MakeError(Errc::kUnauthenticated, "session unknown or ended: log in again");
  TimePoint now = ctx_.clock->Now();
  if (s->expires <= now || s->last_used + ctx_.config->idle_timeout <= now) {
    (void)ctx_.store->sessions().Delete(hash);
    return MakeError(Errc::kUnauthenticated, "session expired: log in again");
  }
  auto u = ctx_.store->users().GetById(s->user_id);
  if (!u || u->disabled) return MakeError(Errc::kUnauthenticated, "account disabled");
  (void)ctx_.store->sessions().Touch(hash, now);
  return Principal{u->id, u->name, u->role, u->must_change_password};
}

Expected<void> AuthService::ChangePassword(const Principal& who, const std::string& old_password,
                                           const std::string& new_password,
                                           const http::Request& req) {
  audit::Event e = MakeUserEvent(ctx_, req, who, "auth", "auth.password_change");
  e.target = who.name;
  auto u = ctx_.store->users().GetById(who.user_id);
  if (!u) return MakeError(u.error());
  if (crypto_pwhash_str_verify(u->password_hash.c_str(), old_password.data(),
                               old_password.size()) != 0) {
    e.result = audit::Result::kFailure;
    e.reason = "wrong current password";
    (void)Audit(ctx_, e);
    return MakeError(Errc::kUnauthenticated, "current password is wrong");
  }
  if (auto p = CheckPasswordPolicy(new_password); !p) return p;
  if (old_password == new_password) {
    return MakeError(Errc::kInvalidArgument, "new password must differ from the current one");
  }
  auto hash = HashPassword(new_password);
  if (!hash) return MakeError(hash.error());
  u->password_hash = *hash;
  u->must_change_password = false;
  if (auto r = ctx_.store->users().Update(*u); !r) return r;
  return Audit(ctx_, e);
}

Expected<std::string> AuthService::CreateUser(const Principal& by, const std::string& name,
                                              const std::string& role,
                                              const http::Request& req) {
  if (name.empty() || name.size() > 64 ||
      !std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
               c == '@';
      })) {
    return MakeError(Errc::kInvalidArgument,
                     "user name must be 1-64 characters of letters, digits, . - _ @");
  }
  if (!IsRole(role)) {
    return MakeError(Errc::kInvalidArgument,
                     "unknown role '" + role +
                         "' (admin, operator, approver, technician, auditor, vendor)");
  }
  std::string password = RandomToken(15);
  auto hash = HashPassword(password);
  if (!hash) return MakeError(hash.error());
  storage::User u;
  u.id = NewUuid();
  u.name = name;
  u.role = role;
  u.password_hash = *hash;
  u.must_change_password = true;
  u.created = ctx_.clock->Now();
  if (auto r = ctx_.store->users().Create(u); !r) return MakeError(r.error());
  audit::Event e = MakeUserEvent(ctx_, req, by, "user", "user.create");
  e.target = name;
  e.details = nlohmann::json{{"role", role}}.dump();
  if (auto r = Audit(ctx_, e); !r) return MakeError(r.error());
  return password;
}

http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          bool allow_password_change) {
  return [&ctx, roles = std::move(roles), h = std::move(h),
          allow_password_change](const http::Request& req) -> http::Response {
    auto who = ctx.auth->Authenticate(req);
    if (!who) return ErrorResponse(who.error());
    if (who->must_change_password && !allow_password_change) {
      return http::Response::Error(403, "password_change_required",
                                   "the one-time password must be changed first: run `torwart "
                                   "passwd`");
    }
    if (!roles.empty() && std::find(roles.begin(), roles.end(), who->role) == roles.end()) {
      audit::Event e = MakeUserEvent(ctx, req, *who, "auth", "auth.forbidden");
      e.target = req.method + " " + req.path;
      e.result = audit::Result::kDenied;
      e.reason = "role " + who->role + " not allowed";
      (void)Audit(ctx, e);
      return http::Response::Error(403, "permission_denied",
                                   "role '" + who->role + "' may not do this");
    }
    return h(req, *who);
  };
}

}  // namespace torwart::server
