#include "torwart/core/clock.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <ctime>
#include <string_view>

namespace torwart {

SystemClock& SystemClock::Instance() {
  static SystemClock clock;
  return clock;
}

int64_t ToUnix(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

TimePoint FromUnix(int64_t seconds) {
  // system_clock counts nanoseconds in 64 bits (years 1677-2262): clamp instead of overflowing,
  // e.g. for certificates valid until 99991231235959Z (RFC 5280's "no expiry").
  constexpr int64_t kLimit = std::numeric_limits<Duration::rep>::max() / 1000000000 - 1;
  seconds = std::clamp<int64_t>(seconds, -kLimit, kLimit);
  return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::seconds(seconds)));
}

std::string FormatRfc3339(TimePoint t) {
  std::time_t tt = static_cast<std::time_t>(ToUnix(t));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool ParseRfc3339(std::string_view s, TimePoint& out) {
  int y, mo, d, h, mi, sec;
  if (s.size() < 20) return false;
  std::string str(s);
  int consumed = 0;
  if (std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
                  &consumed) != 6 ||
      consumed != 19)
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
  size_t i = 19;
  if (i < str.size() && str[i] == '.') {
    ++i;
    while (i < str.size() && str[i] >= '0' && str[i] <= '9') ++i;
  }
  int offset = 0;
  if (i < str.size() && (str[i] == 'Z' || str[i] == 'z')) {
    ++i;
  } else if (i + 6 == str.size() && (str[i] == '+' || str[i] == '-') && str[i + 3] == ':') {
    int oh = (str[i + 1] - '0') * 10 + (str[i + 2] - '0');
    int om = (str[i + 4] - '0') * 10 + (str[i + 5] - '0');
    if (oh > 23 || om > 59) return false;
    offset = (oh * 60 + om) * 60 * (str[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return false;
  }
  if (i != str.size()) return false;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  std::time_t tt = timegm(&tm);
  out = FromUnix(static_cast<int64_t>(tt) - offset);
  return true;
}

}  // namespace torwart
