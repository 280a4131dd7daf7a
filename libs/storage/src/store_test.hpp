// The backend-independent storage test suite: every Store backend instantiates StoreTest with
// a StoreBackend (see platform/sqlite/sqlite_store_test.cpp). Test-only; not thread-safe itself.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "torwart/storage/store.hpp"

namespace torwart::storage::testing {

struct StoreBackend {
  std::string name;  // a gtest parameter name: letters, digits, underscores
  // Creates an empty database for one test and returns where it is (a file path, a DSN).
  std::function<std::string()> create;
  // Removes what `create` made.
  std::function<void(const std::string& location)> destroy;
  // Opens a store on `location`; several stores may be open on one location at once.
  std::function<Expected<std::unique_ptr<Store>>(const std::string& location)> open;
  // Runs SQL on its own connection, bypassing the repositories (to check what the database
  // itself refuses). Returns column 0 of each row as text.
  std::function<Expected<std::vector<std::string>>(const std::string& location,
                                                   const std::string& sql)>
      raw_sql;
};

class StoreTest : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A new store on this test's database.
  std::unique_ptr<Store> Open();
  Expected<std::vector<std::string>> RawSql(const std::string& sql);

  const StoreBackend& backend() const { return GetParam(); }
  Store& store() { return *store_; }

  std::string location_;
  std::unique_ptr<Store> store_;
};

// gtest prints parameters in failure messages; the name is what matters.
inline void PrintTo(const StoreBackend& backend, std::ostream* os) { *os << backend.name; }

inline std::string BackendName(const ::testing::TestParamInfo<StoreBackend>& info) {
  return info.param.name;
}

}  // namespace torwart::storage::testing
