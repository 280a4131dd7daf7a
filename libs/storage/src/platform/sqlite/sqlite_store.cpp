// The SQLite backend of storage::Store: one connection, every call serialised by one mutex.
// SQLite allows one writer at a time anyway, and torwartd runs storage calls on a small
// blocking pool, so a connection pool would buy little.

#include <charconv>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "platform/sqlite/access_repos.hpp"
#include "platform/sqlite/audit_store.hpp"
#include "platform/sqlite/connection.hpp"
#include "platform/sqlite/device_state_repo.hpp"
#include "platform/sqlite/mfa_repo.hpp"
#include "platform/sqlite/tunnel_repo.hpp"
#include "platform/sqlite/migrations.hpp"
#include "platform/sqlite/recording_repo.hpp"
#include "platform/sqlite/report_repo.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::storage {
namespace {

using sqlite::Connection;
using sqlite::InTransaction;
using sqlite::Statement;

struct Db {
  std::mutex mu;
  std::unique_ptr<Connection> conn;
};

// Statement text is built once from constant pieces; values are always bound.
std::string Sql(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (std::string_view p : parts) s += p;
  return s;
}

template <class T>
using RowReader = Expected<T> (*)(const Statement&);

// The single row of a lookup, or kNotFound with `not_found` as the message.
template <class T>
Expected<T> One(Statement& st, RowReader<T> read, std::string not_found) {
  auto row = st.Step();
  if (!row) return MakeError(row.error());
  if (!*row) return MakeError(Errc::kNotFound, std::move(not_found));
  return read(st);
}


// Runs a statement that must change exactly one row; kNotFound (with `not_found`) otherwise.
Expected<void> RunOne(Connection& conn, Statement& st, std::string not_found) {
  if (auto ok = st.Run(); !ok) return ok;
  if (conn.Changes() == 0) return MakeError(Errc::kNotFound, std::move(not_found));
  return {};
}

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// --- users ---

constexpr std::string_view kUserColumns =
    "id, name, role, password_hash, must_change_password, disabled, failed_logins, "
    "locked_until_us, created_us, organisation";

Expected<User> ReadUser(const Statement& st) {
  User u;
  u.id = st.Text(0);
  u.name = st.Text(1);
  u.role = st.Text(2);
  u.password_hash = st.Text(3);
  u.must_change_password = st.Int(4) != 0;
  u.disabled = st.Int(5) != 0;
  u.failed_logins = static_cast<int>(st.Int(6));
  u.locked_until = st.OptionalTime(7);
  u.created = st.Time(8);
  u.organisation = st.Text(9);
  return u;
}

class SqliteUserRepo final : public UserRepo {
 public:
  explicit SqliteUserRepo(Db& db) : db_(db) {}

  Expected<void> Create(const User& u) override {
    static const std::string kSql =
        Sql({"INSERT INTO users(", kUserColumns, ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "inserting user");
    if (!st) return MakeError(st.error());
    st->Bind(1, u.id).Bind(2, u.name).Bind(3, u.role).Bind(4, u.password_hash);
    st->Bind(5, int64_t{u.must_change_password}).Bind(6, int64_t{u.disabled});
    st->Bind(7, int64_t{u.failed_logins}).BindTime(8, u.locked_until).BindTime(9, u.created);
    st->Bind(10, u.organisation);
    return st->Run();
  }

  Expected<User> GetByName(const std::string& name) override {
    static const std::string kSql = Sql({"SELECT ", kUserColumns, " FROM users WHERE name = ?"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading user");
    if (!st) return MakeError(st.error());
    st->Bind(1, name);
    return One<User>(*st, ReadUser, "no user named " + Quoted(name));
  }

  Expected<User> GetById(const std::string& id) override {
    static const std::string kSql = Sql({"SELECT ", kUserColumns, " FROM users WHERE id = ?"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading user");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    return One<User>(*st, ReadUser, "no user with id " + Quoted(id));
  }

  Expected<void> Update(const User& u) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "UPDATE users SET name = ?2, role = ?3, password_hash = ?4, must_change_password = ?5, "
        "disabled = ?6, failed_logins = ?7, locked_until_us = ?8, organisation = ?9 "
        "WHERE id = ?1",
        "updating user");
    if (!st) return MakeError(st.error());
    st->Bind(1, u.id).Bind(2, u.name).Bind(3, u.role).Bind(4, u.password_hash);
    st->Bind(5, int64_t{u.must_change_password}).Bind(6, int64_t{u.disabled});
    st->Bind(7, int64_t{u.failed_logins}).BindTime(8, u.locked_until).Bind(9, u.organisation);
    return RunOne(*db_.conn, *st, "updating user: no user with id " + Quoted(u.id));
  }

  Expected<std::vector<User>> List() override {
    static const std::string kSql = Sql({"SELECT ", kUserColumns, " FROM users ORDER BY name"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing users");
    if (!st) return MakeError(st.error());
    return ReadAll<User>(*st, ReadUser);
  }

  Expected<int64_t> Count() override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare("SELECT COUNT(*) FROM users", "counting users");
    if (!st) return MakeError(st.error());
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    return *row ? st->Int(0) : 0;
  }

 private:
  Db& db_;
};

// --- sessions ---

Expected<Session> ReadSession(const Statement& st) {
  Session s;
  s.token_hash = st.Text(0);
  s.user_id = st.Text(1);
  s.created = st.Time(2);
  s.expires = st.Time(3);
  s.last_used = st.Time(4);
  s.mfa = st.Int(5) != 0;
  return s;
}

class SqliteSessionRepo final : public SessionRepo {
 public:
  explicit SqliteSessionRepo(Db& db) : db_(db) {}

  Expected<void> Create(const Session& s) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "INSERT INTO sessions(token_hash, user_id, created_us, expires_us, last_used_us, mfa) "
        "VALUES(?, ?, ?, ?, ?, ?)",
        "inserting session");
    if (!st) return MakeError(st.error());
    st->Bind(1, s.token_hash).Bind(2, s.user_id).BindTime(3, s.created).BindTime(4, s.expires);
    st->BindTime(5, s.last_used).Bind(6, int64_t{s.mfa});
    return st->Run();
  }

  Expected<Session> Get(const std::string& token_hash) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "SELECT token_hash, user_id, created_us, expires_us, last_used_us, mfa FROM sessions "
        "WHERE token_hash = ?",
        "reading session");
    if (!st) return MakeError(st.error());
    st->Bind(1, token_hash);
    // The token hash is a credential's digest: keep it out of messages and logs.
    return One<Session>(*st, ReadSession, "no such session");
  }

  Expected<void> Touch(const std::string& token_hash, TimePoint last_used) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare("UPDATE sessions SET last_used_us = ? WHERE token_hash = ?",
                                "touching session");
    if (!st) return MakeError(st.error());
    st->BindTime(1, last_used).Bind(2, token_hash);
    return RunOne(*db_.conn, *st, "touching session: no such session");
  }

  Expected<void> Delete(const std::string& token_hash) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare("DELETE FROM sessions WHERE token_hash = ?", "deleting session");
    if (!st) return MakeError(st.error());
    st->Bind(1, token_hash);
    return st->Run();  // idempotent: logging out twice is fine
  }

  Expected<void> DeleteForUser(const std::string& user_id) override {
    std::lock_guard lock(db_.mu);
    auto st =
        db_.conn->Prepare("DELETE FROM sessions WHERE user_id = ?", "deleting sessions of user");
    if (!st) return MakeError(st.error());
    st->Bind(1, user_id);
    return st->Run();
  }

  Expected<void> SetMfa(const std::string& token_hash, bool mfa) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare("UPDATE sessions SET mfa = ? WHERE token_hash = ?",
                                "marking session as MFA-authenticated");
    if (!st) return MakeError(st.error());
    st->Bind(1, int64_t{mfa}).Bind(2, token_hash);
    return RunOne(*db_.conn, *st, "no such session");
  }

 private:
  Db& db_;
};

// --- devices ---

constexpr std::string_view kDeviceColumns =
    "id, name, site, tags, status, machine_fingerprint, bind_machine, created_us";

std::string TagsToJson(const std::vector<std::string>& tags) {
  // Replace invalid UTF-8 rather than throw; tags are operator input.
  return nlohmann::json(tags).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Expected<Device> ReadDevice(const Statement& st) {
  Device d;
  d.id = st.Text(0);
  d.name = st.Text(1);
  d.site = st.Text(2);
  auto tags = nlohmann::json::parse(st.Text(3), nullptr, /*allow_exceptions=*/false);
  if (!tags.is_array()) {
    return MakeError(Errc::kParse,
                     "reading device " + Quoted(d.name) + ": tags are not a JSON array");
  }
  for (const auto& tag : tags) {
    if (!tag.is_string()) {
      return MakeError(Errc::kParse,
                       "reading device " + Quoted(d.name) + ": a tag is not a JSON string");
    }
    d.tags.push_back(tag.get<std::string>());
  }
  d.status = st.Text(4);
  d.machine_fingerprint = st.Text(5);
  d.bind_machine = st.Int(6) != 0;
  d.created = st.Time(7);
  return d;
}

class SqliteDeviceRepo final : public DeviceRepo {
 public:
  explicit SqliteDeviceRepo(Db& db) : db_(db) {}

  Expected<void> Create(const Device& d) override {
    static const std::string kSql =
        Sql({"INSERT INTO devices(", kDeviceColumns, ") VALUES(?, ?, ?, ?, ?, ?, ?, ?)"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "inserting device");
    if (!st) return MakeError(st.error());
    st->Bind(1, d.id).Bind(2, d.name).Bind(3, d.site).Bind(4, TagsToJson(d.tags));
    st->Bind(5, d.status).Bind(6, d.machine_fingerprint).Bind(7, int64_t{d.bind_machine});
    st->BindTime(8, d.created);
    return st->Run();
  }

  Expected<Device> GetByName(const std::string& name) override {
    static const std::string kSql =
        Sql({"SELECT ", kDeviceColumns, " FROM devices WHERE name = ?"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading device");
    if (!st) return MakeError(st.error());
    st->Bind(1, name);
    return One<Device>(*st, ReadDevice, "no device named " + Quoted(name));
  }

  Expected<Device> GetById(const std::string& id) override {
    static const std::string kSql = Sql({"SELECT ", kDeviceColumns, " FROM devices WHERE id = ?"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading device");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    return One<Device>(*st, ReadDevice, "no device with id " + Quoted(id));
  }

  Expected<void> Update(const Device& d) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "UPDATE devices SET name = ?2, site = ?3, tags = ?4, status = ?5, "
        "machine_fingerprint = ?6, bind_machine = ?7 WHERE id = ?1",
        "updating device");
    if (!st) return MakeError(st.error());
    st->Bind(1, d.id).Bind(2, d.name).Bind(3, d.site).Bind(4, TagsToJson(d.tags));
    st->Bind(5, d.status).Bind(6, d.machine_fingerprint).Bind(7, int64_t{d.bind_machine});
    return RunOne(*db_.conn, *st, "updating device: no device with id " + Quoted(d.id));
  }

  Expected<std::vector<Device>> List() override {
    static const std::string kSql = Sql({"SELECT ", kDeviceColumns, " FROM devices ORDER BY name"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing devices");
    if (!st) return MakeError(st.error());
    return ReadAll<Device>(*st, ReadDevice);
  }

 private:
  Db& db_;
};

// --- enrollments ---

Expected<Enrollment> ReadEnrollment(const Statement& st) {
  Enrollment e;
  e.reference = st.Text(0);
  e.secret = st.Text(1);
  e.device_id = st.Text(2);
  e.created = st.Time(3);
  e.expires = st.Time(4);
  e.used = st.OptionalTime(5);
  return e;
}

class SqliteEnrollmentRepo final : public EnrollmentRepo {
 public:
  explicit SqliteEnrollmentRepo(Db& db) : db_(db) {}

  Expected<void> Create(const Enrollment& e) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "INSERT INTO enrollments(reference, secret, device_id, created_us, expires_us, used_us) "
        "VALUES(?, ?, ?, ?, ?, ?)",
        "inserting enrollment");
    if (!st) return MakeError(st.error());
    st->Bind(1, e.reference).Bind(2, e.secret).Bind(3, e.device_id).BindTime(4, e.created);
    st->BindTime(5, e.expires).BindTime(6, e.used);
    return st->Run();
  }

  Expected<Enrollment> Get(const std::string& reference) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "SELECT reference, secret, device_id, created_us, expires_us, used_us FROM enrollments "
        "WHERE reference = ?",
        "reading enrollment");
    if (!st) return MakeError(st.error());
    st->Bind(1, reference);
    return One<Enrollment>(*st, ReadEnrollment, "no enrollment " + Quoted(reference));
  }

  Expected<void> Consume(const std::string& reference, TimePoint when) override {
    std::lock_guard lock(db_.mu);
    // One statement: the check and the claim are atomic even against other processes.
    auto st = db_.conn->Prepare(
        "UPDATE enrollments SET used_us = ?2, secret = '' "
        "WHERE reference = ?1 AND used_us IS NULL AND expires_us > ?2",
        "consuming enrollment");
    if (!st) return MakeError(st.error());
    st->Bind(1, reference).BindTime(2, when);
    if (auto ok = st->Run(); !ok) return ok;
    if (db_.conn->Changes() == 1) return {};

    // Lost: say why. The row cannot become claimable again, so this read is not racy.
    auto why = db_.conn->Prepare("SELECT used_us IS NOT NULL FROM enrollments WHERE reference = ?",
                                 "consuming enrollment");
    if (!why) return MakeError(why.error());
    why->Bind(1, reference);
    auto row = why->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no enrollment " + Quoted(reference));
    if (why->Int(0) != 0) {
      return MakeError(Errc::kFailedPrecondition,
                       "enrollment " + Quoted(reference) + " was already used");
    }
    return MakeError(Errc::kExpired, "enrollment " + Quoted(reference) + " has expired");
  }

  Expected<void> CancelForDevice(const std::string& device_id, TimePoint when) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "UPDATE enrollments SET used_us = ?2, secret = '' WHERE device_id = ?1 AND used_us IS NULL",
        "cancelling enrollments of device");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id).BindTime(2, when);
    return st->Run();
  }

 private:
  Db& db_;
};

// --- certificates ---

constexpr std::string_view kCertificateColumns =
    "serial, device_id, subject, not_before_us, not_after_us, pem, status, revoked_at_us, "
    "revocation_reason, fingerprint";

Expected<Certificate> ReadCertificate(const Statement& st) {
  Certificate c;
  c.serial = st.Text(0);
  c.device_id = st.Text(1);
  c.subject = st.Text(2);
  c.not_before = st.Time(3);
  c.not_after = st.Time(4);
  c.pem = st.Text(5);
  c.status = st.Text(6);
  c.revoked_at = st.OptionalTime(7);
  c.revocation_reason = static_cast<int>(st.Int(8));
  c.fingerprint = st.Text(9);
  return c;
}

class SqliteCertificateRepo final : public CertificateRepo {
 public:
  explicit SqliteCertificateRepo(Db& db) : db_(db) {}

  Expected<void> Insert(const Certificate& c) override {
    static const std::string kSql = Sql({"INSERT INTO certificates(", kCertificateColumns,
                                         ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "inserting certificate");
    if (!st) return MakeError(st.error());
    st->Bind(1, c.serial).Bind(2, c.device_id).Bind(3, c.subject).BindTime(4, c.not_before);
    st->BindTime(5, c.not_after).Bind(6, c.pem).Bind(7, c.status).BindTime(8, c.revoked_at);
    st->Bind(9, int64_t{c.revocation_reason}).Bind(10, c.fingerprint);
    return st->Run();
  }

  Expected<Certificate> GetBySerial(const std::string& serial) override {
    static const std::string kSql =
        Sql({"SELECT ", kCertificateColumns, " FROM certificates WHERE serial = ?"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading certificate");
    if (!st) return MakeError(st.error());
    st->Bind(1, serial);
    return One<Certificate>(*st, ReadCertificate, "no certificate with serial " + Quoted(serial));
  }

  Expected<std::vector<Certificate>> ListForDevice(const std::string& device_id) override {
    static const std::string kSql =
        Sql({"SELECT ", kCertificateColumns,
             " FROM certificates WHERE device_id = ? ORDER BY not_before_us, serial"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing certificates of device");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id);
    return ReadAll<Certificate>(*st, ReadCertificate);
  }

  Expected<void> Revoke(const std::string& serial, int reason, TimePoint when) override {
    std::lock_guard lock(db_.mu);
    // Already revoked keeps its first revocation time and reason (what the CRL published).
    auto st = db_.conn->Prepare(
        "UPDATE certificates SET status = 'revoked', revoked_at_us = ?2, revocation_reason = ?3 "
        "WHERE serial = ?1 AND status <> 'revoked'",
        "revoking certificate");
    if (!st) return MakeError(st.error());
    st->Bind(1, serial).BindTime(2, when).Bind(3, int64_t{reason});
    if (auto ok = st->Run(); !ok) return ok;
    if (db_.conn->Changes() == 1) return {};
    auto exists =
        db_.conn->Prepare("SELECT 1 FROM certificates WHERE serial = ?", "revoking certificate");
    if (!exists) return MakeError(exists.error());
    exists->Bind(1, serial);
    auto row = exists->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no certificate with serial " + Quoted(serial));
    return {};
  }

  Expected<std::vector<Certificate>> ListRevoked(TimePoint now) override {
    static const std::string kSql =
        Sql({"SELECT ", kCertificateColumns,
             " FROM certificates WHERE status = 'revoked' AND not_after_us > ? "
             "ORDER BY revoked_at_us, serial"});
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing revoked certificates");
    if (!st) return MakeError(st.error());
    st->BindTime(1, now);
    return ReadAll<Certificate>(*st, ReadCertificate);
  }

 private:
  Db& db_;
};

// --- kv ---

class SqliteKeyValueRepo final : public KeyValueRepo {
 public:
  explicit SqliteKeyValueRepo(Db& db) : db_(db) {}

  Expected<std::optional<std::string>> Get(const std::string& key) override {
    std::lock_guard lock(db_.mu);
    return GetLocked(key);
  }

  Expected<void> Put(const std::string& key, const std::string& value) override {
    std::lock_guard lock(db_.mu);
    return PutLocked(key, value);
  }

  Expected<int64_t> Increment(const std::string& key) override {
    std::lock_guard lock(db_.mu);
    const std::string operation = "incrementing " + Quoted(key);
    // IMMEDIATE transaction: read-modify-write is atomic against other connections too.
    return InTransaction(*db_.conn, operation, [&]() -> Expected<int64_t> {
      auto current = GetLocked(key);
      if (!current) return MakeError(current.error());
      int64_t value = 0;
      if (*current) {
        const std::string& text = **current;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size()) {
          return MakeError(Errc::kFailedPrecondition,
                           operation + ": value " + Quoted(text) + " is not an integer");
        }
        if (value == std::numeric_limits<int64_t>::max()) {
          return MakeError(Errc::kResourceExhausted, operation + ": counter overflow");
        }
      }
      ++value;
      if (auto ok = PutLocked(key, std::to_string(value)); !ok) return MakeError(ok.error());
      return value;
    });
  }

 private:
  Expected<std::optional<std::string>> GetLocked(const std::string& key) {
    auto st = db_.conn->Prepare("SELECT value FROM kv WHERE key = ?", "reading kv");
    if (!st) return MakeError(st.error());
    st->Bind(1, key);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(st->Text(0));
  }

  Expected<void> PutLocked(const std::string& key, const std::string& value) {
    auto st = db_.conn->Prepare(
        "INSERT INTO kv(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        "writing kv");
    if (!st) return MakeError(st.error());
    st->Bind(1, key).Bind(2, value);
    return st->Run();
  }

  Db& db_;
};

// --- the store ---

class SqliteStore final : public Store {
 public:
  SqliteStore(std::unique_ptr<Connection> conn, int version) : version_(version) {
    db_.conn = std::move(conn);
  }

  UserRepo& users() override { return users_; }
  SessionRepo& sessions() override { return sessions_; }
  DeviceRepo& devices() override { return devices_; }
  EnrollmentRepo& enrollments() override { return enrollments_; }
  CertificateRepo& certificates() override { return certificates_; }
  KeyValueRepo& kv() override { return kv_; }
  AuditStore& audit() override { return *audit_; }
  MfaRepo& mfa() override { return *mfa_; }
  PolicyRepo& policies() override { return *policies_; }
  AccessRepo& access() override { return *access_; }
  OutboxRepo& outbox() override { return *outbox_; }
  DeviceStateRepo& device_state() override { return *device_state_; }
  TunnelRepo& tunnels() override { return *tunnels_; }
  RecordingRepo& recordings() override { return *recordings_; }
  ReportRepo& reports() override { return *reports_; }
  int schema_version() const override { return version_; }

 private:
  Db db_;
  int version_;
  SqliteUserRepo users_{db_};
  SqliteSessionRepo sessions_{db_};
  SqliteDeviceRepo devices_{db_};
  SqliteEnrollmentRepo enrollments_{db_};
  SqliteCertificateRepo certificates_{db_};
  SqliteKeyValueRepo kv_{db_};
  std::unique_ptr<AuditStore> audit_ = sqlite::MakeAuditStore(db_.mu, db_.conn);
  std::unique_ptr<MfaRepo> mfa_ = sqlite::MakeMfaRepo(db_.mu, db_.conn);
  std::unique_ptr<PolicyRepo> policies_ = sqlite::MakePolicyRepo(db_.mu, db_.conn);
  std::unique_ptr<AccessRepo> access_ = sqlite::MakeAccessRepo(db_.mu, db_.conn);
  std::unique_ptr<OutboxRepo> outbox_ = sqlite::MakeOutboxRepo(db_.mu, db_.conn);
  std::unique_ptr<DeviceStateRepo> device_state_ = sqlite::MakeDeviceStateRepo(db_.mu, db_.conn);
  std::unique_ptr<TunnelRepo> tunnels_ = sqlite::MakeTunnelRepo(db_.mu, db_.conn);
  std::unique_ptr<RecordingRepo> recordings_ = sqlite::MakeRecordingRepo(db_.mu, db_.conn);
  std::unique_ptr<ReportRepo> reports_ = sqlite::MakeReportRepo(db_.mu, db_.conn);
};

}  // namespace

Expected<std::unique_ptr<Store>> OpenSqlite(const SqliteSettings& settings) {
  if (settings.path.empty()) {
    return MakeError(Errc::kInvalidArgument, "opening database: no path given");
  }
  if (settings.busy_timeout_ms < 0) {
    return MakeError(Errc::kInvalidArgument, "opening database: busy timeout must be >= 0");
  }
  auto conn = Connection::Open(settings.path, settings.busy_timeout_ms);
  if (!conn) return MakeError(conn.error());
  auto version = sqlite::Migrate(**conn);
  if (!version) return MakeError(version.error().WithContext("opening database " + settings.path));
  return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(*conn), *version));
}

}  // namespace torwart::storage
