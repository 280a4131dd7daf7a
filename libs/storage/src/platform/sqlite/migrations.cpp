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
    {3, "policy versions, access requests and grants, webhook outbox", R"sql(
CREATE TABLE policy_versions (
  version    INTEGER PRIMARY KEY,
  text       TEXT NOT NULL,
  author     TEXT NOT NULL,
  created_us INTEGER NOT NULL,
  active     INTEGER NOT NULL DEFAULT 0,
  comment    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE UNIQUE INDEX policy_versions_one_active ON policy_versions(active) WHERE active = 1;

CREATE TABLE access_requests (
  id                 TEXT PRIMARY KEY,
  requester          TEXT NOT NULL,
  site               TEXT NOT NULL,
  target             TEXT NOT NULL,
  scope              TEXT NOT NULL DEFAULT '',
  scopes             TEXT NOT NULL DEFAULT '[]',
  reason             TEXT NOT NULL DEFAULT '',
  duration_s         INTEGER NOT NULL,
  break_glass        INTEGER NOT NULL DEFAULT 0,
  status             TEXT NOT NULL,
  rule_id            TEXT NOT NULL DEFAULT '',
  policy_version     INTEGER NOT NULL DEFAULT 0,
  approvals_required INTEGER NOT NULL DEFAULT 0,
  approver_group     TEXT NOT NULL DEFAULT '',
  on_site_consent    INTEGER NOT NULL DEFAULT 0,
  review_group       TEXT NOT NULL DEFAULT '',
  approvals          TEXT NOT NULL DEFAULT '[]',
  created_us         INTEGER NOT NULL,
  starts_us          INTEGER,
  ends_us            INTEGER,
  decided_by         TEXT NOT NULL DEFAULT '',
  decision_reason    TEXT NOT NULL DEFAULT '',
  decided_us         INTEGER,
  reviewed_by        TEXT NOT NULL DEFAULT '',
  review_comment     TEXT NOT NULL DEFAULT '',
  reviewed_us        INTEGER,
  revision           INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX access_requests_requester ON access_requests(requester, created_us);
CREATE INDEX access_requests_status ON access_requests(status, created_us);

CREATE TABLE webhook_outbox (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  url             TEXT NOT NULL,
  event           TEXT NOT NULL,
  body            TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  created_us      INTEGER NOT NULL,
  next_attempt_us INTEGER NOT NULL,
  status          TEXT NOT NULL,
  last_error      TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX webhook_outbox_due ON webhook_outbox(status, next_attempt_us);
)sql"},
    {4, "users: organisation; sessions: mfa; TOTP secrets", R"sql(
ALTER TABLE users ADD COLUMN organisation TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0;

CREATE TABLE user_mfa (
  user_id       TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  sealed_secret TEXT NOT NULL,
  active        INTEGER NOT NULL DEFAULT 0,
  last_step     INTEGER NOT NULL DEFAULT -1,
  created_us    INTEGER NOT NULL,
  activated_us  INTEGER
) STRICT;
)sql"},
    {5, "device_state: control-channel state of devices", R"sql(
-- No foreign key: state may arrive for a device that is being removed; readers join on id.
CREATE TABLE device_state (
  device_id         TEXT PRIMARY KEY,
  online            INTEGER NOT NULL DEFAULT 0,
  agent_version     TEXT NOT NULL DEFAULT '',
  last_seen_us      INTEGER,
  status_changed_us INTEGER,
  inventory         TEXT NOT NULL DEFAULT '',
  inventory_us      INTEGER,
  health            TEXT NOT NULL DEFAULT '',
  health_us         INTEGER
) STRICT;
)sql"},
    {6, "audit: hash chain, signed checkpoints, retention (purge gate) and legal holds", R"sql(
ALTER TABLE audit ADD COLUMN schema INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN content_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN purged INTEGER NOT NULL DEFAULT 0;
CREATE INDEX audit_time ON audit(time_us);
CREATE INDEX audit_category_time ON audit(category, time_us);

CREATE TABLE audit_checkpoints (
  seq       INTEGER PRIMARY KEY,
  time_us   INTEGER NOT NULL,
  hash      TEXT NOT NULL,
  key_id    TEXT NOT NULL,
  signature TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
  SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
  SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;

CREATE TABLE audit_holds (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  category   TEXT NOT NULL,
  target     TEXT NOT NULL,
  since_us   INTEGER,
  until_us   INTEGER,
  reason     TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_us INTEGER NOT NULL
) STRICT;

-- A row here, inside the purge transaction only, lets retention blank expired records.
CREATE TABLE audit_purge_gate (open INTEGER NOT NULL) STRICT;

-- Still append-only: the only updates allowed are (a) sealing a record written before the
-- chain existed (hash was '') without changing its content, and (b) retention blanking a record
-- through the purge gate while seq, time, category and both hashes stay.
DROP TRIGGER audit_no_update;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
WHEN NOT (
  (OLD.hash = '' AND NEW.hash <> '' AND NEW.seq = OLD.seq AND NEW.time_us = OLD.time_us
   AND NEW.actor_type = OLD.actor_type AND NEW.actor = OLD.actor
   AND NEW.organisation = OLD.organisation AND NEW.source = OLD.source
   AND NEW.category = OLD.category AND NEW.type = OLD.type AND NEW.target = OLD.target
   AND NEW.result = OLD.result AND NEW.reason = OLD.reason AND NEW.details = OLD.details
   AND NEW.schema = OLD.schema AND NEW.purged = 0)
  OR
  ((SELECT COUNT(*) FROM audit_purge_gate) > 0 AND OLD.hash <> '' AND OLD.purged = 0
   AND NEW.purged = 1 AND NEW.seq = OLD.seq AND NEW.time_us = OLD.time_us
   AND NEW.category = OLD.category AND NEW.hash = OLD.hash
   AND NEW.content_hash = OLD.content_hash AND NEW.schema = OLD.schema))
BEGIN
  SELECT RAISE(ABORT, 'audit records are append-only');
END;
)sql"},
    {7, "tunnel sessions and device quarantine", R"sql(
CREATE TABLE tunnel_sessions (
  id            TEXT PRIMARY KEY,
  grant_id      TEXT NOT NULL,
  user_name     TEXT NOT NULL,
  device_id     TEXT NOT NULL,
  site          TEXT NOT NULL,
  target        TEXT NOT NULL,
  client        TEXT NOT NULL DEFAULT '',
  opened_us     INTEGER NOT NULL,
  closed_us     INTEGER,
  bytes_up      INTEGER NOT NULL DEFAULT 0,
  bytes_down    INTEGER NOT NULL DEFAULT 0,
  end_reason    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX tunnel_sessions_opened ON tunnel_sessions(opened_us);
CREATE INDEX tunnel_sessions_live ON tunnel_sessions(closed_us) WHERE closed_us IS NULL;

CREATE TABLE device_quarantine (
  device_id   TEXT PRIMARY KEY,
  quarantined INTEGER NOT NULL,
  reason      TEXT NOT NULL DEFAULT '',
  by_user     TEXT NOT NULL DEFAULT '',
  since_us    INTEGER NOT NULL,
  synced      INTEGER NOT NULL DEFAULT 0
) STRICT;
)sql"},
    {8, "recordings: index of the stream recordings gateways uploaded", R"sql(
-- The bytes are files in <data>/recordings/<id>.rec; this is what the API lists and checks.
CREATE TABLE recordings (
  id          TEXT PRIMARY KEY,
  device_id   TEXT NOT NULL,
  user_name   TEXT NOT NULL DEFAULT '',
  grant_id    TEXT NOT NULL DEFAULT '',
  site        TEXT NOT NULL DEFAULT '',
  target      TEXT NOT NULL DEFAULT '',
  protocol    TEXT NOT NULL DEFAULT '',
  size        INTEGER NOT NULL,
  sha256      TEXT NOT NULL,
  uploaded_us INTEGER NOT NULL,
  started_us  INTEGER,
  status      TEXT NOT NULL,
  problem     TEXT NOT NULL DEFAULT '',
  cert_serial TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX recordings_user ON recordings(user_name, uploaded_us);
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
