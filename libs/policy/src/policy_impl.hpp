// Internal: the compiled policy model and its indexes. Immutable after Compile.
#pragma once

#include <date/tz.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "torwart/policy/decision.hpp"
#include "torwart/policy/policy.hpp"

namespace torwart::policy {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using NameIndex = std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>;

inline const uint32_t* Lookup(const NameIndex& index, std::string_view name) {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &it->second;
}

struct WindowSpan {
  uint8_t days = 0;   // bit i: weekday i, 0 = Sunday (the day the span starts on)
  uint16_t from = 0;  // minutes after local midnight
  uint16_t to = 0;    // exclusive; to <= from means the span ends the next day
};

struct Window {
  std::string name;
  SourcePos pos;
  std::string time_zone;
  const date::time_zone* tz = nullptr;
  std::vector<WindowSpan> spans;
  std::string text;  // e.g. "mon-fri 18:00-06:00 Europe/Berlin"

  bool IsOpen(TimePoint t) const;
  // "Tue 10:15" in the window's zone, for explanations.
  std::string LocalTime(TimePoint t) const;
};

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 0;
};

struct Rule {
  std::string id;
  SourcePos pos;
  uint32_t index = 0;
  bool deny = false;

  bool any_src = false;
  std::vector<uint32_t> users, groups, roles;  // sorted ids
  std::vector<std::string> src_text;
  bool any_dst = false;
  std::vector<uint32_t> dst_targets, dst_tags, dst_sites;
  std::vector<std::string> dst_text;

  std::vector<PortRange> ports;              // empty: every port
  std::vector<std::string> scopes;           // empty: the whole protocol
  std::vector<std::string> scope_protocols;  // the protocol part of each scope
  int window = -1;

  Requirements req;
  bool break_glass = false;
  std::string review_group;
};

struct PolicyTest {
  SourcePos pos;
  AccessQuery query;
  bool expect_allow = false;
  std::string expect_rule;  // empty: any
};

struct Policy::Impl {
  std::vector<Target> targets;
  std::vector<uint32_t> target_site;
  std::vector<std::vector<uint32_t>> target_tags;  // effective tag ids, sorted
  NameIndex target_index;

  std::vector<std::string> site_names;
  NameIndex site_index;
  std::vector<std::string> tag_names;
  NameIndex tag_index;
  std::vector<std::string> role_names;
  NameIndex role_index;
  std::vector<std::string> group_names;
  NameIndex group_index;
  std::vector<std::vector<std::string>> group_members;
  NameIndex user_index;                            // every user named in groups or rules
  std::vector<std::vector<uint32_t>> user_groups;  // by user id, sorted group ids

  std::vector<Window> windows;
  std::vector<Rule> rules;
  std::vector<std::vector<uint32_t>> rules_by_target, rules_by_tag, rules_by_site;
  std::vector<uint32_t> rules_any_dst;

  std::vector<PolicyTest> tests;
};

// Rule indexes whose dst covers target `t`, sorted, unique.
void CandidateRules(const Policy::Impl& p, uint32_t t, std::vector<uint32_t>& out);
// Does the rule's scope list apply to targets speaking `protocol`?
bool RuleCoversProtocol(const Rule& r, std::string_view protocol);
bool PortAllowed(const Rule& r, uint16_t port);

}  // namespace torwart::policy
