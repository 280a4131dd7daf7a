// Time source. Production code takes a Clock& so tests can use FakeClock.
// SystemClock is thread-safe; FakeClock is safe for concurrent reads and Advance().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace torwart {

using TimePoint = std::chrono::system_clock::time_point;
using Duration = std::chrono::system_clock::duration;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
  static SystemClock& Instance();
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint{}) : now_(start.time_since_epoch().count()) {}
  TimePoint Now() const override { return TimePoint(Duration(now_.load())); }
  void Set(TimePoint t) { now_ = t.time_since_epoch().count(); }
  void Advance(Duration d) { now_ += d.count(); }

 private:
  std::atomic<Duration::rep> now_;
};

// Seconds since the Unix epoch.
int64_t ToUnix(TimePoint t);
TimePoint FromUnix(int64_t seconds);
// RFC 3339 UTC with seconds, e.g. 2026-11-22T14:06:52Z.
std::string FormatRfc3339(TimePoint t);
// Accepts RFC 3339 with Z or +hh:mm offset, optional fractional seconds.
bool ParseRfc3339(std::string_view s, TimePoint& out);

}  // namespace torwart
