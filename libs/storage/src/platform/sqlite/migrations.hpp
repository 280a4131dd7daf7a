// The SQLite schema as an ordered list of migration steps, and the code that applies them.
// Not thread-safe: runs on one Connection during OpenSqlite.
#pragma once

#include <span>

#include "platform/sqlite/connection.hpp"

namespace torwart::storage::sqlite {

struct Migration {
  int version;              // 1, 2, 3, ... without gaps
  const char* description;  // recorded in schema_migrations
  const char* sql;          // one or more statements; constant text, no values
};

// Every step, in order. Never edit a released step: append a new one.
std::span<const Migration> Migrations();

// Applies pending steps, each in its own transaction, recording them in schema_migrations.
// Returns the schema version afterwards. Fails with kFailedPrecondition if the database was
// written by a newer version of torwartd (a schema version this code does not know).
Expected<int> Migrate(Connection& conn, std::span<const Migration> steps = Migrations());

}  // namespace torwart::storage::sqlite
