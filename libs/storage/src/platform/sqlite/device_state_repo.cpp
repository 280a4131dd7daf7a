#include "platform/sqlite/device_state_repo.hpp"

#include <string>

namespace torwart::storage::sqlite {
namespace {

constexpr char kColumns[] =
    "device_id, online, agent_version, last_seen_us, status_changed_us, inventory, "
    "inventory_us, health, health_us";

DeviceState Read(const Statement& st) {
  DeviceState s;
  s.device_id = st.Text(0);
  s.online = st.Int(1) != 0;
  s.agent_version = st.Text(2);
  s.last_seen = st.OptionalTime(3);
  s.status_changed = st.OptionalTime(4);
  s.inventory = st.Text(5);
  s.inventory_time = st.OptionalTime(6);
  s.health = st.Text(7);
  s.health_time = st.OptionalTime(8);
  return s;
}

class SqliteDeviceStateRepo final : public DeviceStateRepo {
 public:
  SqliteDeviceStateRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<bool> SetStatus(const std::string& device_id, bool online,
                           const std::string& agent_version, TimePoint when, bool seen) override {
    std::lock_guard lock(mu_);
    auto before = conn_->Prepare("SELECT online FROM device_state WHERE device_id = ?",
                                 "reading device state");
    if (!before) return MakeError(before.error());
    before->Bind(1, device_id);
    auto row = before->Step();
    if (!row) return MakeError(row.error());
    bool changed = !*row || (before->Int(0) != 0) != online;
    auto st = conn_->Prepare(
        "INSERT INTO device_state(device_id, online, agent_version, last_seen_us, "
        "status_changed_us) VALUES(?1, ?2, ?3, CASE WHEN ?5 THEN ?4 END, ?4) "
        "ON CONFLICT(device_id) DO UPDATE SET online = ?2, "
        "agent_version = CASE WHEN ?3 = '' THEN agent_version ELSE ?3 END, "
        "last_seen_us = CASE WHEN ?5 THEN MAX(COALESCE(last_seen_us, 0), ?4) ELSE last_seen_us "
        "END, "
        "status_changed_us = CASE WHEN online != ?2 THEN ?4 ELSE status_changed_us END",
        "storing device status");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id).Bind(2, int64_t{online}).Bind(3, agent_version).BindTime(4, when);
    st->Bind(5, int64_t{seen});
    if (auto r = st->Run(); !r) return MakeError(r.error());
    return changed;
  }

  Expected<void> SetInventory(const std::string& device_id, const std::string& json, TimePoint when,
                              bool seen) override {
    return SetDocument("inventory", device_id, json, when, seen);
  }

  Expected<void> SetHealth(const std::string& device_id, const std::string& json, TimePoint when,
                           bool seen) override {
    return SetDocument("health", device_id, json, when, seen);
  }

  Expected<void> Touch(const std::string& device_id, TimePoint when) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "INSERT INTO device_state(device_id, last_seen_us) VALUES(?1, ?2) "
        "ON CONFLICT(device_id) DO UPDATE SET last_seen_us = MAX(COALESCE(last_seen_us, 0), ?2)",
        "storing device last seen");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id).BindTime(2, when);
    return st->Run();
  }

  Expected<int64_t> MarkAllOffline(TimePoint when) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "UPDATE device_state SET online = 0, status_changed_us = ? WHERE online != 0",
        "marking devices offline");
    if (!st) return MakeError(st.error());
    st->BindTime(1, when);
    if (auto r = st->Run(); !r) return MakeError(r.error());
    return static_cast<int64_t>(conn_->Changes());
  }

  Expected<DeviceState> Get(const std::string& device_id) override {
    std::lock_guard lock(mu_);
    const std::string sql =
        std::string("SELECT ") + kColumns + " FROM device_state WHERE device_id = ?";
    auto st = conn_->Prepare(sql.c_str(), "reading device state");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "device has never connected");
    return Read(*st);
  }

  Expected<std::vector<DeviceState>> List() override {
    std::lock_guard lock(mu_);
    const std::string sql =
        std::string("SELECT ") + kColumns + " FROM device_state ORDER BY device_id";
    auto st = conn_->Prepare(sql.c_str(), "listing device state");
    if (!st) return MakeError(st.error());
    std::vector<DeviceState> out;
    while (true) {
      auto row = st->Step();
      if (!row) return MakeError(row.error());
      if (!*row) break;
      out.push_back(Read(*st));
    }
    return out;
  }

 private:
  Expected<void> SetDocument(const char* column, const std::string& device_id,
                             const std::string& json, TimePoint when, bool seen) {
    std::lock_guard lock(mu_);
    const std::string c(column);
    // `column` is one of two constants, never input.
    const std::string sql =
        "INSERT INTO device_state(device_id, " + c + ", " + c +
        "_us, last_seen_us) "
        "VALUES(?1, ?2, ?3, CASE WHEN ?4 THEN ?3 END) ON CONFLICT(device_id) DO UPDATE SET " +
        c + " = ?2, " + c + "_us = ?3,\n" +
        "last_seen_us = CASE WHEN ?4 THEN MAX(COALESCE(last_seen_us, 0), ?3) ELSE last_seen_us END";
    auto st = conn_->Prepare(sql.c_str(), "storing device " + c);
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id).Bind(2, json).BindTime(3, when).Bind(4, int64_t{seen});
    return st->Run();
  }

  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
};

}  // namespace

std::unique_ptr<DeviceStateRepo> MakeDeviceStateRepo(std::mutex& mu,
                                                     std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteDeviceStateRepo>(mu, conn);
}

}  // namespace torwart::storage::sqlite
