// Repository interfaces for torwartd's state, and the SQLite backend's factory.
// The PostgreSQL backend (scale-out) will implement the same interfaces.
// All methods are thread-safe. Times are UTC. Nothing here knows about HTTP or PKI formats.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "torwart/audit/chain.hpp"
#include "torwart/audit/event.hpp"
#include "torwart/audit/group_commit.hpp"
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
  std::string organisation{};  // employer or contractor, for audit and reports ("" = unknown)
};

struct Session {
  std::string token_hash;  // SHA-256 hex of the bearer token; the token itself is never stored
  std::string user_id;
  TimePoint created, expires, last_used;
  bool mfa = false;  // the login (or a later confirmation) checked the second factor
};

// A user's TOTP second factor (RFC 6238). The secret is stored sealed by the server's key.
struct MfaSecret {
  std::string user_id;
  std::string sealed_secret;  // opaque to storage (auth.cpp seals and opens it)
  bool active = false;        // false until the user confirmed one valid code
  int64_t last_step = -1;     // the last time step consumed: a code is never accepted twice
  TimePoint created{};
  std::optional<TimePoint> activated{};
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

// One version of the access policy document (docs/design/policy.md). At most one is active.
struct PolicyVersion {
  int64_t version = 0;  // 1, 2, 3, ... in the order they were stored
  std::string text;     // the JSONC document as submitted
  std::string author;   // user name
  TimePoint created;
  bool active = false;
  std::string comment;  // e.g. "restored from version 3"
};

// One approval of an access request (four eyes: never the requester).
struct AccessApproval {
  std::string approver;
  TimePoint at;
  std::optional<std::chrono::seconds> shorten;  // the approver limited the grant to this length
  std::string comment;
};

// An access request and, once approved, its grant (docs/design/access.md).
struct AccessRequest {
  std::string id;  // "ar-" + 12 hex
  std::string requester;
  std::string site;
  std::string target;
  std::string scope;                // requested scope, "" = whatever the rule grants
  std::vector<std::string> scopes;  // granted scopes; empty = the whole protocol
  std::string reason;
  std::chrono::seconds duration{0};
  bool break_glass = false;
  // pending, denied, active, revoked. "expired" and "ended" are derived from `ends`/the user.
  std::string status = "pending";
  std::string rule_id;
  int64_t policy_version = 0;
  int approvals_required = 0;
  std::string approver_group;
  bool on_site_consent = false;
  std::string review_group;  // break-glass only
  std::vector<AccessApproval> approvals;
  TimePoint created;
  std::optional<TimePoint> starts, ends;  // validity of the grant
  std::string decided_by;                 // who denied / revoked
  std::string decision_reason;
  std::optional<TimePoint> decided_at;
  std::string reviewed_by, review_comment;  // break-glass review
  std::optional<TimePoint> reviewed_at;
  int64_t revision = 0;  // optimistic concurrency: bumped by every Update
};

// A webhook delivery waiting in (or done with) the outbox.
struct OutboxItem {
  int64_t id = 0;
  std::string url;
  std::string event;  // e.g. access.requested
  std::string body;   // JSON
  int attempts = 0;
  TimePoint created;
  TimePoint next_attempt;
  std::string status = "pending";  // pending, delivered, failed (gave up)
  std::string last_error;
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
  // Marks a session as authenticated with the second factor (kNotFound if it is gone).
  virtual Expected<void> SetMfa(const std::string& token_hash, bool mfa) = 0;
};

class MfaRepo {
 public:
  virtual ~MfaRepo() = default;
  // Creates or replaces the user's (inactive) secret with last_step = -1.
  virtual Expected<void> PutPending(const MfaSecret& m) = 0;
  virtual Expected<MfaSecret> Get(const std::string& user_id) = 0;  // kNotFound
  // Atomically records `step` as used if it is greater than the stored last_step, and, when
  // `activate`, marks the secret active. kFailedPrecondition if the step (or a later one) was
  // already used, so two requests with the same code never both succeed.
  virtual Expected<void> ConsumeStep(const std::string& user_id, int64_t step, bool activate,
                                     TimePoint when) = 0;
  virtual Expected<void> Delete(const std::string& user_id) = 0;  // idempotent
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

class PolicyRepo {
 public:
  virtual ~PolicyRepo() = default;
  // Stores a new version (number assigned) and, if `activate`, makes it the only active one,
  // atomically. Returns the version number.
  virtual Expected<int64_t> Add(const PolicyVersion& v, bool activate) = 0;
  virtual Expected<std::optional<PolicyVersion>> Active() = 0;
  virtual Expected<PolicyVersion> Get(int64_t version) = 0;  // kNotFound
  // Newest first; `text` is left empty.
  virtual Expected<std::vector<PolicyVersion>> List() = 0;
};

class AccessRepo {
 public:
  virtual ~AccessRepo() = default;
  virtual Expected<void> Create(const AccessRequest& r) = 0;  // kAlreadyExists on id
  virtual Expected<AccessRequest> Get(const std::string& id) = 0;  // kNotFound
  // Writes `r` if its revision is still the stored one and bumps it (r.revision + 1);
  // kFailedPrecondition when someone else changed the request meanwhile.
  virtual Expected<void> Update(const AccessRequest& r) = 0;
  // Newest first. Empty `requester`/`status` match all.
  virtual Expected<std::vector<AccessRequest>> List(const std::string& requester,
                                                    const std::string& status, int limit) = 0;
};

class OutboxRepo {
 public:
  virtual ~OutboxRepo() = default;
  virtual Expected<int64_t> Enqueue(const OutboxItem& item) = 0;
  // Pending items whose next_attempt <= now, oldest first.
  virtual Expected<std::vector<OutboxItem>> Due(TimePoint now, int limit) = 0;
  // Records an attempt: status, attempts, next_attempt and last_error as given.
  virtual Expected<void> Record(const OutboxItem& item) = 0;
  virtual Expected<std::vector<OutboxItem>> List(int limit) = 0;  // newest first
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

// A legal hold: records matching every set field are never purged (docs/design/audit.md).
struct AuditHold {
  int64_t id = 0;
  std::string category;  // "" = any
  std::string target;    // "" = any
  std::optional<TimePoint> since, until;  // since <= time < until; unset = open
  std::string reason;
  std::string created_by;
  TimePoint created;
};

struct AuditPurgeResult {
  int64_t count = 0;              // records blanked
  int64_t first_seq = 0, last_seq = 0;
  int64_t held = 0;               // records that matched but are under a legal hold
};

// The hash-chained audit log (docs/design/audit.md). Append (from Sink) is AppendBatch of one.
// AppendBatch assigns seq and chain hash in one transaction: one fsync for the whole batch.
// Records are never updated or deleted, except that Purge blanks the content of expired ones
// (their seq, time, category and hashes stay, so the chain still verifies).
class AuditStore : public audit::Sink, public audit::Reader, public audit::BatchAppender {
 public:
  // seq and hash of the newest record; (0, kGenesisHash) when empty.
  virtual Expected<std::pair<int64_t, std::string>> Head() = 0;
  // Stored records with seq > after_seq in seq order, at most `limit`, as the verifier needs.
  virtual Expected<std::vector<audit::Record>> ReadRecords(int64_t after_seq, int limit) = 0;
  virtual Expected<void> AddCheckpoint(const audit::Checkpoint& c) = 0;
  virtual Expected<std::vector<audit::Checkpoint>> Checkpoints() = 0;
  // Blanks records of `category` with time < before that no hold covers.
  virtual Expected<AuditPurgeResult> Purge(const std::string& category, TimePoint before) = 0;
  virtual Expected<int64_t> AddHold(const AuditHold& h) = 0;  // returns the new id
  virtual Expected<void> RemoveHold(int64_t id) = 0;           // kNotFound
  virtual Expected<std::vector<AuditHold>> ListHolds() = 0;
  // Bytes in use by the whole database file (pages in use times page size).
  virtual Expected<int64_t> UsedBytes() = 0;
  // Caps the database file at about `bytes` (PRAGMA max_page_count); 0 lifts the cap.
  virtual Expected<void> SetMaxBytes(int64_t bytes) = 0;
};

// A device's live state on the control channel (docs/design/control-channel.md).
struct DeviceState {
  std::string device_id;
  bool online = false;
  std::string agent_version;
  std::optional<TimePoint> last_seen;       // last live message from the device
  std::optional<TimePoint> status_changed;  // last online/offline transition
  std::string inventory;                    // JSON object text, "" if none yet
  std::optional<TimePoint> inventory_time;
  std::string health;                       // JSON object text, "" if none yet
  std::optional<TimePoint> health_time;
};

class DeviceStateRepo {
 public:
  virtual ~DeviceStateRepo() = default;
  // Creates or updates; returns true if `online` changed (or the device had no state yet).
  // `seen` = false for retained replays: they do not move last_seen (which never goes back).
  virtual Expected<bool> SetStatus(const std::string& device_id, bool online,
                                   const std::string& agent_version, TimePoint when,
                                   bool seen) = 0;
  virtual Expected<void> SetInventory(const std::string& device_id, const std::string& json,
                                      TimePoint when, bool seen) = 0;
  virtual Expected<void> SetHealth(const std::string& device_id, const std::string& json,
                                   TimePoint when, bool seen) = 0;
  virtual Expected<void> Touch(const std::string& device_id, TimePoint when) = 0;
  // Every device offline (the broker restarted: no connection survived). Returns how many.
  virtual Expected<int64_t> MarkAllOffline(TimePoint when) = 0;
  virtual Expected<DeviceState> Get(const std::string& device_id) = 0;  // kNotFound
  virtual Expected<std::vector<DeviceState>> List() = 0;
};

// One stream through the relay (docs/design/tunnel.md): opened when torwartd authorised a
// technician's CONNECT, closed when either leg ended.
struct TunnelSession {
  std::string id;  // stream id "st-" + 16 hex
  std::string grant_id;
  std::string user;
  std::string device_id;  // the gateway
  std::string site;
  std::string target;
  std::string client;  // technician's address "ip:port" as the relay saw it
  TimePoint opened;
  std::optional<TimePoint> closed;  // unset while live
  int64_t bytes_up = 0;             // technician -> gateway
  int64_t bytes_down = 0;           // gateway -> technician
  std::string end_reason;
};

// A device's quarantine (seed 003): no new streams, live ones killed. The agent is told and
// persists it; `synced` records that it confirmed the current state.
struct DeviceQuarantine {
  std::string device_id;
  bool on = false;
  std::string reason;
  std::string by;  // user who set or lifted it
  TimePoint since;
  bool synced = false;
};

class TunnelRepo {
 public:
  virtual ~TunnelRepo() = default;
  virtual Expected<void> Open(const TunnelSession& s) = 0;  // kAlreadyExists on id
  // Sets closed, bytes and reason once; kNotFound if unknown, kFailedPrecondition if closed.
  virtual Expected<void> Close(const std::string& id, TimePoint closed, int64_t bytes_up,
                               int64_t bytes_down, const std::string& reason) = 0;
  virtual Expected<TunnelSession> Get(const std::string& id) = 0;  // kNotFound
  // Newest first. Empty `user` matches all; `live_only`: not closed.
  virtual Expected<std::vector<TunnelSession>> List(const std::string& user, bool live_only,
                                                    int limit) = 0;
  // Closes every session still open (after a restart no stream survives). Returns how many.
  virtual Expected<int64_t> CloseAllOpen(TimePoint when, const std::string& reason) = 0;

  // Creates or replaces the device's quarantine state.
  virtual Expected<void> SetQuarantine(const DeviceQuarantine& q) = 0;
  // nullopt: never quarantined.
  virtual Expected<std::optional<DeviceQuarantine>> GetQuarantine(const std::string& device_id) = 0;
  // Marks the state synced if it is still `on` (a later change stays unsynced).
  virtual Expected<void> MarkQuarantineSynced(const std::string& device_id, bool on) = 0;
  // Every device that has a quarantine record (on, or lifted), by device id.
  virtual Expected<std::vector<DeviceQuarantine>> ListQuarantines() = 0;
};

// The index entry of a stream recording a gateway uploaded (docs/design/recording.md, "Storage
// on the server"); the bytes are a file torwartd keeps next to the database. One per stream.
struct StoredRecording {
  std::string id;  // the stream id "st-" + 16 hex
  std::string device_id;
  std::string user, grant_id, site, target, protocol;  // from the tunnel session / the header
  int64_t size = 0;
  std::string sha256;  // hex of the stored bytes
  TimePoint uploaded;
  std::optional<TimePoint> started;  // from the recording's header, if it could be read
  std::string status;                // verified, incomplete, tampered_on_upload
  std::string problem;               // what verification found ("" when verified)
  std::string cert_serial;           // the device certificate whose key verified it
};

class RecordingRepo {
 public:
  virtual ~RecordingRepo() = default;
  virtual Expected<void> Insert(const StoredRecording& r) = 0;        // kAlreadyExists on id
  virtual Expected<StoredRecording> Get(const std::string& id) = 0;  // kNotFound
  // Newest upload first; `user` "" matches all.
  virtual Expected<std::vector<StoredRecording>> List(const std::string& user, int limit) = 0;
  // kNotFound. Only to undo an upload whose audit event could not be written.
  virtual Expected<void> Delete(const std::string& id) = 0;
};

// Read-only range queries for the compliance reports (docs/design/reports.md): questions the
// per-object repositories above answer only by reading everything.
struct SessionRange {
  std::optional<TimePoint> from, until;  // from <= opened < until; unset = open
  std::string site;                      // "" = any
  std::string user;                      // "" = any
  // Paging: only sessions after this (opened, id) in the order of ReportRepo::Sessions.
  std::optional<std::pair<TimePoint, std::string>> after;
  int limit = 1000;  // must be > 0
};

class ReportRepo {
 public:
  virtual ~ReportRepo() = default;
  // Tunnel sessions matching `r`, oldest first (opened, then id).
  virtual Expected<std::vector<TunnelSession>> Sessions(const SessionRange& r) = 0;
  // Ids of the access requests for `site` ("" = any) created in [from, until), oldest first.
  virtual Expected<std::vector<std::string>> AccessRequestIds(const std::string& site,
                                                              TimePoint from, TimePoint until,
                                                              int limit) = 0;
};

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
  virtual MfaRepo& mfa() = 0;
  virtual PolicyRepo& policies() = 0;
  virtual AccessRepo& access() = 0;
  virtual OutboxRepo& outbox() = 0;
  virtual DeviceStateRepo& device_state() = 0;
  virtual TunnelRepo& tunnels() = 0;
  virtual RecordingRepo& recordings() = 0;
  virtual ReportRepo& reports() = 0;  // docs/design/reports.md
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
