#include "platform/sqlite/report_repo.hpp"
#include "platform/sqlite/tunnel_repo.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace torwart::storage::sqlite {
namespace {

Expected<TunnelSession> ReadSession(const Statement& st) { return ReadTunnelSession(st); }

class SqliteReportRepo final : public ReportRepo {
 public:
  SqliteReportRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<std::vector<TunnelSession>> Sessions(const SessionRange& r) override {
    if (r.limit <= 0) return MakeError(Errc::kInvalidArgument, "limit must be positive");
    constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    std::lock_guard lock(mu_);
    // (opened_us, id) > (?5, ?6) pages in the ORDER BY; the opened_us index bounds the range.
    const std::string sql =
        std::string("SELECT ") + kTunnelSessionColumns +
        " FROM tunnel_sessions "
        "WHERE opened_us >= ?1 AND opened_us < ?2 AND (?3 = '' OR site = ?3) "
        "AND (?4 = '' OR user_name = ?4) "
        "AND (?7 = 0 OR opened_us > ?5 OR (opened_us = ?5 AND id > ?6)) "
        "ORDER BY opened_us, id LIMIT ?8";
    auto st = conn_->Prepare(sql.c_str(), "reading tunnel sessions for a report");
    if (!st) return MakeError(st.error());
    st->Bind(1, r.from ? ToMicros(*r.from) : kMin).Bind(2, r.until ? ToMicros(*r.until) : kMax);
    st->Bind(3, r.site).Bind(4, r.user);
    st->Bind(5, r.after ? ToMicros(r.after->first) : int64_t{0});
    st->Bind(6, r.after ? std::string_view(r.after->second) : std::string_view());
    st->Bind(7, int64_t{r.after.has_value()}).Bind(8, int64_t{r.limit});
    return ReadAll<TunnelSession>(*st, ReadSession);
  }

  Expected<std::vector<std::string>> AccessRequestIds(const std::string& site, TimePoint from,
                                                      TimePoint until, int limit) override {
    if (limit <= 0) return MakeError(Errc::kInvalidArgument, "limit must be positive");
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "SELECT id FROM access_requests WHERE created_us >= ?1 AND created_us < ?2 "
        "AND (?3 = '' OR site = ?3) ORDER BY created_us, id LIMIT ?4",
        "reading access requests for a report");
    if (!st) return MakeError(st.error());
    st->BindTime(1, from).BindTime(2, until).Bind(3, site).Bind(4, int64_t{limit});
    return ReadAll<std::string>(
        *st, [](const Statement& s) -> Expected<std::string> { return s.Text(0); });
  }

 private:
  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
};

}  // namespace

std::unique_ptr<ReportRepo> MakeReportRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteReportRepo>(mu, conn);
}

}  // namespace torwart::storage::sqlite
