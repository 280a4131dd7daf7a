// Strict TOML configuration reading for composition roots (main). Libraries never read files;
// main reads with ConfigReader and hands each library a typed settings struct.
// Every key read is remembered; Finish() reports unknown keys. All errors carry file:line:col.
// Not thread-safe; use from one thread during start-up.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart {

class ConfigReader {
 public:
  // An empty reader: every getter returns its default (running without a config file).
  ConfigReader();
  static Expected<ConfigReader> FromFile(const std::string& path);
  static Expected<ConfigReader> FromString(std::string_view text, std::string source_name);
  ConfigReader(ConfigReader&&) noexcept;
  ConfigReader& operator=(ConfigReader&&) noexcept;
  ~ConfigReader();

  // `key` is a dotted path like "server.listen". Wrong types and invalid values are recorded as
  // errors and the default is returned.
  std::string String(const std::string& key, std::string def);
  int64_t Int(const std::string& key, int64_t def, int64_t min, int64_t max);
  bool Bool(const std::string& key, bool def);
  // A string like "30d", "90s", or an integer number of seconds.
  std::chrono::seconds Seconds(const std::string& key, std::chrono::seconds def,
                               std::chrono::seconds min);
  std::vector<std::string> Strings(const std::string& key, std::vector<std::string> def);
  // Number of tables in an array of tables (`[[key]]`), 0 if absent. Read the members of table
  // i with keys like "key[i].member"; unknown members are reported by Finish().
  size_t TableArraySize(const std::string& key);
  bool Has(const std::string& key) const;

  // Records a custom validation error at the position of `key` (or the file if absent).
  void AddError(const std::string& key, const std::string& message);
  // Reports unknown keys and all recorded errors, one per line, or success.
  Expected<void> Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torwart
