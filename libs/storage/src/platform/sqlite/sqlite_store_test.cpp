// The SQLite backend: the shared StoreTest suite over database files, plus what only SQLite has
// (":memory:", pragmas, result-code mapping, migration mechanics).
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "platform/sqlite/connection.hpp"
#include "platform/sqlite/migrations.hpp"
#include "store_test.hpp"

namespace torwart::storage::sqlite {
namespace {

namespace fs = std::filesystem;
using storage::testing::StoreBackend;
using storage::testing::StoreTest;

// A fresh directory under $TMPDIR, removed by the caller.
std::string MakeTempDir() {
  std::string tmpl = (fs::temp_directory_path() / "torwart-storage-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return {};
  return tmpl;
}

Expected<std::vector<std::string>> RawSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_close_v2(db);
    return MakeError(MakeSqliteError(rc, "raw open", ""));
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  std::vector<std::string> rows;
  char* message = nullptr;
  rc = sqlite3_exec(
      db, sql.c_str(),
      [](void* out, int, char** values, char**) {
        static_cast<std::vector<std::string>*>(out)->push_back(values[0] ? values[0] : "");
        return 0;
      },
      &rows, &message);
  Expected<std::vector<std::string>> result = rows;
  if (rc != SQLITE_OK) {
    result =
        MakeError(MakeSqliteError(sqlite3_extended_errcode(db), "raw sql", message ? message : ""));
  }
  sqlite3_free(message);
  sqlite3_close_v2(db);
  return result;
}

StoreBackend SqliteFileBackend() {
  return StoreBackend{
      .name = "SqliteFile",
      .create = [] { return MakeTempDir() + "/torwart.db"; },
      .destroy =
          [](const std::string& location) {
            std::error_code ec;
            fs::remove_all(fs::path(location).parent_path(), ec);
          },
      .open = [](const std::string& location) { return OpenSqlite({.path = location}); },
      .raw_sql = RawSql,
  };
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreTest, ::testing::Values(SqliteFileBackend()),
                         storage::testing::BackendName);

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name = "torwart.db") const { return dir_ + "/" + name; }

  std::string dir_;
};

TEST_F(SqliteTest, InMemoryDatabaseIsMigratedAndUsable) {
  auto store = OpenSqlite({.path = ":memory:"});
  ASSERT_TRUE(store) << store.error().String();
  EXPECT_EQ((*store)->schema_version(), static_cast<int>(Migrations().size()));
  Device d{.id = "5f0c6a0e-1a2b-4c3d-8e9f-001122334455",
           .name = "plc-1",
           .site = "",
           .tags = {},
           .status = "registered",
           .machine_fingerprint = "",
           .bind_machine = false,
           .created = FromUnix(1)};
  ASSERT_TRUE((*store)->devices().Create(d));
  EXPECT_EQ((*store)->devices().GetByName("plc-1")->id, d.id);
  ASSERT_TRUE((*store)->audit().Append(audit::Event{}));
  EXPECT_EQ((*store)->audit().Find({})->size(), 1u);
  // Every ":memory:" open is a private database.
  auto other = OpenSqlite({.path = ":memory:"});
  ASSERT_TRUE(other);
  EXPECT_TRUE((*other)->devices().GetByName("plc-1").error().Is(Errc::kNotFound));
}

TEST_F(SqliteTest, ErrorsNameTheOperationAndTheConstraint) {
  auto store = OpenSqlite({.path = Path()});
  ASSERT_TRUE(store) << store.error().String();
  Device d{.id = "a",
           .name = "plc-1",
           .site = "",
           .tags = {},
           .status = "registered",
           .machine_fingerprint = "",
           .bind_machine = false,
           .created = FromUnix(1)};
  ASSERT_TRUE((*store)->devices().Create(d));
  d.id = "b";
  auto dup = (*store)->devices().Create(d);
  ASSERT_FALSE(dup);
  EXPECT_TRUE(dup.error().Is(Errc::kAlreadyExists));
  EXPECT_EQ(dup.error().message(), "inserting device: UNIQUE constraint failed: devices.name");
}

TEST_F(SqliteTest, ConnectionSettings) {
  auto conn = Connection::Open(Path(), 1234);
  ASSERT_TRUE(conn) << conn.error().String();
  auto pragma = [&](const char* sql) -> std::string {
    auto st = (*conn)->Prepare(sql, "test");
    if (!st) return "error: " + st.error().String();
    auto row = st->Step();
    return row && *row ? st->Text(0) : "no row";
  };
  EXPECT_EQ(pragma("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(pragma("PRAGMA synchronous"), "2");  // FULL
  EXPECT_EQ(pragma("PRAGMA foreign_keys"), "1");
  EXPECT_EQ(pragma("PRAGMA busy_timeout"), "1234");
}

TEST_F(SqliteTest, ResultCodesMapToErrc) {
  EXPECT_EQ(MapResultCode(SQLITE_CONSTRAINT_UNIQUE), Errc::kAlreadyExists);
  EXPECT_EQ(MapResultCode(SQLITE_CONSTRAINT_PRIMARYKEY), Errc::kAlreadyExists);
  EXPECT_EQ(MapResultCode(SQLITE_CONSTRAINT_FOREIGNKEY), Errc::kFailedPrecondition);
  EXPECT_EQ(MapResultCode(SQLITE_CONSTRAINT_TRIGGER), Errc::kFailedPrecondition);
  EXPECT_EQ(MapResultCode(SQLITE_CONSTRAINT_NOTNULL), Errc::kInvalidArgument);
  EXPECT_EQ(MapResultCode(SQLITE_FULL), Errc::kResourceExhausted);
  EXPECT_EQ(MapResultCode(SQLITE_IOERR_WRITE), Errc::kIo);
  EXPECT_EQ(MapResultCode(SQLITE_IOERR_FSYNC), Errc::kIo);
  EXPECT_EQ(MapResultCode(SQLITE_READONLY), Errc::kIo);
  EXPECT_EQ(MapResultCode(SQLITE_CORRUPT), Errc::kIo);
  EXPECT_EQ(MapResultCode(SQLITE_NOTADB), Errc::kIo);
  EXPECT_EQ(MapResultCode(SQLITE_BUSY), Errc::kUnavailable);
  EXPECT_EQ(MapResultCode(SQLITE_BUSY_SNAPSHOT), Errc::kUnavailable);
  EXPECT_EQ(MapResultCode(SQLITE_ERROR), Errc::kInternal);
  Error e = MakeSqliteError(SQLITE_FULL, "appending audit record", "database or disk is full");
  EXPECT_EQ(e.message(), "appending audit record: database or disk is full");
}

TEST_F(SqliteTest, FullDatabaseIsResourceExhausted) {
  auto conn = Connection::Open(Path(), 1000);
  ASSERT_TRUE(conn) << conn.error().String();
  ASSERT_TRUE(Migrate(**conn));
  // Cap the file at its current size: the next page allocation fails with SQLITE_FULL.
  ASSERT_TRUE((*conn)->Exec("PRAGMA max_page_count = 1", "test"));  // clamps to page_count
  auto st = (*conn)->Prepare("INSERT INTO kv(key, value) VALUES('big', ?)", "writing kv");
  ASSERT_TRUE(st);
  st->Bind(1, std::string(1 << 20, 'x'));
  auto r = st->Run();
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kResourceExhausted)) << r.error().String();
  EXPECT_TRUE(r.error().message().starts_with("writing kv: ")) << r.error().message();
}

TEST_F(SqliteTest, NotADatabaseIsAnIoError) {
  std::ofstream(Path()) << std::string(8192, 'g');
  auto store = OpenSqlite({.path = Path()});
  ASSERT_FALSE(store);
  EXPECT_TRUE(store.error().Is(Errc::kIo)) << store.error().String();
  EXPECT_NE(store.error().message().find(Path()), std::string::npos) << store.error().message();
}

TEST_F(SqliteTest, MissingDirectoryIsAnIoError) {
  auto store = OpenSqlite({.path = dir_ + "/no/such/dir/torwart.db"});
  ASSERT_FALSE(store);
  EXPECT_TRUE(store.error().Is(Errc::kIo)) << store.error().String();
}

TEST_F(SqliteTest, BadSettingsAreInvalidArguments) {
  EXPECT_TRUE(OpenSqlite({.path = ""}).error().Is(Errc::kInvalidArgument));
  EXPECT_TRUE(
      OpenSqlite({.path = Path(), .busy_timeout_ms = -1}).error().Is(Errc::kInvalidArgument));
}

TEST_F(SqliteTest, MigrationsApplyInOrderAndAreIdempotent) {
  auto conn = Connection::Open(Path(), 1000);
  ASSERT_TRUE(conn);
  auto all = Migrations();
  ASSERT_GE(all.size(), 2u);
  auto v = Migrate(**conn, all.first(1));
  ASSERT_TRUE(v) << v.error().String();
  EXPECT_EQ(*v, 1);
  v = Migrate(**conn);
  ASSERT_TRUE(v) << v.error().String();
  EXPECT_EQ(*v, static_cast<int>(all.size()));
  v = Migrate(**conn);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, static_cast<int>(all.size()));
  auto rows = RawSql(Path(),
                     "SELECT version || ':' || description FROM schema_migrations "
                     "ORDER BY version");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ((*rows)[i], std::to_string(all[i].version) + ":" + all[i].description);
  }
}

TEST_F(SqliteTest, FailedMigrationStepRollsBackCompletely) {
  auto conn = Connection::Open(Path(), 1000);
  ASSERT_TRUE(conn);
  const Migration steps[] = {
      {1, "good", "CREATE TABLE a (x INTEGER) STRICT;"},
      {2, "bad", "CREATE TABLE b (x INTEGER) STRICT; INSERT INTO nowhere VALUES (1);"},
  };
  auto v = Migrate(**conn, steps);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message().find("applying migration 2 (bad)"), std::string::npos)
      << v.error().message();
  auto tables = RawSql(Path(), "SELECT name FROM sqlite_schema WHERE name IN ('a', 'b')");
  ASSERT_TRUE(tables);
  EXPECT_EQ(*tables, (std::vector<std::string>{"a"}));
  EXPECT_EQ(*RawSql(Path(), "SELECT MAX(version) FROM schema_migrations"),
            (std::vector<std::string>{"1"}));
}

TEST_F(SqliteTest, MisnumberedMigrationsAreRejected) {
  auto conn = Connection::Open(Path(), 1000);
  ASSERT_TRUE(conn);
  const Migration steps[] = {{1, "a", "SELECT 1;"}, {3, "c", "SELECT 1;"}};
  auto v = Migrate(**conn, steps);
  ASSERT_FALSE(v);
  EXPECT_TRUE(v.error().Is(Errc::kInternal));
}

TEST_F(SqliteTest, ConcurrentFirstOpensMigrateOnce) {
  constexpr int kThreads = 6;
  std::vector<std::thread> threads;
  std::vector<int> versions(kThreads, -1);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto store = OpenSqlite({.path = Path()});
      ASSERT_TRUE(store) << store.error().String();
      versions[static_cast<size_t>(i)] = (*store)->schema_version();
    });
  }
  for (auto& t : threads) t.join();
  for (int v : versions) EXPECT_EQ(v, static_cast<int>(Migrations().size()));
  auto rows = RawSql(Path(), "SELECT COUNT(*) FROM schema_migrations");
  ASSERT_TRUE(rows);
  EXPECT_EQ(*rows, (std::vector<std::string>{std::to_string(Migrations().size())}));
}

}  // namespace
}  // namespace torwart::storage::sqlite
