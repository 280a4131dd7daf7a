// P1: one policy decision at 1k rules x 10k targets; goal p99 <= 10 us.
// Builds the policy as a JSONC document (so Compile and its indexes are what production uses),
// times 200k single decisions (half random user/target pairs, half pairs some rule covers) and
// the same on an empty policy, and prints one JSON line per figure.
// Usage: bench_p1_policy [decisions] [rules] [targets]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "torwart/policy/decision.hpp"
#include "torwart/policy/policy.hpp"

namespace {

using torwart::policy::AccessQuery;
using torwart::policy::Compile;
using torwart::policy::Decide;
using torwart::policy::Policy;

constexpr int kSites = 100;
constexpr int kGroups = 200;
constexpr int kUsers = 2000;
constexpr int kKinds = 20;
constexpr int kPools = 170;

struct Generated {
  std::string text;
  // For each rule: a user in its src and a target in its dst, to build matching queries.
  std::vector<std::pair<std::string, std::string>> hits;
};

std::string N(const char* prefix, int i) { return std::string(prefix) + std::to_string(i); }

Generated Generate(int rules, int targets) {
  Generated g;
  std::string& s = g.text;
  s.reserve(static_cast<size_t>(targets) * 160 + static_cast<size_t>(rules) * 200);
  s += "{\"version\": 1, \"groups\": {";
  for (int k = 0; k < kGroups; ++k) {
    s += "\"g" + std::to_string(k) + "\": [";
    for (int u = k; u < kUsers; u += kGroups) s += "\"u" + std::to_string(u) + "@x\",";
    for (int u = (k * 7) % kGroups; u < kUsers; u += kGroups * 3) {
      if (u % kGroups != k) s += "\"u" + std::to_string(u) + "@x\",";
    }
    s += "],";
  }
  for (int k = 0; k < 10; ++k) {
    s += "\"leads" + std::to_string(k) + "\": [\"lead" + std::to_string(k) + "a@x\", \"lead" +
         std::to_string(k) + "b@x\", \"lead" + std::to_string(k) + "c@x\"],";
  }
  s += "}, \"roles\": {\"oncall\": {}}, \"tags\": {";
  for (int k = 0; k < 10; ++k) s += "\"region" + std::to_string(k) + "\": {},";
  for (int k = 0; k < kKinds; ++k) s += "\"kind" + std::to_string(k) + "\": {},";
  for (int k = 0; k < kPools; ++k) s += "\"pool" + std::to_string(k) + "\": {},";
  s += "}, \"sites\": {";
  for (int k = 0; k < kSites; ++k) {
    s += "\"s" + std::to_string(k) + "\": {\"tags\": [\"region" + std::to_string(k % 10) +
         "\"], \"gateways\": [\"gw" + std::to_string(k) + "\"]},";
  }
  s += "}, \"targets\": {";
  const char* protocols[] = {"ssh", "modbus", "rdp", "https"};
  const int ports[] = {22, 502, 3389, 443};
  for (int t = 0; t < targets; ++t) {
    int site = t % kSites;
    int kind = t % kKinds;
    s += "\"t" + std::to_string(t) + "\": {\"site\": \"s" + std::to_string(site) +
         "\", \"gateway\": \"gw" + std::to_string(site) + "\", \"address\": \"10." +
         std::to_string(t / 65536) + "." + std::to_string((t / 256) % 256) + "." +
         std::to_string(t % 256) + ":" + std::to_string(ports[kind % 4]) + "\", \"protocol\": \"" +
         protocols[kind % 4] + "\", \"tags\": [\"kind" + std::to_string(kind) + "\", \"pool" +
         std::to_string(t % kPools) + "\"]},";
  }
  s += "}, \"windows\": {"
       "\"w0\": {\"time_zone\": \"Europe/Berlin\", \"spans\": [{\"days\": \"mon-fri\", "
       "\"from\": \"18:00\", \"to\": \"06:00\"}, {\"days\": \"weekends\", \"from\": \"00:00\", "
       "\"to\": \"24:00\"}]},"
       "\"w1\": {\"time_zone\": \"America/New_York\", \"spans\": [{\"days\": \"daily\", "
       "\"from\": \"20:00\", \"to\": \"07:00\"}]},"
       "\"w2\": {\"time_zone\": \"Asia/Tokyo\", \"spans\": [{\"days\": \"sat-sun\", "
       "\"from\": \"08:00\", \"to\": \"20:00\"}]}},";
  s += "\"rules\": [";
  for (int k = 0; k < rules; ++k) {
    int group = k % kGroups;
    std::string user = N("u", (group + kGroups * (k / kGroups)) % kUsers) + "@x";
    std::string dst;
    int target_hit = 0;
    switch (k % 4) {
      case 0: {
        int kind = (k / 4) % kKinds;
        dst = "tag:kind" + std::to_string(kind);
        target_hit = kind;
        break;
      }
      case 1: {
        int pool = (k / 4) % kPools;
        dst = "tag:pool" + std::to_string(pool);
        target_hit = pool;
        break;
      }
      case 2: {
        int site = (k / 4) % kSites;
        dst = "site:s" + std::to_string(site);
        target_hit = site;
        break;
      }
      default: {
        target_hit = (k * 37) % targets;
        dst = "t" + std::to_string(target_hit);
        break;
      }
    }
    s += "{\"id\": \"r" + std::to_string(k) + "\", \"src\": [\"group:g" + std::to_string(group) +
         "\", \"user:x" + std::to_string(k) + "@x\"], \"dst\": [\"" + dst + "\"]";
    if (k % 3 == 0) s += ", \"window\": \"w" + std::to_string(k % 9 / 3) + "\"";
    if (k % 5 == 0) {
      s += ", \"approval\": {\"count\": 2, \"group\": \"leads" + std::to_string(k % 10) + "\"}";
    }
    if (k % 7 == 0) s += ", \"reason_required\": true, \"max_duration\": \"2h\"";
    s += "},";
    g.hits.emplace_back(user, "t" + std::to_string(target_hit));
  }
  // A few deny rules for single users, as real policies have.
  for (int k = 0; k < rules / 100; ++k) {
    s += "{\"id\": \"deny" + std::to_string(k) + "\", \"action\": \"deny\", \"src\": [\"user:u" +
         std::to_string(k * 13 % kUsers) + "@x\"], \"dst\": [\"tag:kind" +
         std::to_string(k % kKinds) + "\"]},";
  }
  s += "]}";
  return g;
}

struct Stats {
  double p50 = 0, p99 = 0, p999 = 0, mean = 0;
  double allow_fraction = 0;
  double allow_even = 0, allow_odd = 0;  // random pairs, covered pairs
};

Stats Measure(const Policy& policy, const std::vector<AccessQuery>& queries) {
  std::vector<int64_t> ns;
  ns.reserve(queries.size());
  size_t allowed = 0;
  // Warm up caches and the tz database.
  for (size_t i = 0; i < std::min<size_t>(queries.size(), 2000); ++i) {
    allowed += Decide(policy, queries[i]).allow;
  }
  allowed = 0;
  size_t allowed_by_half[2] = {0, 0};
  for (size_t i = 0; i < queries.size(); ++i) {
    const AccessQuery& q = queries[i];
    auto t0 = std::chrono::steady_clock::now();
    torwart::policy::Decision d = Decide(policy, q);
    auto t1 = std::chrono::steady_clock::now();
    allowed += d.allow;
    allowed_by_half[i % 2] += d.allow;
    ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  Stats s;
  auto at = [&](double q) {
    return static_cast<double>(ns[static_cast<size_t>(q * (ns.size() - 1))]);
  };
  s.p50 = at(0.5);
  s.p99 = at(0.99);
  s.p999 = at(0.999);
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  s.mean = sum / static_cast<double>(ns.size());
  s.allow_fraction = static_cast<double>(allowed) / static_cast<double>(queries.size());
  double half = static_cast<double>(queries.size()) / 2;
  s.allow_even = static_cast<double>(allowed_by_half[0]) / half;
  s.allow_odd = static_cast<double>(allowed_by_half[1]) / half;
  return s;
}

void Print(const char* metric, double value, const char* extra) {
  std::printf("{\"id\":\"P1\",\"metric\":\"%s\",\"value\":%.6g%s}\n", metric, value, extra);
}

}  // namespace

int main(int argc, char** argv) {
  int decisions = argc > 1 ? std::atoi(argv[1]) : 200000;
  int rules = argc > 2 ? std::atoi(argv[2]) : 1000;
  int targets = argc > 3 ? std::atoi(argv[3]) : 10000;
  if (decisions <= 0 || rules <= 0 || targets <= 0) {
    std::fprintf(stderr, "usage: bench_p1_policy [decisions] [rules] [targets]\n");
    return 2;
  }

  Generated gen = Generate(rules, targets);
  auto c0 = std::chrono::steady_clock::now();
  auto policy = Compile(gen.text);
  auto c1 = std::chrono::steady_clock::now();
  if (!policy) {
    std::fprintf(stderr, "compile failed:\n%s\n", policy.error().message().substr(0, 4000).c_str());
    return 1;
  }
  auto empty = Compile(R"({"version": 1, "sites": {"s": {"gateways": ["g"]}}, "targets": {"t0":
      {"site": "s", "gateway": "g", "address": "10.0.0.1:22", "protocol": "ssh"}}, "rules": []})");
  if (!empty) {
    std::fprintf(stderr, "empty policy: %s\n", empty.error().message().c_str());
    return 1;
  }

  std::mt19937_64 rng(42);
  // Times spread over a year so windows are sometimes open and sometimes closed.
  const int64_t base = 1767225600;  // 2026-01-01T00:00:00Z
  std::vector<AccessQuery> queries(static_cast<size_t>(decisions));
  std::vector<AccessQuery> empty_queries(static_cast<size_t>(decisions));
  for (int i = 0; i < decisions; ++i) {
    AccessQuery& q = queries[static_cast<size_t>(i)];
    if (i % 2 == 0) {
      q.user = "u" + std::to_string(rng() % kUsers) + "@x";
      q.target = "t" + std::to_string(rng() % static_cast<uint64_t>(targets));
    } else {
      const auto& h = gen.hits[rng() % gen.hits.size()];
      q.user = h.first;
      q.target = h.second;
    }
    q.at = torwart::FromUnix(base + static_cast<int64_t>(rng() % (365 * 86400)));
    AccessQuery& e = empty_queries[static_cast<size_t>(i)];
    e.user = q.user;
    e.target = "t0";
    e.at = q.at;
  }

  Stats s = Measure(*policy, queries);
  Stats e = Measure(*empty, empty_queries);
  char extra[256];
  std::snprintf(extra, sizeof extra, ",\"rules\":%zu,\"targets\":%zu,\"decisions\":%d",
                policy->rule_count(), policy->target_count(), decisions);
  Print("compile_ms", std::chrono::duration<double, std::milli>(c1 - c0).count(), extra);
  Print("p50_ns", s.p50, extra);
  std::string goal = std::string(extra) + ",\"goal_ns\":10000";
  Print("p99_ns", s.p99, goal.c_str());
  Print("p999_ns", s.p999, extra);
  Print("mean_ns", s.mean, extra);
  Print("allow_fraction", s.allow_fraction, extra);
  Print("allow_fraction_random_pairs", s.allow_even, extra);
  Print("allow_fraction_covered_pairs", s.allow_odd, extra);
  Print("empty_p50_ns", e.p50, ",\"rules\":0,\"targets\":1");
  Print("empty_p99_ns", e.p99, ",\"rules\":0,\"targets\":1");
  return 0;
}
