// Policy compiler: JSONC tree -> validated, indexed Policy::Impl. Collects every error instead of
// stopping at the first, so an operator fixes a document in one round.
#include <algorithm>
#include <exception>
#include <initializer_list>
#include <map>
#include <set>

#include "jsonc_internal.hpp"
#include "policy_impl.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::policy {
namespace {

constexpr std::chrono::seconds kDefaultMaxDuration{8 * 3600};
constexpr std::chrono::seconds kMaxDurationCap{30 * 86400};
constexpr int kMaxApprovals = 10;
constexpr size_t kMaxNameLength = 128;
// Work budget for the whole-policy checks (shadowed rules, unreachable ports); beyond it those
// checks are skipped rather than letting a huge document stall the compiler.
constexpr uint64_t kAnalysisBudget = 50'000'000;

struct ProtocolInfo {
  std::string_view name;
  std::string_view scopes[2];  // verbs besides "*"; empty slots unused
  bool HasScope(std::string_view verb) const {
    return !verb.empty() && (scopes[0] == verb || scopes[1] == verb);
  }
};
// Only Modbus has a protocol guard (libs/tunnel); other protocols are all-or-nothing for now.
constexpr ProtocolInfo kProtocols[] = {
    {"modbus", {"read", "write"}},
    {"s7", {}},
    {"opcua", {}},
    {"ssh", {}},
    {"rdp", {}},
    {"vnc", {}},
    {"http", {}},
    {"https", {}},
    {"tcp", {}},
};

const ProtocolInfo* FindProtocol(std::string_view name) {
  for (const ProtocolInfo& p : kProtocols) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string ProtocolList() {
  std::string out;
  for (const ProtocolInfo& p : kProtocols) {
    if (!out.empty()) out += ", ";
    out += p.name;
  }
  return out;
}

bool IsName(std::string_view s) {
  if (s.empty() || s.size() > kMaxNameLength) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum) continue;
    if (i > 0 && (c == '-' || c == '_' || c == '.' || c == '@' || c == '+')) continue;
    return false;
  }
  return true;
}

std::string Quote(std::string_view s) {
  std::string out = "'";
  // Keep messages on one line and short even for hostile input.
  size_t n = std::min<size_t>(s.size(), 80);
  for (size_t i = 0; i < n; ++i) {
    char c = s[i];
    out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
  }
  if (s.size() > n) out += "...";
  return out + "'";
}

std::string Join(const std::vector<std::string>& v, std::string_view sep = ", ") {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// "HH:MM" -> minutes; 24:00 only when allow_24.
std::optional<uint16_t> ParseClock(std::string_view s, bool allow_24) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (size_t i : {0u, 1u, 3u, 4u}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  int h = (s[0] - '0') * 10 + (s[1] - '0');
  int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m > 59) return std::nullopt;
  if (h == 24 && m == 0 && allow_24) return static_cast<uint16_t>(1440);
  if (h > 23) return std::nullopt;
  return static_cast<uint16_t>(h * 60 + m);
}

constexpr std::string_view kDayNames[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

int DayIndex(std::string_view s) {
  for (int i = 0; i < 7; ++i) {
    if (kDayNames[i] == s) return i;
  }
  return -1;
}

// Parses "host:port" or "[v6]:port".
bool ParseAddress(std::string_view s, std::string& host, uint16_t& port) {
  size_t colon;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return false;
    }
    host = std::string(s.substr(1, close - 1));
    colon = close + 1;
    if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos) {
      return false;
    }
  } else {
    colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    host = std::string(s.substr(0, colon));
    if (host.find(':') != std::string::npos) return false;  // IPv6 needs brackets
    for (char c : host) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '.' || c == '_';
      if (!ok) return false;
    }
  }
  std::string_view p = s.substr(colon + 1);
  if (p.empty() || p.size() > 5) return false;
  uint32_t v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  port = static_cast<uint16_t>(v);
  return true;
}

std::string SpanText(const WindowSpan& sp) {
  std::string days;
  if (sp.days == 0x7F) {
    days = "daily";
  } else {
    for (int i = 0; i < 7; ++i) {
      int d = (i + 1) % 7;  // list Monday first
      if (sp.days & (1u << d)) {
        if (!days.empty()) days += ",";
        days += kDayNames[d];
      }
    }
  }
  auto clock = [](uint16_t m) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02u:%02u", m / 60u, m % 60u);
    return std::string(buf);
  };
  return days + " " + clock(sp.from) + "-" + clock(sp.to);
}

class Compiler {
 public:
  explicit Compiler(const CompileOptions& options) : options_(options) {}

  CompileResult Run(std::string_view text) {
    CompileResult result;
    Value root;
    detail::JsoncFailure failure;
    if (!detail::ParseJsoncDetailed(text, options_.limits, root, failure)) {
      result.errors.push_back({failure.pos, failure.message});
      parse_code_ = failure.code;
      return result;
    }
    auto impl = std::make_unique<Policy::Impl>();
    p_ = impl.get();
    Document(root);
    if (errors_.empty()) BuildIndexes();
    if (errors_.empty()) Analyze();
    if (!errors_.empty()) {
      SortErrors();
      result.errors = std::move(errors_);
      return result;
    }
    Policy policy(std::move(impl));
    if (options_.run_tests) {
      for (const TestResult& t : RunTests(policy)) {
        if (!t.passed)
          errors_.push_back({t.pos, "test " + std::to_string(t.index + 1) + ": " + t.message});
      }
    }
    if (!errors_.empty()) {
      result.errors = std::move(errors_);
      return result;
    }
    result.policy.emplace(std::move(policy));
    return result;
  }

  Errc parse_code() const { return parse_code_; }

 private:
  void Error(SourcePos pos, std::string msg) {
    // A hostile document could produce millions of errors; a thousand is plenty to act on.
    if (errors_.size() < 1000) errors_.push_back({pos, std::move(msg)});
  }
  void SortErrors() {
    std::stable_sort(errors_.begin(), errors_.end(), [](const Diagnostic& a, const Diagnostic& b) {
      return std::tie(a.pos.line, a.pos.column) < std::tie(b.pos.line, b.pos.column);
    });
  }

  // Reports unknown and duplicate keys; returns false if `v` is not an object.
  bool Object(const Value& v, std::string_view what, std::initializer_list<std::string_view> keys) {
    if (!v.IsObject()) {
      Error(v.pos(), std::string(what) + " must be an object, not " + Value::KindName(v.kind()));
      return false;
    }
    std::set<std::string_view> seen;
    for (const Value::Member& m : v.Members()) {
      if (!seen.insert(m.key).second) {
        Error(m.key_pos, "duplicate key " + Quote(m.key) + " in " + std::string(what));
        continue;
      }
      if (keys.size() == 0) continue;
      if (std::find(keys.begin(), keys.end(), m.key) == keys.end()) {
        std::string allowed;
        for (std::string_view k : keys) {
          if (!allowed.empty()) allowed += ", ";
          allowed += k;
        }
        Error(m.key_pos, "unknown key " + Quote(m.key) + " in " + std::string(what) +
                             " (known: " + allowed + ")");
      }
    }
    return true;
  }

  // A map section: object whose keys are names; checks names and duplicates.
  bool NamedMap(const Value& v, std::string_view what) {
    if (!Object(v, what, {})) return false;
    for (const Value::Member& m : v.Members()) {
      if (!IsName(m.key)) {
        Error(m.key_pos, "invalid name " + Quote(m.key) + " in " + std::string(what) +
                             " (letters, digits and - _ . @ +, at most 128)");
      }
    }
    return true;
  }

  const Value* String(const Value& obj, std::string_view key, std::string_view what,
                      bool required) {
    const Value* v = obj.Find(key);
    if (!v) {
      if (required) Error(obj.pos(), std::string(what) + " needs " + Quote(key));
      return nullptr;
    }
    if (!v->IsString()) {
      Error(v->pos(), std::string(what) + ": " + Quote(key) + " must be a string, not " +
                          Value::KindName(v->kind()));
      return nullptr;
    }
    return v;
  }

  std::optional<bool> Bool(const Value& obj, std::string_view key, std::string_view what) {
    const Value* v = obj.Find(key);
    if (!v) return std::nullopt;
    if (!v->IsBool()) {
      Error(v->pos(), std::string(what) + ": " + Quote(key) + " must be true or false");
      return std::nullopt;
    }
    return v->AsBool();
  }

  // Array of strings (or one string when allow_single). Returns the string values.
  std::vector<const Value*> Strings(const Value& obj, std::string_view key, std::string_view what,
                                    bool required, bool allow_single = false) {
    std::vector<const Value*> out;
    const Value* v = obj.Find(key);
    if (!v) {
      if (required) Error(obj.pos(), std::string(what) + " needs " + Quote(key));
      return out;
    }
    if (allow_single && v->IsString()) {
      out.push_back(v);
      return out;
    }
    if (!v->IsArray()) {
      Error(v->pos(), std::string(what) + ": " + Quote(key) + " must be an array of strings");
      return out;
    }
    for (const Value& item : v->Items()) {
      if (!item.IsString()) {
        Error(item.pos(), std::string(what) + ": " + Quote(key) + " must hold strings, not " +
                              Value::KindName(item.kind()));
        continue;
      }
      out.push_back(&item);
    }
    if (required && v->Items().empty()) {
      Error(v->pos(), std::string(what) + ": " + Quote(key) + " must not be empty");
    }
    return out;
  }

  std::optional<std::chrono::seconds> Duration(const Value& v, std::string_view what) {
    if (!v.IsString() || v.AsString().size() > 32) {
      Error(v.pos(), std::string(what) + " must be a duration string like \"2h\" or \"1h30m\"");
      return std::nullopt;
    }
    Expected<std::chrono::seconds> d = ParseDuration(v.AsString());
    if (!d) {
      Error(v.pos(), std::string(what) + ": " + d.error().message());
      return std::nullopt;
    }
    if (d->count() <= 0 || *d > kMaxDurationCap) {
      Error(v.pos(), std::string(what) + " must be more than 0 and at most 30d");
      return std::nullopt;
    }
    return *d;
  }

  uint32_t InternUser(std::string_view user) {
    if (const uint32_t* id = Lookup(p_->user_index, user)) return *id;
    auto id = static_cast<uint32_t>(p_->user_groups.size());
    p_->user_index.emplace(std::string(user), id);
    p_->user_groups.emplace_back();
    return id;
  }

  static uint32_t Intern(NameIndex& index, std::vector<std::string>& names, std::string_view n) {
    if (const uint32_t* id = Lookup(index, n)) return *id;
    auto id = static_cast<uint32_t>(names.size());
    index.emplace(std::string(n), id);
    names.emplace_back(n);
    return id;
  }

  void Document(const Value& root) {
    if (!Object(root, "the policy",
                {"$schema", "version", "description", "defaults", "groups", "roles", "tags",
                 "sites", "targets", "windows", "rules", "tests"})) {
      return;
    }
    const Value* version = root.Find("version");
    if (!version) {
      Error(root.pos(), "the policy needs \"version\": 1");
    } else if (!version->IsInteger() || version->AsInt() != 1) {
      Error(version->pos(), "unsupported policy version (this server reads version 1)");
    }
    if (const Value* v = root.Find("description"); v && !v->IsString()) {
      Error(v->pos(), "description must be a string");
    }
    if (const Value* v = root.Find("$schema"); v && !v->IsString()) {
      Error(v->pos(), "$schema must be a string");
    }
    if (const Value* d = root.Find("defaults")) Defaults(*d);
    if (const Value* v = root.Find("groups")) Groups(*v);
    if (const Value* v = root.Find("roles")) Described(*v, "roles", p_->role_index, p_->role_names);
    if (const Value* v = root.Find("tags")) Described(*v, "tags", p_->tag_index, p_->tag_names);
    if (const Value* v = root.Find("sites")) Sites(*v);
    if (const Value* v = root.Find("targets")) Targets(*v);
    if (const Value* v = root.Find("windows")) Windows(*v);
    if (const Value* v = root.Find("rules")) {
      Rules(*v);
    } else {
      Error(root.pos(), "the policy has no \"rules\" (without rules everything is denied)");
    }
    if (const Value* v = root.Find("tests")) Tests(*v);
  }

  void Defaults(const Value& v) {
    if (!Object(v, "defaults", {"max_duration"})) return;
    if (const Value* d = v.Find("max_duration")) {
      if (auto s = Duration(*d, "defaults.max_duration")) default_max_duration_ = *s;
    }
  }

  void Groups(const Value& v) {
    if (!NamedMap(v, "groups")) return;
    for (const Value::Member& m : v.Members()) {
      if (Lookup(p_->group_index, m.key)) continue;  // duplicate, reported
      uint32_t gid = Intern(p_->group_index, p_->group_names, m.key);
      p_->group_members.emplace_back();
      if (!m.value.IsArray()) {
        Error(m.value.pos(), "group " + Quote(m.key) +
                                 " must be an array of user names (may be empty when the directory "
                                 "supplies members)");
        continue;
      }
      std::set<std::string> seen;
      for (const Value& u : m.value.Items()) {
        if (!u.IsString() || !IsName(u.AsString())) {
          Error(u.pos(), "group " + Quote(m.key) +
                             ": members are user names like "
                             "\"anna@example.com\"");
          continue;
        }
        if (!seen.insert(u.AsString()).second) {
          Error(u.pos(), "group " + Quote(m.key) + " lists " + Quote(u.AsString()) + " twice");
          continue;
        }
        p_->group_members[gid].push_back(u.AsString());
        p_->user_groups[InternUser(u.AsString())].push_back(gid);
      }
    }
  }

  void Described(const Value& v, std::string_view what, NameIndex& index,
                 std::vector<std::string>& names) {
    if (!NamedMap(v, what)) return;
    for (const Value::Member& m : v.Members()) {
      if (Lookup(index, m.key)) continue;
      Intern(index, names, m.key);
      std::string w = std::string(what) + " " + Quote(m.key);
      if (Object(m.value, w, {"description"})) String(m.value, "description", w, false);
    }
  }

  void Sites(const Value& v) {
    if (!NamedMap(v, "sites")) return;
    for (const Value::Member& m : v.Members()) {
      if (Lookup(p_->site_index, m.key)) continue;
      uint32_t sid = Intern(p_->site_index, p_->site_names, m.key);
      site_tags_.emplace_back();
      site_gateways_.emplace_back();
      std::string w = "site " + Quote(m.key);
      if (!Object(m.value, w, {"description", "tags", "gateways"})) continue;
      String(m.value, "description", w, false);
      for (const Value* t : Strings(m.value, "tags", w, false)) {
        if (const uint32_t* tid = Lookup(p_->tag_index, t->AsString())) {
          site_tags_[sid].push_back(*tid);
        } else {
          Error(t->pos(),
                w + ": unknown tag " + Quote(t->AsString()) + " (declare it in \"tags\")");
        }
      }
      for (const Value* g : Strings(m.value, "gateways", w, true)) {
        if (!IsName(g->AsString())) {
          Error(g->pos(), w + ": invalid gateway name " + Quote(g->AsString()));
        } else if (!site_gateways_[sid].insert(g->AsString()).second) {
          Error(g->pos(), w + " lists gateway " + Quote(g->AsString()) + " twice");
        }
      }
    }
  }

  void Targets(const Value& v) {
    if (!NamedMap(v, "targets")) return;
    for (const Value::Member& m : v.Members()) {
      if (Lookup(p_->target_index, m.key)) continue;
      auto id = static_cast<uint32_t>(p_->targets.size());
      p_->target_index.emplace(m.key, id);
      Target& t = p_->targets.emplace_back();
      t.name = m.key;
      t.pos = m.key_pos;
      p_->target_site.push_back(0);
      p_->target_tags.emplace_back();
      std::string w = "target " + Quote(m.key);
      if (!Object(m.value, w, {"description", "site", "gateway", "address", "protocol", "tags"})) {
        continue;
      }
      String(m.value, "description", w, false);
      std::set<uint32_t> tags;
      const Value* g = String(m.value, "gateway", w, true);
      if (g) t.gateway = g->AsString();
      if (const Value* s = String(m.value, "site", w, true)) {
        t.site = s->AsString();
        if (const uint32_t* sid = Lookup(p_->site_index, t.site)) {
          p_->target_site[id] = *sid;
          tags.insert(site_tags_[*sid].begin(), site_tags_[*sid].end());
          if (g && !site_gateways_[*sid].count(t.gateway)) {
            Error(g->pos(), w + ": gateway " + Quote(t.gateway) + " is not a gateway of site " +
                                Quote(t.site));
          }
        } else {
          Error(s->pos(), w + ": unknown site " + Quote(t.site));
        }
      }
      if (const Value* a = String(m.value, "address", w, true)) {
        if (!ParseAddress(a->AsString(), t.host, t.port)) {
          Error(a->pos(), w + ": address " + Quote(a->AsString()) +
                              " is not host:port (IPv6 as [addr]:port)");
        }
      }
      if (const Value* pr = String(m.value, "protocol", w, true)) {
        t.protocol = pr->AsString();
        if (!FindProtocol(t.protocol)) {
          Error(pr->pos(),
                w + ": unknown protocol " + Quote(t.protocol) + " (known: " + ProtocolList() + ")");
        }
      }
      for (const Value* tag : Strings(m.value, "tags", w, false)) {
        if (const uint32_t* tid = Lookup(p_->tag_index, tag->AsString())) {
          tags.insert(*tid);
        } else {
          Error(tag->pos(),
                w + ": unknown tag " + Quote(tag->AsString()) + " (declare it in \"tags\")");
        }
      }
      p_->target_tags[id].assign(tags.begin(), tags.end());
      for (uint32_t tid : tags) t.tags.push_back(p_->tag_names[tid]);
      std::sort(t.tags.begin(), t.tags.end());
    }
  }

  void Windows(const Value& v) {
    if (!NamedMap(v, "windows")) return;
    for (const Value::Member& m : v.Members()) {
      if (window_index_.count(m.key)) continue;
      window_index_[m.key] = static_cast<int>(p_->windows.size());
      Window& win = p_->windows.emplace_back();
      win.name = m.key;
      win.pos = m.key_pos;
      std::string w = "window " + Quote(m.key);
      if (!Object(m.value, w, {"description", "time_zone", "spans"})) continue;
      String(m.value, "description", w, false);
      if (const Value* z = String(m.value, "time_zone", w, true)) {
        win.time_zone = z->AsString();
        try {
          // The OS tz database (/usr/share/zoneinfo); locate_zone throws for unknown names.
          win.tz = IsZoneName(win.time_zone) ? date::locate_zone(win.time_zone) : nullptr;
        } catch (const std::exception&) {
          win.tz = nullptr;
        }
        if (!win.tz) {
          Error(z->pos(), w + ": unknown time zone " + Quote(win.time_zone) +
                              " (an IANA name like \"Europe/Berlin\")");
        }
      }
      const Value* spans = m.value.Find("spans");
      if (!spans || !spans->IsArray() || spans->Items().empty()) {
        Error(spans ? spans->pos() : m.value.pos(),
              w + " needs \"spans\": [{\"days\": \"mon-fri\", \"from\": \"18:00\", \"to\": "
                  "\"06:00\"}, ...]");
        continue;
      }
      for (const Value& sp : spans->Items()) {
        std::string ws = w + " span";
        if (!Object(sp, ws, {"days", "from", "to"})) continue;
        WindowSpan span;
        bool ok = true;
        std::vector<const Value*> days = Strings(sp, "days", ws, true, true);
        if (days.empty()) ok = false;
        for (const Value* d : days) {
          std::optional<uint8_t> mask = DayMask(d->AsString());
          if (!mask) {
            Error(d->pos(), ws + ": " + Quote(d->AsString()) +
                                " is not a day (mon..sun), a range like \"mon-fri\" or \"daily\"");
            ok = false;
          } else {
            span.days |= *mask;
          }
        }
        const Value* from = String(sp, "from", ws, true);
        const Value* to = String(sp, "to", ws, true);
        std::optional<uint16_t> f, t;
        if (from && !(f = ParseClock(from->AsString(), false))) {
          Error(from->pos(), ws + ": \"from\" must be HH:MM between 00:00 and 23:59");
        }
        if (to && !(t = ParseClock(to->AsString(), true))) {
          Error(to->pos(), ws + ": \"to\" must be HH:MM between 00:00 and 24:00");
        }
        if (!f || !t || !ok) continue;
        if (*f == *t) {
          Error(sp.pos(), ws + ": \"from\" equals \"to\"; use 00:00-24:00 for whole days");
          continue;
        }
        span.from = *f;
        span.to = *t;
        win.spans.push_back(span);
      }
      for (const WindowSpan& sp : win.spans) {
        if (!win.text.empty()) win.text += ", ";
        win.text += SpanText(sp);
      }
      win.text += " " + win.time_zone;
    }
  }

  static bool IsZoneName(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    for (char c : s) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '/' || c == '_' || c == '-' || c == '+';
      if (!ok) return false;
    }
    return s.find("..") == std::string_view::npos && s[0] != '/';
  }

  static std::optional<uint8_t> DayMask(std::string_view s) {
    if (s == "daily") return 0x7F;
    if (s == "weekdays") return 0x3E;
    if (s == "weekends") return 0x41;
    size_t dash = s.find('-');
    if (dash == std::string_view::npos) {
      int d = DayIndex(s);
      if (d < 0) return std::nullopt;
      return static_cast<uint8_t>(1u << d);
    }
    int a = DayIndex(s.substr(0, dash));
    int b = DayIndex(s.substr(dash + 1));
    if (a < 0 || b < 0) return std::nullopt;
    uint8_t mask = 0;
    for (int d = a;; d = (d + 1) % 7) {
      mask |= static_cast<uint8_t>(1u << d);
      if (d == b) break;
    }
    return mask;
  }

  void Rules(const Value& v) {
    if (!v.IsArray()) {
      Error(v.pos(), "rules must be an array");
      return;
    }
    std::map<std::string, SourcePos> ids;
    for (const Value& r : v.Items()) Rule1(r, ids);
  }

  void Rule1(const Value& v, std::map<std::string, SourcePos>& ids) {
    std::string w = "rule " + std::to_string(p_->rules.size() + 1);
    if (!Object(
            v, w,
            {"id", "description", "action", "src", "dst", "ports", "scopes", "window", "approval",
             "max_duration", "reason_required", "on_site_consent", "break_glass"})) {
      return;
    }
    Rule r;
    r.pos = v.pos();
    r.index = static_cast<uint32_t>(p_->rules.size());
    if (const Value* id = String(v, "id", w, true)) {
      if (!IsName(id->AsString())) {
        Error(id->pos(), w + ": invalid id " + Quote(id->AsString()));
      } else {
        r.id = id->AsString();
        w = "rule " + Quote(r.id);
        auto [it, fresh] = ids.emplace(r.id, id->pos());
        if (!fresh) {
          Error(id->pos(), w + ": id already used by the rule at " + it->second.String());
        }
      }
    }
    String(v, "description", w, false);
    if (const Value* a = String(v, "action", w, false)) {
      if (a->AsString() == "deny") {
        r.deny = true;
      } else if (a->AsString() != "allow") {
        Error(a->pos(), w + ": action must be \"allow\" or \"deny\"");
      }
    }
    // src
    for (const Value* s : Strings(v, "src", w, true)) {
      std::string_view e = s->AsString();
      r.src_text.emplace_back(e);
      if (e == "*") {
        r.any_src = true;
      } else if (e.starts_with("user:") && IsName(e.substr(5))) {
        r.users.push_back(InternUser(e.substr(5)));
      } else if (e.starts_with("group:")) {
        if (const uint32_t* g = Lookup(p_->group_index, e.substr(6))) {
          r.groups.push_back(*g);
        } else {
          Error(s->pos(), w + ": unknown group " + Quote(e.substr(6)));
        }
      } else if (e.starts_with("role:")) {
        if (const uint32_t* g = Lookup(p_->role_index, e.substr(5))) {
          r.roles.push_back(*g);
        } else {
          Error(s->pos(),
                w + ": unknown role " + Quote(e.substr(5)) + " (declare it in \"roles\")");
        }
      } else {
        Error(s->pos(), w + ": src entry " + Quote(e) +
                            " must be \"user:NAME\", \"group:NAME\", \"role:NAME\" or \"*\"");
      }
    }
    // dst
    for (const Value* d : Strings(v, "dst", w, true)) {
      std::string_view e = d->AsString();
      r.dst_text.emplace_back(e);
      if (e == "*") {
        r.any_dst = true;
      } else if (e.starts_with("tag:")) {
        if (const uint32_t* t = Lookup(p_->tag_index, e.substr(4))) {
          r.dst_tags.push_back(*t);
        } else {
          Error(d->pos(), w + ": unknown tag " + Quote(e.substr(4)));
        }
      } else if (e.starts_with("site:")) {
        if (const uint32_t* t = Lookup(p_->site_index, e.substr(5))) {
          r.dst_sites.push_back(*t);
        } else {
          Error(d->pos(), w + ": unknown site " + Quote(e.substr(5)));
        }
      } else {
        std::string_view name = e.starts_with("target:") ? e.substr(7) : e;
        if (const uint32_t* t = Lookup(p_->target_index, name)) {
          r.dst_targets.push_back(*t);
        } else {
          Error(d->pos(), w + ": unknown target " + Quote(name) +
                              " (dst entries: target name, \"tag:T\", \"site:S\" or \"*\")");
        }
      }
    }
    for (auto* vec : {&r.users, &r.groups, &r.roles, &r.dst_targets, &r.dst_tags, &r.dst_sites}) {
      std::sort(vec->begin(), vec->end());
      vec->erase(std::unique(vec->begin(), vec->end()), vec->end());
    }
    // ports
    if (const Value* ports = v.Find("ports")) {
      if (!ports->IsArray() || ports->Items().empty()) {
        Error(ports->pos(), w + ": ports must be a non-empty array like [502, \"8000-8080\"]");
      } else {
        for (const Value& pv : ports->Items()) {
          std::optional<PortRange> pr = Port(pv);
          if (!pr) {
            Error(pv.pos(), w + ": a port is a number 1-65535 or a range string \"lo-hi\"");
          } else {
            r.ports.push_back(*pr);
          }
        }
      }
    }
    // scopes
    for (const Value* s : Strings(v, "scopes", w, v.Find("scopes") != nullptr)) {
      std::string_view e = s->AsString();
      size_t colon = e.find(':');
      const ProtocolInfo* proto =
          colon == std::string_view::npos ? nullptr : FindProtocol(e.substr(0, colon));
      std::string_view verb = colon == std::string_view::npos ? "" : e.substr(colon + 1);
      bool ok = proto && (verb == "*" || proto->HasScope(verb));
      if (!ok) {
        Error(s->pos(), w + ": unknown scope " + Quote(e) +
                            " (known: modbus:read, modbus:write, PROTOCOL:*)");
        continue;
      }
      if (r.deny) {
        Error(s->pos(), w + ": deny rules apply to whole targets; narrow the allow rule's scopes");
      }
      r.scopes.emplace_back(e);
      r.scope_protocols.emplace_back(e.substr(0, colon));
    }
    // window
    if (const Value* win = String(v, "window", w, false)) {
      auto it = window_index_.find(win->AsString());
      if (it == window_index_.end()) {
        Error(win->pos(), w + ": unknown window " + Quote(win->AsString()));
      } else {
        r.window = it->second;
      }
    }
    // requirements (allow rules only)
    auto allow_only = [&](std::string_view key) {
      const Value* x = v.Find(key);
      if (x && r.deny) {
        Error(x->pos(), w + ": a deny rule takes no " + Quote(key));
        return static_cast<const Value*>(nullptr);
      }
      return x;
    };
    r.req.max_duration = default_max_duration_;
    if (const Value* d = allow_only("max_duration")) {
      if (auto s = Duration(*d, w + ": max_duration")) r.req.max_duration = *s;
    }
    if (allow_only("reason_required")) {
      r.req.reason_required = Bool(v, "reason_required", w).value_or(false);
    }
    if (allow_only("on_site_consent")) {
      r.req.on_site_consent = Bool(v, "on_site_consent", w).value_or(false);
    }
    const Value* bg = allow_only("break_glass");
    if (bg && Object(*bg, w + ": break_glass", {"review_group"})) {
      r.break_glass = true;
      if (const Value* g = String(*bg, "review_group", w + ": break_glass", true)) {
        if (!Lookup(p_->group_index, g->AsString())) {
          Error(g->pos(), w + ": unknown review group " + Quote(g->AsString()));
        }
        r.review_group = g->AsString();
      }
      for (size_t i = 0; i < r.src_text.size(); ++i) {
        if (!r.src_text[i].starts_with("role:")) {
          Error(v.Find("src")->pos(), w + ": break-glass rules are for named roles; src entry " +
                                          Quote(r.src_text[i]) + " is not \"role:NAME\"");
        }
      }
    }
    if (const Value* a = allow_only("approval")) {
      if (r.break_glass) {
        Error(a->pos(), w + ": a break-glass rule grants access at once; it takes no approval");
      } else if (Object(*a, w + ": approval", {"count", "group"})) {
        const Value* c = a->Find("count");
        if (!c || !c->IsInteger() || c->AsInt() < 1 || c->AsInt() > kMaxApprovals) {
          Error(c ? c->pos() : a->pos(), w + ": approval needs \"count\" between 1 and 10");
        } else {
          r.req.approvals = static_cast<int>(c->AsInt());
        }
        if (const Value* g = String(*a, "group", w + ": approval", true)) {
          r.req.approver_group = g->AsString();
          const uint32_t* gid = Lookup(p_->group_index, g->AsString());
          if (!gid) {
            Error(g->pos(), w + ": unknown approver group " + Quote(g->AsString()));
          } else if (r.req.approvals > 0) {
            ApproverCheck(r, *gid, g->pos(), w);
          }
        }
      }
    }
    p_->rules.push_back(std::move(r));
  }

  // Four eyes, checked statically: the approver group must list enough members, and one more
  // when a requester of this rule could be one of them.
  void ApproverCheck(const Rule& r, uint32_t gid, SourcePos pos, const std::string& w) {
    const std::vector<std::string>& members = p_->group_members[gid];
    bool overlap = r.any_src || std::binary_search(r.groups.begin(), r.groups.end(), gid);
    for (uint32_t u : r.users) {
      for (uint32_t g : p_->user_groups[u]) overlap = overlap || g == gid;
    }
    for (uint32_t g : r.groups) {
      for (const std::string& m : p_->group_members[g]) {
        const uint32_t* uid = Lookup(p_->user_index, m);
        if (uid &&
            std::binary_search(p_->user_groups[*uid].begin(), p_->user_groups[*uid].end(), gid)) {
          overlap = true;
        }
      }
    }
    size_t need = static_cast<size_t>(r.req.approvals) + (overlap ? 1 : 0);
    if (members.size() < need) {
      Error(pos,
            w + ": approval needs " + std::to_string(r.req.approvals) + " approver(s) from " +
                Quote(p_->group_names[gid]) + ", which lists " + std::to_string(members.size()) +
                " member(s)" +
                (overlap ? " and shares members with the requesters (never the requester)" : "") +
                "; approvers must be listed in the policy");
    }
  }

  static std::optional<PortRange> Port(const Value& v) {
    if (v.IsInteger()) {
      if (v.AsInt() < 1 || v.AsInt() > 65535) return std::nullopt;
      auto p = static_cast<uint16_t>(v.AsInt());
      return PortRange{p, p};
    }
    if (!v.IsString()) return std::nullopt;
    std::string_view s = v.AsString();
    if (s == "*") return PortRange{1, 65535};
    size_t dash = s.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    auto num = [](std::string_view x) -> int {
      if (x.empty() || x.size() > 5) return -1;
      int n = 0;
      for (char c : x) {
        if (c < '0' || c > '9') return -1;
        n = n * 10 + (c - '0');
      }
      return n;
    };
    int lo = num(s.substr(0, dash)), hi = num(s.substr(dash + 1));
    if (lo < 1 || hi > 65535 || lo > hi) return std::nullopt;
    return PortRange{static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
  }

  void Tests(const Value& v) {
    if (!v.IsArray()) {
      Error(v.pos(), "tests must be an array");
      return;
    }
    for (size_t i = 0; i < v.Items().size(); ++i) {
      const Value& t = v.Items()[i];
      std::string w = "test " + std::to_string(i + 1);
      if (!Object(t, w,
                  {"description", "user", "groups", "roles", "target", "port", "scope", "at",
                   "break_glass", "duration", "reason", "expect", "rule"})) {
        continue;
      }
      PolicyTest pt;
      pt.pos = t.pos();
      String(t, "description", w, false);
      if (const Value* u = String(t, "user", w, true)) pt.query.user = u->AsString();
      for (const Value* g : Strings(t, "groups", w, false)) {
        if (!Lookup(p_->group_index, g->AsString())) {
          Error(g->pos(), w + ": unknown group " + Quote(g->AsString()));
        }
        pt.query.user_groups.push_back(g->AsString());
      }
      for (const Value* g : Strings(t, "roles", w, false)) {
        if (!Lookup(p_->role_index, g->AsString())) {
          Error(g->pos(), w + ": unknown role " + Quote(g->AsString()));
        }
        pt.query.user_roles.push_back(g->AsString());
      }
      if (const Value* x = String(t, "target", w, true)) {
        pt.query.target = x->AsString();
        if (!Lookup(p_->target_index, pt.query.target)) {
          Error(x->pos(), w + ": unknown target " + Quote(pt.query.target));
        }
      }
      if (const Value* x = t.Find("port")) {
        if (!x->IsInteger() || x->AsInt() < 1 || x->AsInt() > 65535) {
          Error(x->pos(), w + ": port must be a number 1-65535");
        } else {
          pt.query.port = static_cast<uint16_t>(x->AsInt());
        }
      }
      if (const Value* x = String(t, "scope", w, false)) pt.query.scope = x->AsString();
      if (const Value* x = String(t, "at", w, false)) {
        if (!ParseRfc3339(x->AsString(), pt.query.at)) {
          Error(x->pos(), w + ": \"at\" must be RFC 3339, e.g. \"2026-03-30T05:30:00+02:00\"");
        }
      } else {
        pt.query.any_time = true;
      }
      pt.query.break_glass = Bool(t, "break_glass", w).value_or(false);
      if (const Value* x = t.Find("duration")) {
        if (auto d = Duration(*x, w + ": duration")) pt.query.duration = *d;
      }
      if (const Value* x = String(t, "reason", w, false)) pt.query.reason = x->AsString();
      if (const Value* x = String(t, "expect", w, true)) {
        if (x->AsString() == "allow") {
          pt.expect_allow = true;
        } else if (x->AsString() != "deny") {
          Error(x->pos(), w + ": expect must be \"allow\" or \"deny\"");
        }
      }
      if (const Value* x = String(t, "rule", w, false)) pt.expect_rule = x->AsString();
      p_->tests.push_back(std::move(pt));
    }
  }

  void BuildIndexes() {
    Policy::Impl& p = *p_;
    p.rules_by_target.assign(p.targets.size(), {});
    p.rules_by_tag.assign(p.tag_names.size(), {});
    p.rules_by_site.assign(p.site_names.size(), {});
    for (const Rule& r : p.rules) {
      if (r.any_dst) {
        p.rules_any_dst.push_back(r.index);
        continue;
      }
      for (uint32_t t : r.dst_targets) p.rules_by_target[t].push_back(r.index);
      for (uint32_t t : r.dst_tags) p.rules_by_tag[t].push_back(r.index);
      for (uint32_t s : r.dst_sites) p.rules_by_site[s].push_back(r.index);
    }
    for (auto& g : p.user_groups) {
      std::sort(g.begin(), g.end());
      g.erase(std::unique(g.begin(), g.end()), g.end());
    }
  }

  static bool SrcCovers(const Rule& d, const Rule& a) {
    if (d.any_src) return true;
    if (a.any_src) return false;
    return std::includes(d.users.begin(), d.users.end(), a.users.begin(), a.users.end()) &&
           std::includes(d.groups.begin(), d.groups.end(), a.groups.begin(), a.groups.end()) &&
           std::includes(d.roles.begin(), d.roles.end(), a.roles.begin(), a.roles.end());
  }

  static std::string Signature(const Rule& r) {
    std::vector<std::string> src = r.src_text, dst = r.dst_text, scopes = r.scopes;
    std::sort(src.begin(), src.end());
    std::sort(dst.begin(), dst.end());
    std::sort(scopes.begin(), scopes.end());
    std::string sig = std::string(r.deny ? "deny" : "allow") + (r.break_glass ? "/bg" : "") + "|" +
                      Join(src, ",") + "|" + Join(dst, ",") + "|" + Join(scopes, ",") + "|" +
                      std::to_string(r.window) + "|";
    for (const PortRange& pr : r.ports) {
      sig += std::to_string(pr.lo) + "-" + std::to_string(pr.hi) + ",";
    }
    return sig;
  }

  static bool SameRequirements(const Rule& a, const Rule& b) {
    return a.req.approvals == b.req.approvals && a.req.approver_group == b.req.approver_group &&
           a.req.max_duration == b.req.max_duration &&
           a.req.reason_required == b.req.reason_required &&
           a.req.on_site_consent == b.req.on_site_consent && a.review_group == b.review_group;
  }

  // Conflicts between rules: same selector twice, allow rules that a deny rule always overrides,
  // and ports or scopes that no target in the rule's dst can ever match.
  void Analyze() {
    const Policy::Impl& p = *p_;
    std::map<std::string, const Rule*> sigs;
    for (const Rule& r : p.rules) {
      auto [it, fresh] = sigs.emplace(Signature(r), &r);
      if (fresh) continue;
      const Rule& o = *it->second;
      if (SameRequirements(r, o)) {
        Error(r.pos,
              "rule " + Quote(r.id) + " duplicates rule " + Quote(o.id) + " at " + o.pos.String());
      } else {
        Error(r.pos, "rule " + Quote(r.id) + " conflicts with rule " + Quote(o.id) + " at " +
                         o.pos.String() +
                         ": same src, dst, ports, scopes and window but different requirements");
      }
    }
    std::vector<uint8_t> covers_any(p.rules.size(), 0), port_ok(p.rules.size(), 0),
        scope_ok(p.rules.size(), 0), live(p.rules.size(), 0);
    std::vector<uint32_t> cands;
    uint64_t work = 0;
    for (uint32_t t = 0; t < p.targets.size(); ++t) {
      CandidateRules(p, t, cands);
      work += cands.size();
      const Target& tg = p.targets[t];
      for (uint32_t ai : cands) {
        const Rule& a = p.rules[ai];
        covers_any[ai] = 1;
        bool pok = PortAllowed(a, tg.port);
        bool sok = RuleCoversProtocol(a, tg.protocol);
        port_ok[ai] |= pok;
        scope_ok[ai] |= sok;
        if (a.deny || !pok || !sok || live[ai]) continue;
        bool shadowed = false;
        for (uint32_t di : cands) {
          const Rule& d = p.rules[di];
          ++work;
          if (d.deny && SrcCovers(d, a) && PortAllowed(d, tg.port) &&
              (d.window < 0 || d.window == a.window)) {
            shadowed = true;
            break;
          }
        }
        if (!shadowed) live[ai] = 1;
      }
      if (work > kAnalysisBudget) return;
    }
    for (const Rule& r : p.rules) {
      if (!covers_any[r.index]) continue;
      if (!port_ok[r.index]) {
        Error(r.pos, "rule " + Quote(r.id) + ": its ports match no target in its dst");
      } else if (!scope_ok[r.index]) {
        Error(r.pos, "rule " + Quote(r.id) + ": its scopes (" + Join(r.scopes) +
                         ") fit no target's protocol in its dst");
      } else if (!r.deny && !live[r.index]) {
        Error(r.pos, "rule " + Quote(r.id) +
                         " can never allow anything: deny rules cover all its sources and targets");
      }
    }
  }

  CompileOptions options_;
  Policy::Impl* p_ = nullptr;
  std::vector<Diagnostic> errors_;
  Errc parse_code_ = Errc::kInvalidArgument;
  std::chrono::seconds default_max_duration_ = kDefaultMaxDuration;
  std::vector<std::vector<uint32_t>> site_tags_;
  std::vector<std::set<std::string>> site_gateways_;
  std::map<std::string, int, std::less<>> window_index_;
};

}  // namespace

std::string Diagnostic::String() const { return pos.String() + ": " + message; }

Policy::Policy(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;
Policy::~Policy() = default;

size_t Policy::rule_count() const { return impl_->rules.size(); }
size_t Policy::target_count() const { return impl_->targets.size(); }

const Target* Policy::FindTarget(std::string_view name) const {
  const uint32_t* id = Lookup(impl_->target_index, name);
  return id ? &impl_->targets[*id] : nullptr;
}

const std::vector<std::string>* Policy::GroupMembers(std::string_view group) const {
  const uint32_t* id = Lookup(impl_->group_index, group);
  return id ? &impl_->group_members[*id] : nullptr;
}

CompileResult CompileDetailed(std::string_view text, const CompileOptions& options) {
  Compiler c(options);
  return c.Run(text);
}

Expected<Policy> Compile(std::string_view text, const CompileOptions& options) {
  Compiler c(options);
  CompileResult r = c.Run(text);
  if (r.policy) return std::move(*r.policy);
  std::string msg;
  for (const Diagnostic& d : r.errors) {
    if (!msg.empty()) msg += "\n";
    msg += d.String();
  }
  return MakeError(c.parse_code(), msg);
}

}  // namespace torwart::policy
