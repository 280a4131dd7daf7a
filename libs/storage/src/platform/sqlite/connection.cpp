#include "platform/sqlite/connection.hpp"

#include <string>
#include <thread>
#include <utility>

namespace torwart::storage::sqlite {

Errc MapResultCode(int extended_code) {
  switch (extended_code) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return Errc::kAlreadyExists;
    case SQLITE_CONSTRAINT_FOREIGNKEY:  // refers to a row that does not exist
    case SQLITE_CONSTRAINT_TRIGGER:     // RAISE() in a trigger, e.g. the append-only audit table
      return Errc::kFailedPrecondition;
    default:
      break;
  }
  switch (extended_code & 0xff) {
    case SQLITE_OK:
      return Errc::kOk;
    case SQLITE_CONSTRAINT:  // NOT NULL, CHECK, datatype of a STRICT table
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
      return Errc::kInvalidArgument;
    case SQLITE_FULL:
    case SQLITE_TOOBIG:
    case SQLITE_NOMEM:
      return Errc::kResourceExhausted;
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
      return Errc::kIo;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::kUnavailable;
    default:
      return Errc::kInternal;  // SQLITE_ERROR, SQLITE_MISUSE, ...: our SQL or our use of it
  }
}

Error MakeSqliteError(int extended_code, std::string_view operation, std::string_view message) {
  std::string text(operation);
  text += ": ";
  text += message.empty() ? std::string_view(sqlite3_errstr(extended_code)) : message;
  return Error(MapResultCode(extended_code), std::move(text));
}

int64_t ToMicros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

TimePoint FromMicros(int64_t us) {
  return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::microseconds(us)));
}

// --- Statement ---

Statement::Statement(Connection& conn, sqlite3_stmt* stmt, std::string_view operation)
    : conn_(&conn), stmt_(stmt), operation_(operation) {}

Statement::Statement(Statement&& other) noexcept
    : conn_(other.conn_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      operation_(std::move(other.operation_)),
      bind_error_(other.bind_error_) {}

Statement::~Statement() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

void Statement::NoteBind(int rc) {
  if (rc != SQLITE_OK && bind_error_ == SQLITE_OK) bind_error_ = rc;
}

Statement& Statement::Bind(int index, std::string_view text) {
  // A null data pointer would bind NULL; an empty view must bind ''.
  const char* data = text.data() != nullptr ? text.data() : "";
  NoteBind(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::Bind(int index, int64_t value) {
  NoteBind(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::Bind(int index, std::optional<int64_t> value) {
  NoteBind(value ? sqlite3_bind_int64(stmt_, index, *value) : sqlite3_bind_null(stmt_, index));
  return *this;
}

Statement& Statement::BindTime(int index, std::optional<TimePoint> t) {
  return Bind(index, t ? std::optional<int64_t>(ToMicros(*t)) : std::nullopt);
}

Expected<bool> Statement::Step() {
  if (bind_error_ != SQLITE_OK) {
    return MakeError(
        MakeSqliteError(bind_error_, operation_,
                        "binding parameters: " + std::string(sqlite3_errstr(bind_error_))));
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return MakeError(conn_->LastError(operation_));
}

Expected<void> Statement::Run() {
  while (true) {
    auto row = Step();
    if (!row) return MakeError(row.error());
    if (!*row) return {};
  }
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t Statement::Int(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::Text(int column) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  if (p == nullptr) return {};
  return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::optional<TimePoint> Statement::OptionalTime(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Time(column);
}

// --- Connection ---

namespace {

// Switching a new database to WAL needs an exclusive lock, and SQLite returns SQLITE_BUSY for it
// without consulting the busy handler; retry for up to the busy timeout ourselves (several
// processes or stores opening a fresh file at once).
Expected<std::string> EnableWal(Connection& conn, int busy_timeout_ms, std::string_view operation) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  while (true) {
    auto st = conn.Prepare("PRAGMA journal_mode = WAL", operation);
    if (!st) return MakeError(st.error());
    auto row = st->Step();
    if (row) return *row ? st->Text(0) : std::string();
    if (!row.error().Is(Errc::kUnavailable) || std::chrono::steady_clock::now() >= deadline) {
      return MakeError(row.error());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Expected<std::unique_ptr<Connection>> Connection::Open(const std::string& path,
                                                       int busy_timeout_ms) {
  const std::string operation = "opening database " + path;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    Error e = MakeSqliteError(db ? sqlite3_extended_errcode(db) : rc, operation,
                              db ? sqlite3_errmsg(db) : "");
    sqlite3_close_v2(db);  // a handle is returned even on failure
    return MakeError(std::move(e));
  }
  std::unique_ptr<Connection> conn(new Connection(db));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, busy_timeout_ms);

  if (auto fk = conn->Exec("PRAGMA foreign_keys = ON", operation + ": enabling foreign keys");
      !fk) {
    return MakeError(fk.error());
  }
  // The first statement that reads the file: one that is not a database fails here (kIo).
  auto mode = EnableWal(*conn, busy_timeout_ms, operation + ": enabling WAL");
  if (!mode) return MakeError(mode.error());
  // An in-memory database has no WAL; it reports "memory".
  if (*mode != "wal" && !(path == ":memory:" && *mode == "memory")) {
    return MakeError(Errc::kIo,
                     operation + ": cannot switch to WAL mode (journal mode is '" + *mode + "')");
  }
  // Audit appends must be durable when Append returns; FULL everywhere keeps it simple.
  if (auto sync = conn->Exec("PRAGMA synchronous = FULL", operation + ": setting synchronous");
      !sync) {
    return MakeError(sync.error());
  }
  return conn;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

Expected<void> Connection::Exec(const char* sql, std::string_view operation) {
  char* message = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return {};
  Error e = MakeSqliteError(sqlite3_extended_errcode(db_), operation,
                            message ? message : sqlite3_errmsg(db_));
  sqlite3_free(message);
  return MakeError(std::move(e));
}

Expected<Statement> Connection::Prepare(const char* sql, std::string_view operation) {
  auto it = cache_.find(std::string_view(sql));
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return MakeError(LastError(operation));
    it = cache_.emplace(sql, stmt).first;
  }
  return Statement(*this, it->second, operation);
}

int64_t Connection::Changes() const { return sqlite3_changes64(db_); }

Error Connection::LastError(std::string_view operation) const {
  return MakeSqliteError(sqlite3_extended_errcode(db_), operation, sqlite3_errmsg(db_));
}

}  // namespace torwart::storage::sqlite
