// SQLite repository for tunnel sessions and device quarantine (tables tunnel_sessions and
// device_quarantine, migration 7). Shares SqliteStore's connection and mutex (every call locks
// `mu`); thread-safe as such.
#pragma once

#include <memory>
#include <mutex>

#include "platform/sqlite/connection.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::storage::sqlite {

// The columns of tunnel_sessions in the order ReadTunnelSession reads them.
extern const char kTunnelSessionColumns[];
TunnelSession ReadTunnelSession(const Statement& st);

// `conn` is read at each call (the store sets it after constructing the repos).
std::unique_ptr<TunnelRepo> MakeTunnelRepo(std::mutex& mu, std::unique_ptr<Connection>& conn);

}  // namespace torwart::storage::sqlite
