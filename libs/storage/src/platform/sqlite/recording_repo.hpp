// SQLite repository for the index of stream recordings uploaded by gateways (table recordings,
// see the migration "recordings"). The bytes themselves are files torwartd keeps in
// <data>/recordings/. Shares SqliteStore's connection and mutex (every call locks `mu`);
// thread-safe as such.
#pragma once

#include <memory>
#include <mutex>

#include "platform/sqlite/connection.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::storage::sqlite {

// `conn` is read at each call (the store sets it after constructing the repos).
std::unique_ptr<RecordingRepo> MakeRecordingRepo(std::mutex& mu, std::unique_ptr<Connection>& conn);

}  // namespace torwart::storage::sqlite
