// A thin RAII layer over one sqlite3 connection: cached prepared statements with bound
// parameters, transactions, and the mapping of SQLite result codes onto torwart::Errc.
// Not thread-safe: the owner (SqliteStore) serialises every use behind one mutex.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

namespace torwart::storage::sqlite {

// SQLite (extended) result code -> torwart error condition.
Errc MapResultCode(int extended_code);
// "<operation>: <sqlite message>" with the mapped code.
Error MakeSqliteError(int extended_code, std::string_view operation, std::string_view message);

// Times are stored as INTEGER microseconds since the Unix epoch (the precision of PostgreSQL's
// timestamptz, so both backends round-trip the same values).
int64_t ToMicros(TimePoint t);
TimePoint FromMicros(int64_t us);

class Connection;

// A prepared statement borrowed from the connection's cache; reset when it goes out of scope.
// Bind errors are remembered and reported by the next Step.
class Statement {
 public:
  Statement(Connection& conn, sqlite3_stmt* stmt, std::string_view operation);
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite.
  Statement& Bind(int index, std::string_view text);
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::optional<int64_t> value);  // nullopt binds NULL
  Statement& BindTime(int index, TimePoint t) { return Bind(index, ToMicros(t)); }
  Statement& BindTime(int index, std::optional<TimePoint> t);

  // True if a row is available, false when done.
  Expected<bool> Step();
  // Steps to completion (for INSERT/UPDATE/DELETE).
  Expected<void> Run();

  // Columns are 0-based.
  bool IsNull(int column) const;
  int64_t Int(int column) const;
  std::string Text(int column) const;
  TimePoint Time(int column) const { return FromMicros(Int(column)); }
  std::optional<TimePoint> OptionalTime(int column) const;

 private:
  void NoteBind(int rc);

  Connection* conn_;
  sqlite3_stmt* stmt_;
  std::string operation_;
  int bind_error_ = SQLITE_OK;
};

class Connection {
 public:
  // Opens or creates `path` (":memory:" for a private in-memory database) and applies the
  // connection settings: extended result codes, busy timeout, foreign keys, WAL, synchronous=FULL.
  static Expected<std::unique_ptr<Connection>> Open(const std::string& path, int busy_timeout_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs constant SQL without parameters (DDL, PRAGMA, BEGIN/COMMIT). Never pass values here.
  Expected<void> Exec(const char* sql, std::string_view operation);
  // A cached statement for constant SQL; values go through Statement::Bind.
  Expected<Statement> Prepare(const char* sql, std::string_view operation);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t Changes() const;
  Error LastError(std::string_view operation) const;
  sqlite3* handle() const { return db_; }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> cache_;
};

// Every row of a stepped statement, each turned into a T by `read` (a function taking the
// Statement and returning Expected<T>); the first error stops the walk.
template <class T, class Read>
Expected<std::vector<T>> ReadAll(Statement& st, Read read) {
  std::vector<T> out;
  while (true) {
    auto row = st.Step();
    if (!row) return MakeError(row.error());
    if (!*row) return out;
    auto item = read(st);
    if (!item) return MakeError(item.error());
    out.push_back(std::move(*item));
  }
}

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT; rolls back if it fails. IMMEDIATE takes the
// write lock up front so concurrent writers wait on the busy timeout instead of failing.
template <class Body>
auto InTransaction(Connection& conn, std::string_view operation, Body&& body) -> decltype(body()) {
  if (auto begun = conn.Exec("BEGIN IMMEDIATE", operation); !begun) return MakeError(begun.error());
  auto result = body();
  if (!result) {
    (void)conn.Exec("ROLLBACK", operation);
    return result;
  }
  if (auto committed = conn.Exec("COMMIT", operation); !committed) {
    (void)conn.Exec("ROLLBACK", operation);
    return MakeError(committed.error());
  }
  return result;
}

}  // namespace torwart::storage::sqlite
