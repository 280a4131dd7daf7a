// The SQLite audit store: the hash-chained `audit` table, its checkpoints, legal holds and the
// retention purge. Shares SqliteStore's connection and mutex (every call locks `mu`).
#pragma once

#include <memory>
#include <mutex>

#include "platform/sqlite/connection.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::storage::sqlite {

// `conn` is read at each call (the store sets it after constructing the repos).
std::unique_ptr<AuditStore> MakeAuditStore(std::mutex& mu, std::unique_ptr<Connection>& conn);

}  // namespace torwart::storage::sqlite
