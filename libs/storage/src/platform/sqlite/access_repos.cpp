#include "platform/sqlite/access_repos.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace torwart::storage::sqlite {
namespace {

using nlohmann::json;

struct Locked {
  std::mutex& mu;
  std::unique_ptr<Connection>& conn;
};


// --- policy versions ---

constexpr char kPolicyColumns[] = "version, text, author, created_us, active, comment";

Expected<PolicyVersion> ReadPolicy(const Statement& st) {
  PolicyVersion v;
  v.version = st.Int(0);
  v.text = st.Text(1);
  v.author = st.Text(2);
  v.created = st.Time(3);
  v.active = st.Int(4) != 0;
  v.comment = st.Text(5);
  return v;
}

class SqlitePolicyRepo final : public PolicyRepo {
 public:
  explicit SqlitePolicyRepo(Locked db) : db_(db) {}

  Expected<int64_t> Add(const PolicyVersion& v, bool activate) override {
    std::lock_guard lock(db_.mu);
    Connection& c = *db_.conn;
    return InTransaction(c, "storing policy version", [&]() -> Expected<int64_t> {
      auto next = c.Prepare("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions",
                            "numbering policy version");
      if (!next) return MakeError(next.error());
      auto row = next->Step();
      if (!row) return MakeError(row.error());
      int64_t number = next->Int(0);
      if (activate) {
        auto off = c.Prepare("UPDATE policy_versions SET active = 0 WHERE active = 1",
                             "deactivating policy");
        if (!off) return MakeError(off.error());
        if (auto r = off->Run(); !r) return MakeError(r.error());
      }
      auto ins = c.Prepare(
          "INSERT INTO policy_versions(version, text, author, created_us, active, comment) "
          "VALUES(?, ?, ?, ?, ?, ?)",
          "storing policy version");
      if (!ins) return MakeError(ins.error());
      ins->Bind(1, number).Bind(2, v.text).Bind(3, v.author).BindTime(4, v.created);
      ins->Bind(5, int64_t{activate}).Bind(6, v.comment);
      if (auto r = ins->Run(); !r) return MakeError(r.error());
      return number;
    });
  }

  Expected<std::optional<PolicyVersion>> Active() override {
    std::lock_guard lock(db_.mu);
    static const std::string kSql =
        std::string("SELECT ") + kPolicyColumns + " FROM policy_versions WHERE active = 1";
    auto st = db_.conn->Prepare(kSql.c_str(), "reading active policy");
    if (!st) return MakeError(st.error());
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return std::optional<PolicyVersion>();
    auto v = ReadPolicy(*st);
    if (!v) return MakeError(v.error());
    return std::optional<PolicyVersion>(std::move(*v));
  }

  Expected<PolicyVersion> Get(int64_t version) override {
    std::lock_guard lock(db_.mu);
    static const std::string kSql =
        std::string("SELECT ") + kPolicyColumns + " FROM policy_versions WHERE version = ?";
    auto st = db_.conn->Prepare(kSql.c_str(), "reading policy version");
    if (!st) return MakeError(st.error());
    st->Bind(1, version);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) {
      return MakeError(Errc::kNotFound, "no policy version " + std::to_string(version));
    }
    return ReadPolicy(*st);
  }

  Expected<std::vector<PolicyVersion>> List() override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "SELECT version, '', author, created_us, active, comment FROM policy_versions "
        "ORDER BY version DESC",
        "listing policy versions");
    if (!st) return MakeError(st.error());
    return ReadAll<PolicyVersion>(*st, ReadPolicy);
  }

 private:
  Locked db_;
};

// --- access requests ---

constexpr char kAccessColumns[] =
    "id, requester, site, target, scope, scopes, reason, duration_s, break_glass, status, "
    "rule_id, policy_version, approvals_required, approver_group, on_site_consent, "
    "review_group, approvals, created_us, starts_us, ends_us, decided_by, decision_reason, "
    "decided_us, reviewed_by, review_comment, reviewed_us, revision";

std::string ApprovalsJson(const std::vector<AccessApproval>& list) {
  json a = json::array();
  for (const auto& x : list) {
    json j{{"approver", x.approver}, {"at_us", ToMicros(x.at)}, {"comment", x.comment}};
    if (x.shorten) j["shorten_s"] = x.shorten->count();
    a.push_back(std::move(j));
  }
  return a.dump();
}

Expected<AccessRequest> ReadAccess(const Statement& st) {
  AccessRequest r;
  r.id = st.Text(0);
  r.requester = st.Text(1);
  r.site = st.Text(2);
  r.target = st.Text(3);
  r.scope = st.Text(4);
  auto scopes = json::parse(st.Text(5), nullptr, false);
  auto approvals = json::parse(st.Text(16), nullptr, false);
  if (!scopes.is_array() || !approvals.is_array()) {
    return MakeError(Errc::kParse, "reading access request " + r.id + ": corrupt list column");
  }
  for (auto& s : scopes) {
    if (!s.is_string()) return MakeError(Errc::kParse, "access request " + r.id + ": bad scope");
    r.scopes.push_back(s.get<std::string>());
  }
  for (auto& a : approvals) {
    if (!a.is_object() || !a.contains("approver") || !a["approver"].is_string() ||
        !a.contains("at_us") || !a["at_us"].is_number_integer()) {
      return MakeError(Errc::kParse, "access request " + r.id + ": bad approval");
    }
    AccessApproval x;
    x.approver = a["approver"].get<std::string>();
    x.at = FromMicros(a["at_us"].get<int64_t>());
    if (a.contains("comment") && a["comment"].is_string()) x.comment = a["comment"];
    if (a.contains("shorten_s") && a["shorten_s"].is_number_integer()) {
      x.shorten = std::chrono::seconds(a["shorten_s"].get<int64_t>());
    }
    r.approvals.push_back(std::move(x));
  }
  r.reason = st.Text(6);
  r.duration = std::chrono::seconds(st.Int(7));
  r.break_glass = st.Int(8) != 0;
  r.status = st.Text(9);
  r.rule_id = st.Text(10);
  r.policy_version = st.Int(11);
  r.approvals_required = static_cast<int>(st.Int(12));
  r.approver_group = st.Text(13);
  r.on_site_consent = st.Int(14) != 0;
  r.review_group = st.Text(15);
  r.created = st.Time(17);
  r.starts = st.OptionalTime(18);
  r.ends = st.OptionalTime(19);
  r.decided_by = st.Text(20);
  r.decision_reason = st.Text(21);
  r.decided_at = st.OptionalTime(22);
  r.reviewed_by = st.Text(23);
  r.review_comment = st.Text(24);
  r.reviewed_at = st.OptionalTime(25);
  r.revision = st.Int(26);
  return r;
}

// Binds every column but id/revision in kAccessColumns order, starting at parameter 2.
void BindAccess(Statement& st, const AccessRequest& r) {
  json scopes = r.scopes;
  st.Bind(2, r.requester).Bind(3, r.site).Bind(4, r.target).Bind(5, r.scope);
  st.Bind(6, scopes.dump()).Bind(7, r.reason).Bind(8, int64_t{r.duration.count()});
  st.Bind(9, int64_t{r.break_glass}).Bind(10, r.status).Bind(11, r.rule_id);
  st.Bind(12, r.policy_version).Bind(13, int64_t{r.approvals_required});
  st.Bind(14, r.approver_group).Bind(15, int64_t{r.on_site_consent}).Bind(16, r.review_group);
  st.Bind(17, ApprovalsJson(r.approvals)).BindTime(18, r.created).BindTime(19, r.starts);
  st.BindTime(20, r.ends).Bind(21, r.decided_by).Bind(22, r.decision_reason);
  st.BindTime(23, r.decided_at).Bind(24, r.reviewed_by).Bind(25, r.review_comment);
  st.BindTime(26, r.reviewed_at);
}

class SqliteAccessRepo final : public AccessRepo {
 public:
  explicit SqliteAccessRepo(Locked db) : db_(db) {}

  Expected<void> Create(const AccessRequest& r) override {
    static const std::string kSql =
        std::string("INSERT INTO access_requests(") + kAccessColumns +
        ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
        "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, 0)";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "storing access request");
    if (!st) return MakeError(st.error());
    st->Bind(1, r.id);
    BindAccess(*st, r);
    return st->Run();
  }

  Expected<AccessRequest> Get(const std::string& id) override {
    static const std::string kSql =
        std::string("SELECT ") + kAccessColumns + " FROM access_requests WHERE id = ?";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading access request");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no access request '" + id + "'");
    return ReadAccess(*st);
  }

  Expected<void> Update(const AccessRequest& r) override {
    static const std::string kSql =
        "UPDATE access_requests SET requester = ?2, site = ?3, target = ?4, scope = ?5, "
        "scopes = ?6, reason = ?7, duration_s = ?8, break_glass = ?9, status = ?10, "
        "rule_id = ?11, policy_version = ?12, approvals_required = ?13, approver_group = ?14, "
        "on_site_consent = ?15, review_group = ?16, approvals = ?17, created_us = ?18, "
        "starts_us = ?19, ends_us = ?20, decided_by = ?21, decision_reason = ?22, "
        "decided_us = ?23, reviewed_by = ?24, review_comment = ?25, reviewed_us = ?26, "
        "revision = revision + 1 WHERE id = ?1 AND revision = ?27";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "updating access request");
    if (!st) return MakeError(st.error());
    st->Bind(1, r.id);
    BindAccess(*st, r);
    st->Bind(27, r.revision);
    if (auto ok = st->Run(); !ok) return ok;
    if (db_.conn->Changes() == 0) {
      return MakeError(Errc::kFailedPrecondition,
                       "access request '" + r.id + "' was changed meanwhile or does not exist; "
                       "try again");
    }
    return {};
  }

  Expected<std::vector<AccessRequest>> List(const std::string& requester,
                                            const std::string& status, int limit) override {
    static const std::string kSql =
        std::string("SELECT ") + kAccessColumns +
        " FROM access_requests WHERE (?1 = '' OR requester = ?1) AND (?2 = '' OR status = ?2)"
        " ORDER BY created_us DESC, id LIMIT ?3";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing access requests");
    if (!st) return MakeError(st.error());
    st->Bind(1, requester).Bind(2, status).Bind(3, int64_t{limit});
    return ReadAll<AccessRequest>(*st, ReadAccess);
  }

 private:
  Locked db_;
};

// --- webhook outbox ---

constexpr char kOutboxColumns[] =
    "id, url, event, body, attempts, created_us, next_attempt_us, status, last_error";

Expected<OutboxItem> ReadOutbox(const Statement& st) {
  OutboxItem o;
  o.id = st.Int(0);
  o.url = st.Text(1);
  o.event = st.Text(2);
  o.body = st.Text(3);
  o.attempts = static_cast<int>(st.Int(4));
  o.created = st.Time(5);
  o.next_attempt = st.Time(6);
  o.status = st.Text(7);
  o.last_error = st.Text(8);
  return o;
}

class SqliteOutboxRepo final : public OutboxRepo {
 public:
  explicit SqliteOutboxRepo(Locked db) : db_(db) {}

  Expected<int64_t> Enqueue(const OutboxItem& o) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "INSERT INTO webhook_outbox(url, event, body, attempts, created_us, next_attempt_us, "
        "status, last_error) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
        "queueing webhook");
    if (!st) return MakeError(st.error());
    st->Bind(1, o.url).Bind(2, o.event).Bind(3, o.body).Bind(4, int64_t{o.attempts});
    st->BindTime(5, o.created).BindTime(6, o.next_attempt).Bind(7, o.status);
    st->Bind(8, o.last_error);
    if (auto r = st->Run(); !r) return MakeError(r.error());
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db_.conn->handle()));
  }

  Expected<std::vector<OutboxItem>> Due(TimePoint now, int limit) override {
    static const std::string kSql =
        std::string("SELECT ") + kOutboxColumns +
        " FROM webhook_outbox WHERE status = 'pending' AND next_attempt_us <= ?"
        " ORDER BY id LIMIT ?";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "reading due webhooks");
    if (!st) return MakeError(st.error());
    st->BindTime(1, now).Bind(2, int64_t{limit});
    return ReadAll<OutboxItem>(*st, ReadOutbox);
  }

  Expected<void> Record(const OutboxItem& o) override {
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(
        "UPDATE webhook_outbox SET attempts = ?2, next_attempt_us = ?3, status = ?4, "
        "last_error = ?5 WHERE id = ?1",
        "recording webhook attempt");
    if (!st) return MakeError(st.error());
    st->Bind(1, o.id).Bind(2, int64_t{o.attempts}).BindTime(3, o.next_attempt);
    st->Bind(4, o.status).Bind(5, o.last_error);
    if (auto r = st->Run(); !r) return r;
    if (db_.conn->Changes() == 0) {
      return MakeError(Errc::kNotFound, "no webhook delivery " + std::to_string(o.id));
    }
    return {};
  }

  Expected<std::vector<OutboxItem>> List(int limit) override {
    static const std::string kSql = std::string("SELECT ") + kOutboxColumns +
                                    " FROM webhook_outbox ORDER BY id DESC LIMIT ?";
    std::lock_guard lock(db_.mu);
    auto st = db_.conn->Prepare(kSql.c_str(), "listing webhooks");
    if (!st) return MakeError(st.error());
    st->Bind(1, int64_t{limit});
    return ReadAll<OutboxItem>(*st, ReadOutbox);
  }

 private:
  Locked db_;
};

}  // namespace

std::unique_ptr<PolicyRepo> MakePolicyRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqlitePolicyRepo>(Locked{mu, conn});
}
std::unique_ptr<AccessRepo> MakeAccessRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteAccessRepo>(Locked{mu, conn});
}
std::unique_ptr<OutboxRepo> MakeOutboxRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteOutboxRepo>(Locked{mu, conn});
}

}  // namespace torwart::storage::sqlite
