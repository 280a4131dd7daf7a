// The hash chain is computed here, inside the append transaction: the head (seq, hash) is read
// under the write lock, so concurrent processes cannot fork the chain.
#include "platform/sqlite/audit_store.hpp"

#include <string>
#include <utility>
#include <vector>

namespace torwart::storage::sqlite {
namespace {

constexpr const char* kColumns =
    "seq, time_us, actor_type, actor, organisation, source, category, type, target, result, "
    "reason, details, schema, content_hash, hash, purged";

Expected<audit::Record> ReadRecord(const Statement& st) {
  audit::Record r;
  audit::Event& e = r.event;
  e.seq = st.Int(0);
  e.time = st.Time(1);
  auto actor_type = audit::ActorTypeFromString(st.Text(2));
  auto result = audit::ResultFromString(st.Text(9));
  // A record with unreadable enum text still goes to the verifier: its hash will not match.
  e.actor_type = actor_type.value_or(audit::ActorType::kAnonymous);
  e.result = result.value_or(audit::Result::kFailure);
  e.actor = st.Text(3);
  e.organisation = st.Text(4);
  e.source = st.Text(5);
  e.category = st.Text(6);
  e.type = st.Text(7);
  e.target = st.Text(8);
  e.reason = st.Text(10);
  e.details = st.Text(11);
  e.schema = static_cast<int>(st.Int(12));
  r.content_hash = st.Text(13);
  e.hash = st.Text(14);
  r.purged = st.Int(15) != 0;
  if (!actor_type || !result) r.content_hash = "unreadable:" + r.content_hash;
  return r;
}


Expected<AuditHold> ReadHold(const Statement& st) {
  AuditHold h;
  h.id = st.Int(0);
  h.category = st.Text(1);
  h.target = st.Text(2);
  h.since = st.OptionalTime(3);
  h.until = st.OptionalTime(4);
  h.reason = st.Text(5);
  h.created_by = st.Text(6);
  h.created = st.Time(7);
  return h;
}

class SqliteAuditStore final : public AuditStore {
 public:
  SqliteAuditStore(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<void> Append(audit::Event e) override {
    std::vector<audit::Event> one;
    one.push_back(std::move(e));
    return AppendBatch(one);
  }

  Expected<void> AppendBatch(std::vector<audit::Event>& events) override {
    if (events.empty()) return {};
    std::lock_guard lock(mu_);
    auto r = InTransaction(*conn_, "appending audit records", [&]() -> Expected<void> {
      if (auto sealed = SealLegacyLocked(); !sealed) return sealed;
      auto head = HeadLocked();
      if (!head) return MakeError(head.error());
      auto [seq, prev] = std::move(*head);
      for (audit::Event& e : events) {
        e.seq = ++seq;
        e.schema = audit::kSchemaVersion;
        // Stored with microsecond precision: hash exactly what is stored.
        e.time = FromMicros(ToMicros(e.time));
        if (e.details.empty()) e.details = "{}";
        std::string content = audit::ContentHash(e);
        e.hash = audit::ChainHash(prev, content);
        if (auto ok = Insert(e, content); !ok) return ok;
        prev = e.hash;
      }
      return {};
    });
    if (!r) sealed_ = false;  // a rolled-back seal is redone by the next append
    return r;
  }

  Expected<std::vector<audit::Event>> Find(const audit::Query& q) override {
    if (q.limit <= 0) return MakeError(Errc::kInvalidArgument, "audit query: limit must be > 0");
    // One constant statement; unset filters are bound as NULL or '' and match everything.
    // Same semantics as audit::MemorySink. Purged records are not returned.
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "SELECT seq, time_us, actor_type, actor, organisation, source, category, type, target, "
        "result, reason, details, schema, content_hash, hash, purged"
        " FROM audit WHERE seq > ?1 AND purged = 0"
        " AND (?2 IS NULL OR time_us >= ?2) AND (?3 IS NULL OR time_us < ?3)"
        " AND (?4 = '' OR actor = ?4) AND (?5 = '' OR target = ?5)"
        " AND (?6 = '' OR substr(type, 1, length(?6)) = ?6) AND (?7 = '' OR category = ?7)"
        " ORDER BY seq LIMIT ?8",
        "querying audit records");
    if (!st) return MakeError(st.error());
    st->Bind(1, q.after_seq).BindTime(2, q.since).BindTime(3, q.until).Bind(4, q.actor);
    st->Bind(5, q.target).Bind(6, q.type_prefix).Bind(7, q.category).Bind(8, int64_t{q.limit});
    auto records = ReadAll<audit::Record>(*st, ReadRecord);
    if (!records) return MakeError(records.error());
    std::vector<audit::Event> out;
    out.reserve(records->size());
    for (audit::Record& r : *records) out.push_back(std::move(r.event));
    return out;
  }

  Expected<std::pair<int64_t, std::string>> Head() override {
    std::lock_guard lock(mu_);
    return HeadLocked();
  }

  Expected<std::vector<audit::Record>> ReadRecords(int64_t after_seq, int limit) override {
    static const std::string kSql =
        std::string("SELECT ") + kColumns + " FROM audit WHERE seq > ? ORDER BY seq LIMIT ?";
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(kSql.c_str(), "reading audit records");
    if (!st) return MakeError(st.error());
    st->Bind(1, after_seq).Bind(2, int64_t{limit});
    return ReadAll<audit::Record>(*st, ReadRecord);
  }

  Expected<void> AddCheckpoint(const audit::Checkpoint& c) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "INSERT INTO audit_checkpoints(seq, time_us, hash, key_id, signature) "
        "VALUES(?, ?, ?, ?, ?) ON CONFLICT(seq) DO NOTHING",
        "storing audit checkpoint");
    if (!st) return MakeError(st.error());
    st->Bind(1, c.seq).BindTime(2, c.time).Bind(3, c.hash).Bind(4, c.key_id).Bind(5, c.signature);
    return st->Run();
  }

  Expected<std::vector<audit::Checkpoint>> Checkpoints() override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "SELECT seq, time_us, hash, key_id, signature FROM audit_checkpoints ORDER BY seq",
        "reading audit checkpoints");
    if (!st) return MakeError(st.error());
    return ReadAll<audit::Checkpoint>(*st, [](const Statement& s) -> Expected<audit::Checkpoint> {
      audit::Checkpoint c;
      c.seq = s.Int(0);
      c.time = s.Time(1);
      c.hash = s.Text(2);
      c.key_id = s.Text(3);
      c.signature = s.Text(4);
      return c;
    });
  }

  Expected<AuditPurgeResult> Purge(const std::string& category, TimePoint before) override {
    std::lock_guard lock(mu_);
    return InTransaction(*conn_, "purging audit records", [&]() -> Expected<AuditPurgeResult> {
      AuditPurgeResult out;
      constexpr const char* kHeld =
          "EXISTS (SELECT 1 FROM audit_holds h WHERE (h.category = '' OR h.category = a.category)"
          " AND (h.target = '' OR h.target = a.target)"
          " AND (h.since_us IS NULL OR a.time_us >= h.since_us)"
          " AND (h.until_us IS NULL OR a.time_us < h.until_us))";
      static const std::string kCount =
          std::string("SELECT COUNT(*), COALESCE(SUM(") + kHeld +
          "), 0), MIN(seq), MAX(seq) FROM audit a WHERE category = ?1 AND time_us < ?2 AND "
          "purged = 0 AND hash <> ''";
      auto count = conn_->Prepare(kCount.c_str(), "counting expired audit records");
      if (!count) return MakeError(count.error());
      count->Bind(1, category).BindTime(2, before);
      auto row = count->Step();
      if (!row) return MakeError(row.error());
      out.held = count->Int(1);
      if (count->Int(0) - out.held == 0) return out;

      if (auto g = conn_->Exec("INSERT INTO audit_purge_gate(open) VALUES(1)", "opening purge");
          !g) {
        return MakeError(g.error());
      }
      static const std::string kBlank =
          std::string(
              "UPDATE audit AS a SET actor = '', organisation = '', source = '', type = '', "
              "target = '', reason = '', details = '', purged = 1 "
              "WHERE category = ?1 AND time_us < ?2 AND purged = 0 AND hash <> '' AND NOT ") +
          kHeld + " RETURNING seq";
      auto st = conn_->Prepare(kBlank.c_str(), "purging audit records");
      if (!st) return MakeError(st.error());
      st->Bind(1, category).BindTime(2, before);
      while (true) {
        auto r = st->Step();
        if (!r) return MakeError(r.error());
        if (!*r) break;
        int64_t seq = st->Int(0);
        if (out.count == 0 || seq < out.first_seq) out.first_seq = seq;
        if (seq > out.last_seq) out.last_seq = seq;
        ++out.count;
      }
      if (auto g = conn_->Exec("DELETE FROM audit_purge_gate", "closing purge"); !g) {
        return MakeError(g.error());
      }
      return out;
    });
  }

  Expected<int64_t> AddHold(const AuditHold& h) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "INSERT INTO audit_holds(category, target, since_us, until_us, reason, created_by, "
        "created_us) VALUES(?, ?, ?, ?, ?, ?, ?) RETURNING id",
        "adding legal hold");
    if (!st) return MakeError(st.error());
    st->Bind(1, h.category).Bind(2, h.target).BindTime(3, h.since).BindTime(4, h.until);
    st->Bind(5, h.reason).Bind(6, h.created_by).BindTime(7, h.created);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kInternal, "adding legal hold: no id returned");
    int64_t id = st->Int(0);
    if (auto done = st->Run(); !done) return MakeError(done.error());
    return id;
  }

  Expected<void> RemoveHold(int64_t id) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare("DELETE FROM audit_holds WHERE id = ?", "removing legal hold");
    if (!st) return MakeError(st.error());
    st->Bind(1, id);
    if (auto ok = st->Run(); !ok) return ok;
    if (conn_->Changes() == 0) {
      return MakeError(Errc::kNotFound, "no legal hold with id " + std::to_string(id));
    }
    return {};
  }

  Expected<std::vector<AuditHold>> ListHolds() override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "SELECT id, category, target, since_us, until_us, reason, created_by, created_us "
        "FROM audit_holds ORDER BY id",
        "listing legal holds");
    if (!st) return MakeError(st.error());
    return ReadAll<AuditHold>(*st, ReadHold);
  }

  Expected<int64_t> UsedBytes() override {
    std::lock_guard lock(mu_);
    int64_t pages = 0, free_pages = 0, page_size = 0;
    for (auto [sql, out] : {std::pair{"PRAGMA page_count", &pages},
                            std::pair{"PRAGMA freelist_count", &free_pages},
                            std::pair{"PRAGMA page_size", &page_size}}) {
      auto st = conn_->Prepare(sql, "measuring the database");
      if (!st) return MakeError(st.error());
      auto row = st->Step();
      if (!row) return MakeError(row.error());
      *out = *row ? st->Int(0) : 0;
    }
    return (pages - free_pages) * page_size;
  }

  Expected<void> SetMaxBytes(int64_t bytes) override {
    std::lock_guard lock(mu_);
    auto ps = conn_->Prepare("PRAGMA page_size", "reading page size");
    if (!ps) return MakeError(ps.error());
    auto row = ps->Step();
    if (!row) return MakeError(row.error());
    int64_t page_size = *row && ps->Int(0) > 0 ? ps->Int(0) : 4096;
    // PRAGMA arguments cannot be bound; the value is an integer we format ourselves.
    int64_t pages = bytes > 0 ? (bytes + page_size - 1) / page_size : 4294967294;
    std::string sql = "PRAGMA max_page_count = " + std::to_string(pages);
    char* msg = nullptr;
    int rc = sqlite3_exec(conn_->handle(), sql.c_str(), nullptr, nullptr, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK) return MakeError(conn_->LastError("setting the database size cap"));
    return {};
  }

 private:
  Expected<std::pair<int64_t, std::string>> HeadLocked() {
    auto st = conn_->Prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                             "reading audit chain head");
    if (!st) return MakeError(st.error());
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return std::make_pair(int64_t{0}, std::string(audit::kGenesisHash));
    return std::make_pair(st->Int(0), st->Text(1));
  }

  Expected<void> Insert(const audit::Event& e, const std::string& content) {
    // Cached by the connection; the Statement resets it when it goes out of scope.
    auto prepared = conn_->Prepare(
        "INSERT INTO audit(seq, time_us, actor_type, actor, organisation, source, category, "
        "type, target, result, reason, details, schema, content_hash, hash) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "appending audit record");
    if (!prepared) return MakeError(prepared.error());
    Statement& st = *prepared;
    st.Bind(1, e.seq).BindTime(2, e.time).Bind(3, audit::ToString(e.actor_type));
    st.Bind(4, e.actor).Bind(5, e.organisation).Bind(6, e.source).Bind(7, e.category);
    st.Bind(8, e.type).Bind(9, e.target).Bind(10, audit::ToString(e.result)).Bind(11, e.reason);
    st.Bind(12, e.details).Bind(13, int64_t{e.schema}).Bind(14, content).Bind(15, e.hash);
    return st.Run();
  }

  // Records written before the chain existed (migration 2) get their hashes, once, in order.
  Expected<void> SealLegacyLocked() {
    if (sealed_) return {};
    auto first = conn_->Prepare("SELECT MIN(seq) FROM audit WHERE hash = ''", "sealing audit");
    if (!first) return MakeError(first.error());
    auto row = first->Step();
    if (!row) return MakeError(row.error());
    if (!*row || first->IsNull(0)) {
      sealed_ = true;
      return {};
    }
    const int64_t from = first->Int(0);
    std::string prev(audit::kGenesisHash);
    {
      auto p = conn_->Prepare("SELECT hash FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                              "sealing audit");
      if (!p) return MakeError(p.error());
      p->Bind(1, from);
      auto pr = p->Step();
      if (!pr) return MakeError(pr.error());
      if (*pr) prev = p->Text(0);
    }
    static const std::string kSql = std::string("SELECT ") + kColumns +
                                    " FROM audit WHERE seq >= ? ORDER BY seq";
    std::vector<audit::Record> legacy;
    {
      auto st = conn_->Prepare(kSql.c_str(), "sealing audit");
      if (!st) return MakeError(st.error());
      st->Bind(1, from);
      auto all = ReadAll<audit::Record>(*st, ReadRecord);
      if (!all) return MakeError(all.error());
      legacy = std::move(*all);
    }
    for (audit::Record& r : legacy) {
      std::string content = audit::ContentHash(r.event);
      std::string hash = audit::ChainHash(prev, content);
      auto up = conn_->Prepare("UPDATE audit SET content_hash = ?, hash = ? WHERE seq = ?",
                               "sealing audit record");
      if (!up) return MakeError(up.error());
      up->Bind(1, content).Bind(2, hash).Bind(3, r.event.seq);
      if (auto ok = up->Run(); !ok) return ok;
      prev = hash;
    }
    sealed_ = true;
    return {};
  }

  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
  bool sealed_ = false;
};

}  // namespace

std::unique_ptr<AuditStore> MakeAuditStore(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteAuditStore>(mu, conn);
}

}  // namespace torwart::storage::sqlite
