#include "torwart/core/config.hpp"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "torwart/core/ids.hpp"

namespace torwart {

struct ConfigReader::Impl {
  std::string source = "(defaults)";
  toml::table root;
  std::map<std::string, toml::source_region> positions;  // every leaf and table key
  std::set<std::string> used;
  std::vector<std::string> errors;

  void Collect(const toml::table& t, const std::string& prefix) {
    for (auto&& [k, v] : t) {
      std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      positions[path] = k.source().begin.line ? k.source() : v.source();
      if (auto* sub = v.as_table()) Collect(*sub, path);
      // Arrays of tables ([[name]]): keys are "name[0].key", read through TableArraySize.
      if (auto* arr = v.as_array(); arr && arr->is_array_of_tables()) {
        for (size_t i = 0; i < arr->size(); ++i) {
          Collect(*arr->get(i)->as_table(), path + "[" + std::to_string(i) + "]");
        }
      }
    }
  }

  std::string Where(const std::string& key) const {
    auto it = positions.find(key);
    std::ostringstream o;
    o << source;
    if (it != positions.end() && it->second.begin.line) {
      o << ":" << it->second.begin.line << ":" << it->second.begin.column;
    }
    return o.str();
  }

  const toml::node* Find(const std::string& key) {
    used.insert(key);
    // Mark parent tables as used too.
    for (size_t p = key.find_first_of(".["); p != std::string::npos;
         p = key.find_first_of(".[", p + 1)) {
      used.insert(key.substr(0, p));
    }
    return root.at_path(key).node();
  }

  void TypeError(const std::string& key, const char* want) {
    errors.push_back(Where(key) + ": key '" + key + "' must be " + want);
  }
};

ConfigReader::ConfigReader() : impl_(std::make_unique<Impl>()) {}
ConfigReader::ConfigReader(ConfigReader&&) noexcept = default;
ConfigReader& ConfigReader::operator=(ConfigReader&&) noexcept = default;
ConfigReader::~ConfigReader() = default;

Expected<ConfigReader> ConfigReader::FromString(std::string_view text, std::string source_name) {
  ConfigReader r;
  r.impl_->source = source_name;
  try {
    r.impl_->root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream o;
    o << source_name << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
      << e.description();
    return MakeError(Errc::kParse, o.str());
  }
  r.impl_->Collect(r.impl_->root, "");
  return r;
}

Expected<ConfigReader> ConfigReader::FromFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return MakeError(Errc::kNotFound, "cannot open config file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().size() > 1 << 20) return MakeError(Errc::kInvalidArgument, path + ": config file larger than 1 MiB");
  return FromString(ss.str(), path);
}

std::string ConfigReader::String(const std::string& key, std::string def) {
  const toml::node* n = impl_->Find(key);
  if (!n) return def;
  if (auto v = n->value<std::string>(); v && n->is_string()) return *v;
  impl_->TypeError(key, "a string");
  return def;
}

int64_t ConfigReader::Int(const std::string& key, int64_t def, int64_t min, int64_t max) {
  const toml::node* n = impl_->Find(key);
  if (!n) return def;
  if (!n->is_integer()) {
    impl_->TypeError(key, "an integer");
    return def;
  }
  int64_t v = *n->value<int64_t>();
  if (v < min || v > max) {
    impl_->errors.push_back(impl_->Where(key) + ": key '" + key + "' = " + std::to_string(v) +
                            " is out of range [" + std::to_string(min) + ", " +
                            std::to_string(max) + "]");
    return def;
  }
  return v;
}

bool ConfigReader::Bool(const std::string& key, bool def) {
  const toml::node* n = impl_->Find(key);
  if (!n) return def;
  if (!n->is_boolean()) {
    impl_->TypeError(key, "true or false");
    return def;
  }
  return *n->value<bool>();
}

std::chrono::seconds ConfigReader::Seconds(const std::string& key, std::chrono::seconds def,
                                           std::chrono::seconds min) {
  const toml::node* n = impl_->Find(key);
  if (!n) return def;
  std::chrono::seconds v;
  if (n->is_integer()) {
    v = std::chrono::seconds(*n->value<int64_t>());
  } else if (n->is_string()) {
    auto d = ParseDuration(*n->value<std::string>());
    if (!d) {
      impl_->errors.push_back(impl_->Where(key) + ": key '" + key + "': " + d.error().message());
      return def;
    }
    v = *d;
  } else {
    impl_->TypeError(key, "a duration like \"30d\" or a number of seconds");
    return def;
  }
  if (v < min) {
    impl_->errors.push_back(impl_->Where(key) + ": key '" + key + "' must be at least " +
                            FormatDuration(min));
    return def;
  }
  return v;
}

std::vector<std::string> ConfigReader::Strings(const std::string& key,
                                               std::vector<std::string> def) {
  const toml::node* n = impl_->Find(key);
  if (!n) return def;
  const toml::array* a = n->as_array();
  if (!a) {
    impl_->TypeError(key, "an array of strings");
    return def;
  }
  std::vector<std::string> out;
  for (auto&& e : *a) {
    if (!e.is_string()) {
      impl_->TypeError(key, "an array of strings");
      return def;
    }
    out.push_back(*e.value<std::string>());
  }
  return out;
}

size_t ConfigReader::TableArraySize(const std::string& key) {
  const toml::node* n = impl_->Find(key);
  if (!n) return 0;
  const toml::array* a = n->as_array();
  if (!a || !a->is_array_of_tables()) {
    impl_->TypeError(key, "an array of tables ([[...]])");
    return 0;
  }
  return a->size();
}

bool ConfigReader::Has(const std::string& key) const {
  return impl_->root.at_path(key).node() != nullptr;
}

void ConfigReader::AddError(const std::string& key, const std::string& message) {
  impl_->errors.push_back(impl_->Where(key) + ": key '" + key + "': " + message);
}

Expected<void> ConfigReader::Finish() {
  std::vector<std::string> all;
  for (auto& [path, pos] : impl_->positions) {
    if (!impl_->used.count(path)) {
      all.push_back(impl_->Where(path) + ": unknown key '" + path + "'");
    }
  }
  all.insert(all.end(), impl_->errors.begin(), impl_->errors.end());
  if (all.empty()) return {};
  std::string msg;
  for (auto& e : all) {
    if (!msg.empty()) msg += "\n";
    msg += e;
  }
  return MakeError(Errc::kInvalidArgument, msg);
}

}  // namespace torwart
