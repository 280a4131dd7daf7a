#include "platform/sqlite/migrations.hpp"

#include <string>

namespace torwart::storage::sqlite {
namespace {

// Conventions: STRICT tables; times are INTEGER microseconds since the Unix epoch (UTC) in
// columns ending in _us; booleans are INTEGER 0/1; lists are JSON text.
constexpr Migration kMigrations[] = {
    {1, "users, sessions, devices, enrollments, certificates, kv", R"sql(
CREATE TABLE users (
  id                   TEXT PRIMARY KEY,
  name                 TEXT NOT NULL UNIQUE,
  role                 TEXT NOT NULL,
  password_hash        TEXT NOT NULL,
  must_change_password INTEGER NOT NULL DEFAULT 0,
  disabled             INTEGER NOT NULL DEFAULT 0,
  failed_logins        INTEGER NOT NULL DEFAULT 0,
  locked_until_us      INTEGER,
  created_us           INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
  token_hash   TEXT PRIMARY KEY,
  user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_us   INTEGER NOT NULL,
  expires_us   INTEGER NOT NULL,
  last_used_us INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_user_id ON sessions(user_id);

CREATE TABLE devices (
  id                  TEXT PRIMARY KEY,
  name                TEXT NOT NULL UNIQUE,
  site                TEXT NOT NULL,
  tags                TEXT NOT NULL DEFAULT '[]',
  status              TEXT NOT NULL,
  machine_fingerprint TEXT NOT NULL DEFAULT '',
  bind_machine        INTEGER NOT NULL DEFAULT 0,
  created_us          INTEGER NOT NULL
) STRICT;

CREATE TABLE enrollments (
  reference  TEXT PRIMARY KEY,
  secret     TEXT NOT NULL,
  device_id  TEXT NOT NULL REFERENCES devices(id),
  created_us INTEGER NOT NULL,
  expires_us INTEGER NOT NULL,
  used_us    INTEGER
) STRICT;
CREATE INDEX enrollments_device_id ON enrollments(device_id);

-- The CA's issuance record (CRL, OCSP): it must accept every certificate the CA signed, so
-- device_id is deliberately not a foreign key.
CREATE TABLE certificates (
  serial            TEXT PRIMARY KEY,
  device_id         TEXT NOT NULL,
  subject           TEXT NOT NULL,
  not_before_us     INTEGER NOT NULL,
  not_after_us      INTEGER NOT NULL,
  pem               TEXT NOT NULL,
  status            TEXT NOT NULL,
  revoked_at_us     INTEGER,
  revocation_reason INTEGER NOT NULL DEFAULT 0,
  fingerprint       TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX certificates_device_id ON certificates(device_id);
CREATE INDEX certificates_revoked ON certificates(status, not_after_us);

CREATE TABLE kv (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
)sql"},
    {2, "append-only audit table", R"sql(
CREATE TABLE audit (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  time_us      INTEGER NOT NULL,
  actor_type   TEXT NOT NULL,
  actor        TEXT NOT NULL,
  organisation TEXT NOT NULL,
  source       TEXT NOT NULL,
  category     TEXT NOT NULL,
  type         TEXT NOT NULL,
  target       TEXT NOT NULL,
  result       TEXT NOT NULL,
  reason       TEXT NOT NULL,
  details      TEXT NOT NULL
) STRICT;

-- Records are never changed or removed through SQL, by us or by anyone with the file open.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit records are append-only');
END;
)sql"},
};

Expected<int> CurrentVersion(Connection& conn) {
  auto st = conn.Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                         "reading schema version");
  if (!st) return MakeError(st.error());
  auto row = st->Step();
  if (!row) return MakeError(row.error());
  return *row ? static_cast<int>(st->Int(0)) : 0;
}

}  // namespace

std::span<const Migration> Migrations() { return kMigrations; }

Expected<int> Migrate(Connection& conn, std::span<const Migration> steps) {
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].version != static_cast<int>(i) + 1) {
      return MakeError(Errc::kInternal, "migration list is not numbered 1, 2, 3, ...");
    }
  }
  const int latest = static_cast<int>(steps.size());

  if (auto created = conn.Exec(R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version     INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_us  INTEGER NOT NULL
) STRICT)sql",
                               "creating schema_migrations");
      !created) {
    return MakeError(created.error());
  }

  auto newer_error = [latest](int found) {
    return Error(Errc::kFailedPrecondition, "database schema version " + std::to_string(found) +
                                                " is newer than this build supports (" +
                                                std::to_string(latest) +
                                                "); use a newer torwartd or restore a backup");
  };

  auto version = CurrentVersion(conn);
  if (!version) return MakeError(version.error());
  if (*version > latest) return MakeError(newer_error(*version));

  for (const Migration& step : steps) {
    if (step.version <= *version) continue;
    const std::string operation =
        "applying migration " + std::to_string(step.version) + " (" + step.description + ")";
    auto applied = InTransaction(conn, operation, [&]() -> Expected<int> {
      // Another process may have migrated while we waited for the write lock.
      auto now = CurrentVersion(conn);
      if (!now) return MakeError(now.error());
      if (*now > latest) return MakeError(newer_error(*now));
      if (*now >= step.version) return *now;
      if (auto ran = conn.Exec(step.sql, operation); !ran) return MakeError(ran.error());
      auto record = conn.Prepare(
          "INSERT INTO schema_migrations(version, description, applied_us) VALUES(?, ?, ?)",
          operation);
      if (!record) return MakeError(record.error());
      record->Bind(1, int64_t{step.version})
          .Bind(2, step.description)
          .BindTime(3, SystemClock::Instance().Now());
      if (auto ok = record->Run(); !ok) return MakeError(ok.error());
      return step.version;
    });
    if (!applied) return MakeError(applied.error());
    *version = *applied;
  }
  return *version;
}

}  // namespace torwart::storage::sqlite
