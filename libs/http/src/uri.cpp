#include "uri.hpp"

namespace torwart::http::internal {
namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<std::string> PercentDecode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = HexValue(in[i + 1]);
      int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      char decoded = static_cast<char>(hi * 16 + lo);
      if (decoded == '\0') return std::nullopt;
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<SplitTarget> SplitOriginForm(std::string_view target) {
  if (target.empty() || target.front() != '/') return std::nullopt;
  SplitTarget out;
  std::string_view path = target;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    out.raw_query = target.substr(q + 1);
  }
  if (auto f = out.raw_query.find('#'); f != std::string_view::npos) {
    out.raw_query = out.raw_query.substr(0, f);
  }
  // Decode each segment on its own so an encoded '/' stays inside its segment.
  size_t pos = 1;
  while (true) {
    size_t slash = path.find('/', pos);
    std::string_view raw =
        path.substr(pos, slash == std::string_view::npos ? path.npos : slash - pos);
    auto seg = PercentDecode(raw, false);
    if (!seg) return std::nullopt;
    out.path += '/';
    out.path += *seg;
    out.segments.push_back(std::move(*seg));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  // "/" is the root with no segments, not one empty segment.
  if (out.segments.size() == 1 && out.segments[0].empty()) out.segments.clear();
  return out;
}

std::optional<std::map<std::string, std::string>> ParseQuery(std::string_view raw_query) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= raw_query.size()) {
    size_t amp = raw_query.find('&', pos);
    std::string_view pair =
        raw_query.substr(pos, amp == std::string_view::npos ? raw_query.npos : amp - pos);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      auto key = PercentDecode(pair.substr(0, eq), true);
      auto value = PercentDecode(
          eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
      if (!key || !value) return std::nullopt;
      out.emplace(std::move(*key), std::move(*value));
    }
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return out;
}

}  // namespace torwart::http::internal
