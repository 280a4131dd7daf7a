// Request-target parsing for the server and the router: percent-decoding of the path (per
// segment) and of query parameters. Internal to libs/http. Stateless, thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace torwart::http::internal {

// Decodes %XX escapes (and '+' as space when `plus_is_space`). Fails on a malformed escape or
// an encoded NUL byte.
std::optional<std::string> PercentDecode(std::string_view in, bool plus_is_space);

// Splits an origin-form target "/a/b%20c?x=1" into decoded path segments {"a", "b c"} and the
// raw query "x=1". Fails unless the target starts with '/' or a segment does not decode.
struct SplitTarget {
  std::vector<std::string> segments;
  std::string path;  // decoded, "/" + segments joined with "/"
  std::string_view raw_query;
};
std::optional<SplitTarget> SplitOriginForm(std::string_view target);

// "a=1&b=x%20y&c" -> {a:1, b:"x y", c:""}; the first occurrence of a key wins.
std::optional<std::map<std::string, std::string>> ParseQuery(std::string_view raw_query);

}  // namespace torwart::http::internal
