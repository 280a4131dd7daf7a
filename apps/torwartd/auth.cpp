#include "auth.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "totp.hpp"

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

constexpr size_t kTotpSecretBytes = 20;  // 160 bits, as RFC 4226 recommends
constexpr std::string_view kSealedPrefix = "v1:";

Principal PrincipalOf(const storage::User& u, bool mfa) {
  Principal p;
  p.user_id = u.id;
  p.name = u.name;
  p.role = u.role;
  p.must_change_password = u.must_change_password;
  p.mfa = mfa;
  p.organisation = u.organisation;
  return p;
}

}  // namespace

bool AuthService::IsRole(const std::string& role) {
  return std::find(kRoles.begin(), kRoles.end(), role) != kRoles.end();
}

Expected<void> AuthService::CheckPasswordPolicy(const std::string& password) const {
  if (static_cast<int>(password.size()) < ctx_.config->min_password_length) {
    return MakeError(Errc::kInvalidArgument, "password must have at least " +
                                                 std::to_string(ctx_.config->min_password_length) +
                                                 " characters");
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

// --- sealing secrets at rest (XChaCha20-Poly1305, bound to the user id) ---

Expected<std::string> AuthService::Seal(const std::string& user_id,
                                        const std::string& secret) const {
  if (sealing_key_.size() != crypto_aead_xchacha20poly1305_ietf_KEYBYTES) {
    return MakeError(Errc::kFailedPrecondition, "no key to seal secrets at rest is configured");
  }
  std::string ad = "torwart-totp:" + user_id;
  std::string nonce = RandomBytes(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  std::string out(secret.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(out.data()), &len,
      reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
      reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
      reinterpret_cast<const unsigned char*>(nonce.data()),
      reinterpret_cast<const unsigned char*>(sealing_key_.data()));
  out.resize(len);
  return std::string(kSealedPrefix) + Base64Encode(nonce + out);
}

Expected<std::string> AuthService::Open(const std::string& user_id,
                                        const std::string& sealed) const {
  if (sealing_key_.size() != crypto_aead_xchacha20poly1305_ietf_KEYBYTES) {
    return MakeError(Errc::kFailedPrecondition, "no key to open secrets at rest is configured");
  }
  if (!sealed.starts_with(kSealedPrefix)) {
    return MakeError(Errc::kInternal, "stored TOTP secret has an unknown format");
  }
  auto raw = Base64Decode(std::string_view(sealed).substr(kSealedPrefix.size()));
  constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  constexpr size_t kTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (!raw || raw->size() < kNonce + kTag) {
    return MakeError(Errc::kInternal, "stored TOTP secret is damaged");
  }
  std::string ad = "torwart-totp:" + user_id;
  std::string out(raw->size() - kNonce - kTag, '\0');
  unsigned long long len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(out.data()), &len, nullptr,
          reinterpret_cast<const unsigned char*>(raw->data()) + kNonce, raw->size() - kNonce,
          reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
          reinterpret_cast<const unsigned char*>(raw->data()),
          reinterpret_cast<const unsigned char*>(sealing_key_.data())) != 0) {
    return MakeError(Errc::kInternal,
                     "stored TOTP secret does not open with this server's key (secrets.key "
                     "replaced?); an admin can reset the user's second factor");
  }
  out.resize(len);
  return out;
}

Expected<std::string> LoadOrCreateSealingKey(const std::string& path) {
  constexpr size_t kKey = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    std::string key = RandomBytes(kKey);
    int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w < 0) return MakeError(Errc::kIo, "creating " + path + ": " + std::strerror(errno));
    bool ok =
        ::write(w, key.data(), key.size()) == static_cast<ssize_t>(key.size()) && ::fsync(w) == 0;
    ::close(w);
    if (!ok) return MakeError(Errc::kIo, "writing " + path);
    return key;
  }
  if (fd < 0) return MakeError(Errc::kIo, "opening " + path + ": " + std::strerror(errno));
  std::string key(kKey + 1, '\0');
  ssize_t n = ::read(fd, key.data(), key.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(kKey)) {
    return MakeError(Errc::kFailedPrecondition,
                     path + " must hold exactly " + std::to_string(kKey) + " bytes");
  }
  key.resize(kKey);
  return key;
}

// --- users and sessions ---

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
  audit::Event e = MakeSystemEvent(ctx_, "user", "user.bootstrap_admin");
  e.target = "admin";
  e.reason = "first start: one-time password issued";
  e.details = "{}";
  if (auto r = Audit(ctx_, e); !r) return MakeError(r.error());
  return std::optional<std::string>(password);
}

Expected<AuthService::LoginResult> AuthService::Login(const std::string& name,
                                                      const std::string& password,
                                                      const std::string& totp_code,
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
    // The dummy hash is a real Argon2id hash with our parameters, made once.
    static const std::string dummy = HashPassword(RandomToken(16)).value_or("");
    [[maybe_unused]] int ignored =
        crypto_pwhash_str_verify(dummy.c_str(), password.data(), password.size());
    return fail("unknown user", Errc::kUnauthenticated, "wrong user name or password");
  }
  e.organisation = user->organisation;
  TimePoint now = ctx_.clock->Now();
  if (user->disabled) return fail("user disabled", Errc::kUnauthenticated, "account disabled");
  if (user->locked_until && *user->locked_until > now) {
    return fail(
        "account locked", Errc::kPermissionDenied,
        "account locked after too many failed logins until " + FormatRfc3339(*user->locked_until));
  }
  // Every attempt that does not end in a session counts towards the lockout.
  auto count_failure = [&](std::string why) {
    user->failed_logins++;
    if (user->failed_logins >= ctx_.config->max_failed_logins) {
      user->locked_until = now + ctx_.config->lockout;
      user->failed_logins = 0;
      why += "; account locked";
      audit::Event lock = e;
      lock.type = "auth.lockout";
      lock.result = audit::Result::kSuccess;
      lock.reason = "too many failed logins";
      (void)Audit(ctx_, lock);
    }
    (void)ctx_.store->users().Update(*user);
    return why;
  };
  if (crypto_pwhash_str_verify(user->password_hash.c_str(), password.data(), password.size()) !=
      0) {
    return fail(count_failure("wrong password"), Errc::kUnauthenticated,
                "wrong user name or password");
  }

  bool mfa = false;
  auto secret = ctx_.store->mfa().Get(user->id);
  if (!secret && !secret.error().Is(Errc::kNotFound)) {
    return fail("second factor unreadable", Errc::kUnavailable,
                "cannot check the second factor now; try again later");
  }
  if (secret && secret->active) {
    if (totp_code.empty()) {
      (void)fail(count_failure("second factor required"), Errc::kUnauthenticated, "");
      LoginResult need;
      need.totp_required = true;
      return need;
    }
    auto key = Open(user->id, secret->sealed_secret);
    if (!key) {
      log::error("login of {}: {}", name, key.error().message());
      return fail("second factor unreadable", Errc::kInternal,
                  "the stored second factor cannot be read; ask an admin to reset it");
    }
    auto step = totp::Verify(*key, totp_code, now, -1);
    if (!step) {
      return fail(count_failure("wrong TOTP code"), Errc::kUnauthenticated, "wrong one-time code");
    }
    if (*step <= secret->last_step) {
      return fail(count_failure("replayed TOTP code"), Errc::kUnauthenticated,
                  "this one-time code was already used; wait for the next one");
    }
    if (auto r = ctx_.store->mfa().ConsumeStep(user->id, *step, false, now); !r) {
      if (r.error().Is(Errc::kFailedPrecondition)) {
        return fail(count_failure("replayed TOTP code"), Errc::kUnauthenticated,
                    "this one-time code was already used; wait for the next one");
      }
      return fail("second factor not recorded", Errc::kUnavailable,
                  "cannot record the second factor now; try again later");
    }
    mfa = true;
  }

  user->failed_logins = 0;
  user->locked_until.reset();
  if (auto r = ctx_.store->users().Update(*user); !r) return MakeError(r.error());

  LoginResult out;
  out.token = RandomToken(32);
  out.expires = now + ctx_.config->session_ttl;
  out.who = PrincipalOf(*user, mfa);
  storage::Session s{Sha256Hex(out.token), user->id, now, out.expires, now, mfa};
  if (auto r = ctx_.store->sessions().Create(s); !r) return MakeError(r.error());
  e.result = audit::Result::kSuccess;
  e.details = nlohmann::json{{"mfa", mfa}}.dump();
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
  return PrincipalOf(*u, s->mfa);
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
                                              const std::string& organisation,
                                              const http::Request& req) {
  if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
               c == '@';
      })) {
    return MakeError(Errc::kInvalidArgument,
                     "user name must be 1-64 characters of letters, digits, . - _ @");
  }
  if (!IsRole(role)) {
    return MakeError(
        Errc::kInvalidArgument,
        "unknown role '" + role + "' (admin, operator, approver, technician, auditor, vendor)");
  }
  if (organisation.size() > 128 ||
      std::any_of(organisation.begin(), organisation.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return MakeError(Errc::kInvalidArgument,
                     "organisation must be at most 128 characters without control characters");
  }
  std::string password = RandomToken(15);
  auto hash = HashPassword(password);
  if (!hash) return MakeError(hash.error());
  storage::User u;
  u.id = NewUuid();
  u.name = name;
  u.role = role;
  u.organisation = organisation;
  u.password_hash = *hash;
  u.must_change_password = true;
  u.created = ctx_.clock->Now();
  if (auto r = ctx_.store->users().Create(u); !r) {
    return MakeError(r.error().Is(Errc::kAlreadyExists)
                         ? Error(Errc::kAlreadyExists, "user '" + name + "' exists")
                         : r.error());
  }
  audit::Event e = MakeUserEvent(ctx_, req, by, "user", "user.create");
  e.target = name;
  e.details = nlohmann::json{{"role", role}, {"organisation", organisation}}.dump();
  if (auto r = Audit(ctx_, e); !r) return MakeError(r.error());
  return password;
}

// --- second factor ---

Expected<std::string> AuthService::MfaState(const std::string& user_id) {
  auto m = ctx_.store->mfa().Get(user_id);
  if (!m) {
    if (m.error().Is(Errc::kNotFound)) return std::string("none");
    return MakeError(m.error());
  }
  return std::string(m->active ? "active" : "pending");
}

Expected<AuthService::MfaEnrollment> AuthService::EnrollMfa(const Principal& who,
                                                            const http::Request& req) {
  auto existing = ctx_.store->mfa().Get(who.user_id);
  if (existing && existing->active) {
    return MakeError(Errc::kFailedPrecondition,
                     "a second factor is already active; an admin can reset it with `torwart "
                     "user mfa-reset " +
                         who.name + "`");
  }
  if (!existing && !existing.error().Is(Errc::kNotFound)) return MakeError(existing.error());
  std::string secret = RandomBytes(kTotpSecretBytes);
  auto sealed = Seal(who.user_id, secret);
  if (!sealed) return MakeError(sealed.error());
  storage::MfaSecret m;
  m.user_id = who.user_id;
  m.sealed_secret = *sealed;
  m.created = ctx_.clock->Now();
  if (auto r = ctx_.store->mfa().PutPending(m); !r) return MakeError(r.error());
  audit::Event e = MakeUserEvent(ctx_, req, who, "auth", "auth.mfa_enroll");
  e.target = who.name;
  e.reason = "TOTP secret issued; pending confirmation";
  if (auto r = Audit(ctx_, e); !r) {
    (void)ctx_.store->mfa().Delete(who.user_id);
    return MakeError(r.error());
  }
  MfaEnrollment out;
  out.secret = totp::Base32Encode(secret);
  out.uri = totp::Uri(ctx_.config->organisation, who.name, out.secret);
  return out;
}

Expected<void> AuthService::ConfirmMfa(const Principal& who, const std::string& code,
                                       const http::Request& req) {
  audit::Event e = MakeUserEvent(ctx_, req, who, "auth", "auth.mfa_confirm");
  e.target = who.name;
  auto fail = [&](Errc c, std::string why) -> Unexpected {
    e.result = audit::Result::kFailure;
    e.reason = why;
    (void)Audit(ctx_, e);
    return MakeError(c, std::move(why));
  };
  auto m = ctx_.store->mfa().Get(who.user_id);
  if (!m) {
    if (m.error().Is(Errc::kNotFound)) {
      return fail(Errc::kFailedPrecondition, "no enrolment pending: run `torwart mfa enroll`");
    }
    return MakeError(m.error());
  }
  if (m->active) return fail(Errc::kFailedPrecondition, "the second factor is already active");
  auto key = Open(who.user_id, m->sealed_secret);
  if (!key) return MakeError(key.error());
  TimePoint now = ctx_.clock->Now();
  auto step = totp::Verify(*key, code, now, m->last_step);
  if (!step) {
    return fail(Errc::kInvalidArgument,
                "wrong one-time code (check the phone's clock and the secret)");
  }
  if (auto r = ctx_.store->mfa().ConsumeStep(who.user_id, *step, true, now); !r) {
    if (r.error().Is(Errc::kFailedPrecondition)) {
      return fail(Errc::kInvalidArgument, "this one-time code was already used");
    }
    return MakeError(r.error());
  }
  // The code proves the factor for this session too.
  (void)ctx_.store->sessions().SetMfa(Sha256Hex(BearerToken(req)), true);
  e.reason = "second factor active";
  return Audit(ctx_, e);
}

// --- administration ---

Expected<void> AuthService::SetDisabled(const Principal& by, const std::string& name, bool disabled,
                                        const http::Request& req) {
  auto u = ctx_.store->users().GetByName(name);
  if (!u) return MakeError(u.error());
  if (disabled && u->id == by.user_id) {
    return MakeError(Errc::kFailedPrecondition, "you cannot disable your own account");
  }
  u->disabled = disabled;
  if (!disabled) {
    u->failed_logins = 0;
    u->locked_until.reset();
  }
  if (auto r = ctx_.store->users().Update(*u); !r) return r;
  if (disabled) {
    if (auto r = ctx_.store->sessions().DeleteForUser(u->id); !r) return r;
  }
  audit::Event e = MakeUserEvent(ctx_, req, by, "user", disabled ? "user.disable" : "user.enable");
  e.target = name;
  e.reason = disabled ? "sessions ended; grants of disabled users are no longer valid" : "";
  return Audit(ctx_, e);
}

Expected<std::string> AuthService::ResetPassword(const Principal& by, const std::string& name,
                                                 const http::Request& req) {
  auto u = ctx_.store->users().GetByName(name);
  if (!u) return MakeError(u.error());
  std::string password = RandomToken(15);
  auto hash = HashPassword(password);
  if (!hash) return MakeError(hash.error());
  u->password_hash = *hash;
  u->must_change_password = true;
  u->failed_logins = 0;
  u->locked_until.reset();
  if (auto r = ctx_.store->users().Update(*u); !r) return MakeError(r.error());
  if (auto r = ctx_.store->sessions().DeleteForUser(u->id); !r) return MakeError(r.error());
  audit::Event e = MakeUserEvent(ctx_, req, by, "user", "user.password_reset");
  e.target = name;
  e.reason = "one-time password issued; sessions ended";
  if (auto r = Audit(ctx_, e); !r) return MakeError(r.error());
  return password;
}

Expected<void> AuthService::ResetMfa(const Principal& by, const std::string& name,
                                     const http::Request& req) {
  auto u = ctx_.store->users().GetByName(name);
  if (!u) return MakeError(u.error());
  if (auto r = ctx_.store->mfa().Delete(u->id); !r) return r;
  if (auto r = ctx_.store->sessions().DeleteForUser(u->id); !r) return r;
  audit::Event e = MakeUserEvent(ctx_, req, by, "user", "user.mfa_reset");
  e.target = name;
  e.reason = "second factor removed; sessions ended";
  return Audit(ctx_, e);
}

// --- handler wrappers ---

http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          bool allow_password_change) {
  return RequireRole(ctx, std::move(roles), std::move(h),
                     AuthOptions{.allow_password_change = allow_password_change});
}

http::Handler RequireRole(Context& ctx, std::vector<std::string> roles, AuthedHandler h,
                          AuthOptions options) {
  return [&ctx, roles = std::move(roles), h = std::move(h),
          options](const http::Request& req) -> http::Response {
    auto who = ctx.auth->Authenticate(req);
    if (!who) return ErrorResponse(who.error());
    if (who->must_change_password && !options.allow_password_change) {
      return http::Response::Error(403, "password_change_required",
                                   "the one-time password must be changed first: run `torwart "
                                   "passwd`");
    }
    auto deny = [&](std::string reason) {
      audit::Event e = MakeUserEvent(ctx, req, *who, "auth", "auth.forbidden");
      e.target = req.method + " " + req.path;
      e.result = audit::Result::kDenied;
      e.reason = std::move(reason);
      (void)Audit(ctx, e);
    };
    if (!roles.empty() && std::find(roles.begin(), roles.end(), who->role) == roles.end()) {
      deny("role " + who->role + " not allowed");
      return http::Response::Error(403, "permission_denied",
                                   "role '" + who->role + "' may not do this");
    }
    if (options.mfa && !who->mfa) {
      deny("session without second factor");
      return http::Response::Error(
          403, "mfa_required",
          "remote access needs a session with a second factor: enroll once with `torwart mfa "
          "enroll` and `torwart mfa confirm CODE`, then `torwart login` with your code");
    }
    return h(req, *who);
  };
}

http::Handler RequireMfa(Context& ctx, std::vector<std::string> roles, AuthedHandler h) {
  return RequireRole(ctx, std::move(roles), std::move(h), AuthOptions{.mfa = true});
}

}  // namespace torwart::server
