// Repository interfaces for torwartd's state, and the SQLite backend's factory.
// The PostgreSQL backend (scale-out) will implement the same interfaces.
// All methods are thread-safe. Times are UTC. Nothing here knows about HTTP or PKI formats.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "torwart/audit/event.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

namespace torwart::storage {

struct User {
  std::string id;             // UUID
  std::string name;           // unique login name
  std::string role;           // admin, operator, approver, technician, auditor, vendor
  std::string password_hash;  // Argon2id encoded string (libsodium crypto_pwhash_str)
  bool must_change_password = false;
  bool disabled = false;
  int failed_logins = 0;
  std::optional<TimePoint> locked_until;
  TimePoint created;
};

struct Session {
  std::string token_hash;  // SHA-256 hex of the bearer token; the token itself is never stored
  std::string user_id;
  TimePoint created, expires, last_used;
};

struct Device {
  std::string id;    // UUID: the certificate CN
  std::string name;  // unique, operator-chosen
  std::string site;
  std::vector<std::string> tags;
  std::string status = "registered";  // registered, enrolled, revoked
  std::string machine_fingerprint;    // empty until enrolled with binding
  bool bind_machine = false;
  TimePoint created;
};

struct Enrollment {
  std::string reference;  // public reference (CMP senderKID / EST user)
  std::string secret;     // shared secret; needed in clear for CMP PBMAC; cleared when used
  std::string device_id;
  TimePoint created, expires;
  std::optional<TimePoint> used;
};

struct Certificate {
  std::string serial;  // lowercase hex, no leading zeros stripped beyond OpenSSL's BN_bn2hex
  std::string device_id;
  std::string subject;
  TimePoint not_before, not_after;
  std::string pem;
  std::string status = "valid";  // valid, revoked
  std::optional<TimePoint> revoked_at;
  int revocation_reason = 0;  // RFC 5280 CRLReason code
  std::string fingerprint;    // machine fingerprint the certificate was issued for (may be empty)
};

class UserRepo {
 public:
  virtual ~UserRepo() = default;
  virtual Expected<void> Create(const User& u) = 0;                   // kAlreadyExists on name
  virtual Expected<User> GetByName(const std::string& name) = 0;      // kNotFound
  virtual Expected<User> GetById(const std::string& id) = 0;          // kNotFound
  virtual Expected<void> Update(const User& u) = 0;                   // by id
  virtual Expected<std::vector<User>> List() = 0;
  virtual Expected<int64_t> Count() = 0;
};

class SessionRepo {
 public:
  virtual ~SessionRepo() = default;
  virtual Expected<void> Create(const Session& s) = 0;
  virtual Expected<Session> Get(const std::string& token_hash) = 0;  // kNotFound
  virtual Expected<void> Touch(const std::string& token_hash, TimePoint last_used) = 0;
  virtual Expected<void> Delete(const std::string& token_hash) = 0;
  virtual Expected<void> DeleteForUser(const std::string& user_id) = 0;
};

class DeviceRepo {
 public:
  virtual ~DeviceRepo() = default;
  virtual Expected<void> Create(const Device& d) = 0;  // kAlreadyExists on name
  virtual Expected<Device> GetByName(const std::string& name) = 0;
  virtual Expected<Device> GetById(const std::string& id) = 0;
  virtual Expected<void> Update(const Device& d) = 0;  // by id
  virtual Expected<std::vector<Device>> List() = 0;
};

class EnrollmentRepo {
 public:
  virtual ~EnrollmentRepo() = default;
  virtual Expected<void> Create(const Enrollment& e) = 0;
  virtual Expected<Enrollment> Get(const std::string& reference) = 0;  // kNotFound
  // Atomically marks the enrollment used and clears its secret. kFailedPrecondition if it was
  // already used (the loser of a race gets this, never two certificates).
  virtual Expected<void> Consume(const std::string& reference, TimePoint when) = 0;
  // Invalidates every unused enrollment of a device (revocation).
  virtual Expected<void> CancelForDevice(const std::string& device_id, TimePoint when) = 0;
};

class CertificateRepo {
 public:
  virtual ~CertificateRepo() = default;
  virtual Expected<void> Insert(const Certificate& c) = 0;
  virtual Expected<Certificate> GetBySerial(const std::string& serial) = 0;
  virtual Expected<std::vector<Certificate>> ListForDevice(const std::string& device_id) = 0;
  // Revokes one certificate; kNotFound if unknown, success if already revoked (idempotent).
  virtual Expected<void> Revoke(const std::string& serial, int reason, TimePoint when) = 0;
  // Every revoked certificate whose not_after is after `now` (expired ones may leave the CRL).
  virtual Expected<std::vector<Certificate>> ListRevoked(TimePoint now) = 0;
};

// Small key/value state: CRL number, schema facts, first-start markers.
class KeyValueRepo {
 public:
  virtual ~KeyValueRepo() = default;
  virtual Expected<std::optional<std::string>> Get(const std::string& key) = 0;
  virtual Expected<void> Put(const std::string& key, const std::string& value) = 0;
  // Atomically increments an integer counter (starting at 1) and returns the new value.
  virtual Expected<int64_t> Increment(const std::string& key) = 0;
};

// The audit table (simple append-only for now; the tamper-evident chain is a later issue).
class AuditStore : public audit::Sink, public audit::Reader {};

class Store {
 public:
  virtual ~Store() = default;
  virtual UserRepo& users() = 0;
  virtual SessionRepo& sessions() = 0;
  virtual DeviceRepo& devices() = 0;
  virtual EnrollmentRepo& enrollments() = 0;
  virtual CertificateRepo& certificates() = 0;
  virtual KeyValueRepo& kv() = 0;
  virtual AuditStore& audit() = 0;
  // Applied schema version after migrations.
  virtual int schema_version() const = 0;
};

struct SqliteSettings {
  std::string path;         // database file; ":memory:" for tests
  int busy_timeout_ms = 5000;
};

// Opens (creating if needed) the database in WAL mode and applies pending migrations in order,
// each in its own transaction. Fails with a clear error if the file is from a newer version.
Expected<std::unique_ptr<Store>> OpenSqlite(const SqliteSettings& settings);

}  // namespace torwart::storage
