#include "platform/sqlite/tunnel_repo.hpp"

#include <string>

namespace torwart::storage::sqlite {
const char kTunnelSessionColumns[] =
    "id, grant_id, user_name, device_id, site, target, client, opened_us, closed_us, bytes_up, "
    "bytes_down, end_reason";

TunnelSession ReadTunnelSession(const Statement& st) {
  TunnelSession s;
  s.id = st.Text(0);
  s.grant_id = st.Text(1);
  s.user = st.Text(2);
  s.device_id = st.Text(3);
  s.site = st.Text(4);
  s.target = st.Text(5);
  s.client = st.Text(6);
  s.opened = st.Time(7);
  s.closed = st.OptionalTime(8);
  s.bytes_up = st.Int(9);
  s.bytes_down = st.Int(10);
  s.end_reason = st.Text(11);
  return s;
}

namespace {

constexpr const char* kColumns = kTunnelSessionColumns;

constexpr char kQuarantineColumns[] = "device_id, quarantined, reason, by_user, since_us, synced";

DeviceQuarantine ReadQuarantine(const Statement& st) {
  DeviceQuarantine q;
  q.device_id = st.Text(0);
  q.on = st.Int(1) != 0;
  q.reason = st.Text(2);
  q.by = st.Text(3);
  q.since = st.Time(4);
  q.synced = st.Int(5) != 0;
  return q;
}

class SqliteTunnelRepo final : public TunnelRepo {
 public:
  SqliteTunnelRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<void> Open(const TunnelSession& s) override {
    std::lock_guard lock(mu_);
    const std::string sql = std::string("INSERT INTO tunnel_sessions(") + kColumns +
                            ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    auto st = conn_->Prepare(sql.c_str(), "storing tunnel session");
    if (!st) return MakeError(st.error());
    st->Bind(1, s.id).Bind(2, s.grant_id).Bind(3, s.user).Bind(4, s.device_id);
    st->Bind(5, s.site).Bind(6, s.target).Bind(7, s.client).BindTime(8, s.opened);
    st->BindTime(9, s.closed).Bind(10, s.bytes_up).Bind(11, s.bytes_down).Bind(12, s.end_reason);
    return st->Run();
  }

  Expected<void> Close(const std::string& id, TimePoint closed, int64_t bytes_up,
                       int64_t bytes_down, const std::string& reason) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "UPDATE tunnel_sessions SET closed_us = ?2, bytes_up = ?3, bytes_down = ?4, "
        "end_reason = ?5 WHERE id = ?1 AND closed_us IS NULL",
        "closing tunnel session");
    if (!st) return MakeError(st.error());
    st->Bind(1, id).BindTime(2, closed).Bind(3, bytes_up).Bind(4, bytes_down).Bind(5, reason);
    if (auto r = st->Run(); !r) return r;
    if (conn_->Changes() > 0) return {};
    auto exists =
        conn_->Prepare("SELECT 1 FROM tunnel_sessions WHERE id = ?", "closing tunnel session");
    if (!exists) return MakeError(exists.error());
    exists->Bind(1, id);
    auto row = exists->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no tunnel session '" + id + "'");
    return MakeError(Errc::kFailedPrecondition, "tunnel session '" + id + "' is already closed");
  }

  Expected<TunnelSession> Get(const std::string& id) override {
    std::lock_guard lock(mu_);
    const std::string sql =
        std::string("SELECT ") + kColumns + " FROM tunnel_sessions WHERE id = ?";
    auto st = conn_->Prepare(sql.c_str(), "reading tunnel session");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no tunnel session '" + id + "'");
    return ReadTunnelSession(*st);
  }

  Expected<std::vector<TunnelSession>> List(const std::string& user, bool live_only,
                                            int limit) override {
    std::lock_guard lock(mu_);
    const std::string sql = std::string("SELECT ") + kColumns +
                            " FROM tunnel_sessions WHERE (?1 = '' OR user_name = ?1) "
                            "AND (?2 = 0 OR closed_us IS NULL) "
                            "ORDER BY opened_us DESC, id DESC LIMIT ?3";
    auto st = conn_->Prepare(sql.c_str(), "listing tunnel sessions");
    if (!st) return MakeError(st.error());
    st->Bind(1, user).Bind(2, int64_t{live_only}).Bind(3, int64_t{limit});
    std::vector<TunnelSession> out;
    while (true) {
      auto row = st->Step();
      if (!row) return MakeError(row.error());
      if (!*row) break;
      out.push_back(ReadTunnelSession(*st));
    }
    return out;
  }

  Expected<int64_t> CloseAllOpen(TimePoint when, const std::string& reason) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "UPDATE tunnel_sessions SET closed_us = ?1, end_reason = ?2 WHERE closed_us IS NULL",
        "closing open tunnel sessions");
    if (!st) return MakeError(st.error());
    st->BindTime(1, when).Bind(2, reason);
    if (auto r = st->Run(); !r) return MakeError(r.error());
    return static_cast<int64_t>(conn_->Changes());
  }

  Expected<void> SetQuarantine(const DeviceQuarantine& q) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "INSERT INTO device_quarantine(device_id, quarantined, reason, by_user, since_us, synced) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(device_id) DO UPDATE SET quarantined = ?2, "
        "reason = ?3, by_user = ?4, since_us = ?5, synced = ?6",
        "storing device quarantine");
    if (!st) return MakeError(st.error());
    st->Bind(1, q.device_id).Bind(2, int64_t{q.on}).Bind(3, q.reason).Bind(4, q.by);
    st->BindTime(5, q.since).Bind(6, int64_t{q.synced});
    return st->Run();
  }

  Expected<std::optional<DeviceQuarantine>> GetQuarantine(const std::string& device_id) override {
    std::lock_guard lock(mu_);
    const std::string sql =
        std::string("SELECT ") + kQuarantineColumns + " FROM device_quarantine WHERE device_id = ?";
    auto st = conn_->Prepare(sql.c_str(), "reading device quarantine");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return std::optional<DeviceQuarantine>();
    return std::optional<DeviceQuarantine>(ReadQuarantine(*st));
  }

  Expected<std::vector<DeviceQuarantine>> ListQuarantines() override {
    std::lock_guard lock(mu_);
    const std::string sql =
        std::string("SELECT ") + kQuarantineColumns + " FROM device_quarantine ORDER BY device_id";
    auto st = conn_->Prepare(sql.c_str(), "listing device quarantines");
    if (!st) return MakeError(st.error());
    return ReadAll<DeviceQuarantine>(
        *st, [](const Statement& r) -> Expected<DeviceQuarantine> { return ReadQuarantine(r); });
  }

  Expected<void> MarkQuarantineSynced(const std::string& device_id, bool on) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "UPDATE device_quarantine SET synced = 1 WHERE device_id = ? AND quarantined = ?",
        "marking device quarantine synced");
    if (!st) return MakeError(st.error());
    st->Bind(1, device_id).Bind(2, int64_t{on});
    return st->Run();
  }

 private:
  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
};

}  // namespace

std::unique_ptr<TunnelRepo> MakeTunnelRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteTunnelRepo>(mu, conn);
}

}  // namespace torwart::storage::sqlite
