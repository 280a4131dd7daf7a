#include "platform/sqlite/recording_repo.hpp"

#include <algorithm>
#include <string>

namespace torwart::storage::sqlite {
namespace {

constexpr char kColumns[] =
    "id, device_id, user_name, grant_id, site, target, protocol, size, sha256, uploaded_us, "
    "started_us, status, problem, cert_serial";

Expected<StoredRecording> Read(const Statement& st) {
  StoredRecording r;
  r.id = st.Text(0);
  r.device_id = st.Text(1);
  r.user = st.Text(2);
  r.grant_id = st.Text(3);
  r.site = st.Text(4);
  r.target = st.Text(5);
  r.protocol = st.Text(6);
  r.size = st.Int(7);
  r.sha256 = st.Text(8);
  r.uploaded = st.Time(9);
  r.started = st.OptionalTime(10);
  r.status = st.Text(11);
  r.problem = st.Text(12);
  r.cert_serial = st.Text(13);
  return r;
}

class SqliteRecordingRepo final : public RecordingRepo {
 public:
  SqliteRecordingRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<void> Insert(const StoredRecording& r) override {
    std::lock_guard lock(mu_);
    const std::string sql = std::string("INSERT INTO recordings(") + kColumns +
                            ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    auto st = conn_->Prepare(sql.c_str(), "storing recording");
    if (!st) return MakeError(st.error());
    st->Bind(1, r.id).Bind(2, r.device_id).Bind(3, r.user).Bind(4, r.grant_id).Bind(5, r.site);
    st->Bind(6, r.target).Bind(7, r.protocol).Bind(8, r.size).Bind(9, r.sha256);
    st->BindTime(10, r.uploaded).BindTime(11, r.started).Bind(12, r.status).Bind(13, r.problem);
    st->Bind(14, r.cert_serial);
    auto ok = st->Run();
    if (!ok && ok.error().Is(Errc::kAlreadyExists)) {
      return MakeError(Errc::kAlreadyExists, "recording " + r.id + " exists");
    }
    return ok;
  }

  Expected<StoredRecording> Get(const std::string& id) override {
    std::lock_guard lock(mu_);
    const std::string sql = std::string("SELECT ") + kColumns + " FROM recordings WHERE id = ?";
    auto st = conn_->Prepare(sql.c_str(), "reading recording");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no recording " + id);
    return Read(*st);
  }

  Expected<std::vector<StoredRecording>> List(const std::string& user, int limit) override {
    std::lock_guard lock(mu_);
    const std::string sql = std::string("SELECT ") + kColumns +
                            " FROM recordings WHERE (?1 = '' OR user_name = ?1) "
                            "ORDER BY uploaded_us DESC, id LIMIT ?2";
    auto st = conn_->Prepare(sql.c_str(), "listing recordings");
    if (!st) return MakeError(st.error());
    st->Bind(1, user).Bind(2, int64_t{std::max(limit, 1)});
    return ReadAll<StoredRecording>(*st, Read);
  }

  Expected<void> Delete(const std::string& id) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare("DELETE FROM recordings WHERE id = ?", "deleting recording");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    if (auto ok = st->Run(); !ok) return ok;
    if (conn_->Changes() == 0) return MakeError(Errc::kNotFound, "no recording " + id);
    return {};
  }

 private:
  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
};

}  // namespace

std::unique_ptr<RecordingRepo> MakeRecordingRepo(std::mutex& mu,
                                                 std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteRecordingRepo>(mu, conn);
}

}  // namespace torwart::storage::sqlite
