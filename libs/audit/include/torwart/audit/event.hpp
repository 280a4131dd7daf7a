// The audit record and the Sink every component writes security-relevant events to.
// Logging is not auditing: events go through Sink, never parsed from logs.
// Sink implementations must be thread-safe; Append returns only when the event is durable.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

namespace torwart::audit {

// 1: the plain table. 2: hash-chained records (schema, hash) with signed checkpoints.
inline constexpr int kSchemaVersion = 2;

enum class ActorType { kUser, kDevice, kSystem, kAnonymous };
enum class Result { kSuccess, kFailure, kDenied };

std::string_view ToString(ActorType t);
std::string_view ToString(Result r);
// Inverse of ToString, for stores reading records back; nullopt for unknown text.
std::optional<ActorType> ActorTypeFromString(std::string_view s);
std::optional<Result> ResultFromString(std::string_view s);

struct Event {
  int64_t seq = 0;          // assigned by the store on append (1, 2, ...)
  TimePoint time;           // UTC; set by the caller (Clock), store keeps it
  ActorType actor_type = ActorType::kSystem;
  std::string actor;        // user name, device UUID, "torwartd", or "" for anonymous
  std::string organisation; // actor's organisation if known
  std::string source;       // peer address "ip:port" or "local"
  std::string category;     // auth, user, device, pki, policy, access, session, audit, config
  std::string type;         // dotted verb, e.g. "pki.cmp.ir", "auth.login", "device.revoke"
  std::string target;       // what was acted on (device name/UUID, user, serial, ...)
  Result result = Result::kSuccess;
  std::string reason;       // why (user-supplied reason, or error text for failures)
  std::string details;      // JSON object text with event-specific fields ("{}" if none)
  int schema = kSchemaVersion;  // version of this record's canonical encoding
  std::string hash;             // chain hash (hex), assigned by the store on append
};

// JSON object text of an event (stable field names: seq, time, actor_type, actor, ...).
// `time` is RFC 3339 UTC; `details` is embedded as an object when it is a JSON object, else as
// a string ("" or absent details become {}).
std::string ToJson(const Event& e);

// Every set filter must match; empty strings match anything. Results are ordered by seq.
struct Query {
  std::optional<TimePoint> since, until;  // since <= time < until
  std::string actor, target;              // exact match
  std::string type_prefix;                // type starts with this ("pki." or "pki.cmp.ir")
  std::string category;                   // exact match
  int64_t after_seq = 0;                  // seq > after_seq, for paging
  int limit = 1000;                       // at most this many; must be > 0
};

class Sink {
 public:
  virtual ~Sink() = default;
  // Durable when it returns success. A failure means the event is NOT recorded: callers of
  // security-relevant actions must fail closed.
  virtual Expected<void> Append(Event e) = 0;
};

class Reader {
 public:
  virtual ~Reader() = default;
  virtual Expected<std::vector<Event>> Find(const Query& q) = 0;
};

// Collects events in memory; for unit tests of code that audits.
class MemorySink final : public Sink, public Reader {
 public:
  Expected<void> Append(Event e) override;
  Expected<std::vector<Event>> Find(const Query& q) override;
  std::vector<Event> events() const;

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

}  // namespace torwart::audit
